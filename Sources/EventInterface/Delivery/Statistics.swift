import Metrics
import Synchronization

/// Counters of one transport, shared by all its subscribers: atomics that the library API reads
/// (so delivery tasks never contend on a lock to count), mirrored to swift-metrics under the
/// names of Docs/configuration.md for whichever metrics backend the program bootstraps.
public final class TransportCounters: Sendable {
    public let delivered = Atomic<Int>(0)
    public let failed = Atomic<Int>(0)
    /// Events refused because the subscriber's queue was full.
    public let dropped = Atomic<Int>(0)
    /// Events waiting in this transport's queues right now.
    public let queued = Atomic<Int>(0)
    /// Events still queued when a shutdown's grace ran out, never delivered.
    public let abandoned = Atomic<Int>(0)

    private let deliveredMetric: Counter
    private let failedMetric: Counter
    private let droppedMetric: Counter
    private let abandonedMetric: Counter
    private let deliveryTimer: Metrics.Timer

    init(scheme: String) {
        deliveredMetric = Counter(
            label: "evi_deliveries_total", dimensions: [("transport", scheme), ("result", "success")])
        failedMetric = Counter(
            label: "evi_deliveries_total", dimensions: [("transport", scheme), ("result", "failure")])
        droppedMetric = Counter(label: "evi_dropped_total", dimensions: [("transport", scheme)])
        abandonedMetric = Counter(label: "evi_abandoned_total", dimensions: [("transport", scheme)])
        deliveryTimer = Metrics.Timer(label: "evi_delivery_seconds", dimensions: [("transport", scheme)])
    }

    /// For subscribers that deliver without a ``DeliveryQueue`` (browser streams write on their
    /// connection's event loop): the same counts and metrics.
    public func recordDelivered(count: Int) {
        delivered.add(count, ordering: .relaxed)
        deliveredMetric.increment(by: count)
    }

    public func recordFailed(count: Int) {
        failed.add(count, ordering: .relaxed)
        failedMetric.increment(by: count)
    }

    public func recordDropped() {
        dropped.add(1, ordering: .relaxed)
        droppedMetric.increment()
    }

    func recordAbandoned(count: Int) {
        guard count > 0 else { return }
        abandoned.add(count, ordering: .relaxed)
        abandonedMetric.increment(by: count)
    }

    /// One observation per delivery of a chunk that took `nanoseconds` in all.
    func recordDeliveryTime(nanoseconds: UInt64, count: Int) {
        guard count > 0 else { return }
        let each = Int64(nanoseconds / UInt64(count))
        for _ in 0..<count { deliveryTimer.recordNanoseconds(each) }
    }
}

/// Counts of one subscriber (or one virtual member): what the status page shows per line. The
/// transport's counters are the sums the metrics export; these are the same outcomes, kept by
/// the subscriber's own queue.
public final class SubscriberTally: Sendable {
    public let delivered = Atomic<Int>(0)
    public let failed = Atomic<Int>(0)
    public let dropped = Atomic<Int>(0)

    public init() {}
}

/// Counters of one event.
public final class EventCounters: Sendable {
    /// Every raise of the event, subscribers or not.
    public let raised = Atomic<Int>(0)
    /// Events a virtual subscriber could hand to none of its members.
    public let undelivered = Atomic<Int>(0)

    private let raisedMetric: Counter
    private let undeliveredMetric: Counter

    init(name: String) {
        raisedMetric = Counter(label: "evi_events_raised_total", dimensions: [("event", name)])
        undeliveredMetric = Counter(label: "evi_undelivered_total", dimensions: [("event", name)])
    }

    func recordRaised() {
        raised.add(1, ordering: .relaxed)
        raisedMetric.increment()
    }

    public func recordUndelivered() {
        undelivered.add(1, ordering: .relaxed)
        undeliveredMetric.increment()
    }
}

/// A copy of the counters at one moment.
public struct StatisticsSnapshot: Sendable, Hashable {
    public struct Transport: Sendable, Hashable {
        public var delivered: Int
        public var failed: Int
        public var dropped: Int
        public var queued: Int
        /// Still queued when a shutdown's grace ran out.
        public var abandoned: Int = 0
    }
    public struct EventCount: Sendable, Hashable {
        public var raised: Int
        public var undelivered: Int
    }
    public var transports: [String: Transport]
    public var events: [String: EventCount]
}

/// Every counter of an interface, by transport scheme and by event name.
public final class Statistics: Sendable {
    private let transports = Mutex<[String: TransportCounters]>([:])
    private let events = Mutex<[String: EventCounters]>([:])

    public init() {}

    /// The counters of `scheme`, created at first use; callers keep the reference.
    public func transport(_ scheme: String) -> TransportCounters {
        transports.withLock { table in
            if let counters = table[scheme] { return counters }
            let counters = TransportCounters(scheme: scheme)
            table[scheme] = counters
            return counters
        }
    }

    /// The counters of `event`, created at first use; callers keep the reference.
    public func event(_ name: String) -> EventCounters {
        events.withLock { table in
            if let counters = table[name] { return counters }
            let counters = EventCounters(name: name)
            table[name] = counters
            return counters
        }
    }

    public func snapshot() -> StatisticsSnapshot {
        let transportTable = transports.withLock { $0 }
        let eventTable = events.withLock { $0 }
        return StatisticsSnapshot(
            transports: transportTable.mapValues {
                .init(
                    delivered: $0.delivered.load(ordering: .relaxed),
                    failed: $0.failed.load(ordering: .relaxed),
                    dropped: $0.dropped.load(ordering: .relaxed),
                    queued: $0.queued.load(ordering: .relaxed),
                    abandoned: $0.abandoned.load(ordering: .relaxed))
            },
            events: eventTable.mapValues {
                .init(raised: $0.raised.load(ordering: .relaxed), undelivered: $0.undelivered.load(ordering: .relaxed))
            })
    }
}
