import EventCluster
import EventInterface
import EventState
import Logging
import ManagementInterface
import Synchronization

/// Where subscriptions and run-time published events outlive the process, as `state:` names it:
/// a directory (SQLite, this machine only) or a `postgres://` URL (shared by a cluster). The daemon
/// talks to this protocol only; ``stateStore(for:hub:logger:)`` is the one place that chooses.
package protocol DaemonStateStore: SubscriptionObserver, Sendable {
    /// For the start line: "in /var/lib/evi", "shared in postgres://… as node n1".
    var summary: String { get }
    /// The cluster node name, when the store is shared.
    var node: String? { get }
    /// Whether the store answers now (`evi_state_store_up`, `/ready`), when that can change.
    var isUp: (@Sendable () -> Bool)? { get }
    /// Whether its connection is encrypted now (`/ready`'s `state_store_tls`), for a remote store.
    var isTLS: (@Sendable () -> Bool)? { get }
    /// MI commands it adds (`evi:nodes`).
    var commands: [MICommand] { get }
    /// Brings back what it holds into `hub` (or starts following the shared state).
    func start(into hub: EventHub) async throws
    /// Disconnects, last on shutdown.
    func stop() async
}

/// The store `configuration.state` names (nil for `memory`).
package func stateStore(
    for configuration: DaemonConfiguration, node: @autoclosure () -> String, hub: EventHub, logger: Logger
) throws -> (any DaemonStateStore)? {
    if let url = configuration.postgres {
        return SharedStateStore(
            ClusterStore(
                url: url, node: configuration.clusterNode ?? node(), storeSecrets: configuration.storeSecrets, hub: hub,
                logger: logger))
    }
    guard configuration.state != "memory" else { return nil }
    return LocalStateStore(
        try SubscriptionStore(directory: configuration.state), directory: configuration.state, logger: logger)
}

/// `state: DIRECTORY`: SQLite in `DIRECTORY/subscriptions.sqlite`.
package struct LocalStateStore: DaemonStateStore {
    package let store: SubscriptionStore
    package let directory: String
    package let logger: Logger

    package init(_ store: SubscriptionStore, directory: String, logger: Logger) {
        self.store = store
        self.directory = directory
        self.logger = logger
    }

    package var summary: String { "in \(directory)" }
    package var node: String? { nil }
    package var isUp: (@Sendable () -> Bool)? { nil }
    package var isTLS: (@Sendable () -> Bool)? { nil }
    package var commands: [MICommand] { [] }

    package func start(into hub: EventHub) async throws { try await restore(from: store, into: hub, logger: logger) }
    package func stop() async {}

    package func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws {
        do {
            try await store.subscriptionChanged(
                event: event, socket: socket, identity: identity, expiry: expiry, attributes: attributes)
        } catch {
            logger.error("cannot save subscription", metadata: ["event": "\(event)", "error": "\(error)"])
            throw error
        }
    }

    package func eventPublished(_ name: String) async throws {
        do { try await store.eventPublished(name) } catch {
            logger.error("cannot save published event", metadata: ["event": "\(name)", "error": "\(error)"])
            throw error
        }
    }
}

/// `state: postgres://…`: the cluster's shared store.
package struct SharedStateStore: DaemonStateStore {
    package let cluster: ClusterStore

    package init(_ cluster: ClusterStore) { self.cluster = cluster }

    package var summary: String { "shared in \(cluster.url) as node \(cluster.node)" }
    package var node: String? { cluster.node }
    package var isUp: (@Sendable () -> Bool)? { { [cluster] in cluster.isUp } }
    package var isTLS: (@Sendable () -> Bool)? { { [cluster] in cluster.isTLS } }
    package var commands: [MICommand] { [nodesCommand(cluster)] }

    package func start(into hub: EventHub) async throws { await cluster.start() }
    package func stop() async { await cluster.stop() }

    package func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws {
        try await cluster.subscriptionChanged(
            event: event, socket: socket, identity: identity, expiry: expiry, attributes: attributes)
    }

    package func eventPublished(_ name: String) async throws { try await cluster.eventPublished(name) }

    package func refusal(forEvent name: String) -> String? { cluster.refusal(forEvent: name) }

    package func refusal(forSocket text: String, parsed socket: any EventSocket) -> String? {
        cluster.refusal(forSocket: text, parsed: socket)
    }

    package func refusal(
        forSubscription event: String, socket text: String, identity: String, attributes: SubscriptionAttributes
    ) -> String? {
        cluster.refusal(forSubscription: event, socket: text, identity: identity, attributes: attributes)
    }
}

/// Durable state as the MI sees it: the store once it is open (after the listeners are bound;
/// until then, and with `state: memory`, nothing is stored). Set once during start-up, read by
/// MI handlers on other threads: behind a lock.
package final class DurableState: SubscriptionObserver, Sendable {
    private let current = Mutex<(any DaemonStateStore)?>(nil)

    package var store: (any DaemonStateStore)? {
        get { current.withLock { $0 } }
        set { current.withLock { $0 = newValue } }
    }

    package func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws {
        try await store?.subscriptionChanged(
            event: event, socket: socket, identity: identity, expiry: expiry, attributes: attributes)
    }

    package func eventPublished(_ name: String) async throws { try await store?.eventPublished(name) }

    package func refusal(forEvent name: String) -> String? { store?.refusal(forEvent: name) }

    package func refusal(forSocket text: String, parsed socket: any EventSocket) -> String? {
        store?.refusal(forSocket: text, parsed: socket)
    }

    package func refusal(
        forSubscription event: String, socket text: String, identity: String, attributes: SubscriptionAttributes
    ) -> String? {
        store?.refusal(forSubscription: event, socket: text, identity: identity, attributes: attributes)
    }
}

/// Brings back what the state directory holds: events published at run time, then every
/// unexpired subscription with its remaining time. One that no longer parses (a directory gone)
/// is logged and skipped.
package func restore(from store: SubscriptionStore, into hub: EventHub, logger: Logger) async throws {
    for name in try store.publishedEvents() { _ = try? hub.publish(name) }
    var restored = 0
    let records = try store.load()
    for record in records {
        do {
            let attributes = try record.attributes.map { text throws(FilterError) in
                try SubscriptionAttributes(storedJSON: text)
            }
            try await hub.subscribe(
                event: record.event, socket: record.socket, expiry: record.expire.map { .seconds($0) } ?? .never,
                remaining: record.remaining, attributes: attributes ?? .none)
            restored += 1
        } catch {
            // Kept on disk: a later version (or a fixed directory) may take it.
            logger.warning("subscription not restored", metadata: ["event": "\(record.event)", "error": "\(error)"])
        }
    }
    logger.info(
        "state restored", metadata: ["subscriptions": "\(restored) of \(records.count)", "path": "\(store.path)"])
}

/// `evi:nodes`: the cluster's daemons by their heartbeat rows.
package func nodesCommand(_ cluster: ClusterStore) -> MICommand {
    MICommand(
        names: ["evi:nodes"], parameterSets: [[]],
        handler: .deferred { _ throws(MIError) in
            let nodes: [ClusterStore.Node]
            do throws(StateStoreError) { nodes = try await cluster.nodes() } catch {
                throw MIError(code: 500, message: "Internal error", data: "state store: \(error)")
            }
            return [
                "Nodes": .array(
                    nodes.map { node in
                        .object([
                            EventField("name", .string(node.name)),
                            EventField("started", .int(Int64(node.started))),
                            EventField("last_seen", .int(Int64(node.lastSeen))),
                            EventField("self", .bool(node.name == cluster.node)),
                            EventField("tls", .bool(node.tls)),
                        ])
                    })
            ]
        })
}
