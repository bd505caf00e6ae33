import EventInterface
import Metrics
import Prometheus
import Synchronization

/// `GET /metrics`: the counters the core keeps, plus gauges read at each scrape. Remembers the
/// `evi_virtual_member_up` series it reported, so that those of removed subscriptions are dropped
/// instead of growing forever.
package final class MetricsPage: Sendable {
    package let hub: EventHub
    package let registry: PrometheusCollectorRegistry
    private let reported = Mutex<Set<[String]>>([])
    /// `evi_state_store_up`, with a shared state store.
    package let stateStoreUp = Mutex<(@Sendable () -> Bool)?>(nil)

    package init(hub: EventHub, registry: PrometheusCollectorRegistry) {
        self.hub = hub
        self.registry = registry
    }

    package func render() -> [UInt8] {
        let snapshot = hub.statistics.snapshot()
        Gauge(label: "evi_queue_depth").record(snapshot.transports.values.reduce(0) { $0 + $1.queued })
        if let up = stateStoreUp.withLock({ $0 }) { Gauge(label: "evi_state_store_up").record(up() ? 1 : 0) }
        var current = Set<[String]>()
        for event in hub.events {
            let subscribers = (try? hub.subscribers(of: event.name)) ?? []
            Gauge(label: "evi_subscriptions", dimensions: [("event", event.name)]).record(subscribers.count)
            for subscriber in subscribers {
                for member in subscriber.members ?? [] {
                    current.insert([event.name, subscriber.socket, member.socket])
                    Self.memberGauge([event.name, subscriber.socket, member.socket]).record(member.state == .up ? 1 : 0)
                }
            }
        }
        let stale = reported.withLock { reported in
            defer { reported = current }
            return reported.subtracting(current)
        }
        for labels in stale { Self.memberGauge(labels).destroy() }
        var bytes = registry.emitToBuffer()
        if current.isEmpty && !String(decoding: bytes, as: UTF8.self).contains("evi_virtual_member_up") {
            bytes += Array("# TYPE evi_virtual_member_up gauge\n".utf8)
        }
        return bytes
    }

    private static func memberGauge(_ labels: [String]) -> Metrics.Gauge {
        Gauge(
            label: "evi_virtual_member_up",
            dimensions: [("event", labels[0]), ("socket", labels[1]), ("member", labels[2])])
    }
}
