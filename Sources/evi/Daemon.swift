import ArgumentParser
import EventCluster
import EventDatagram
import EventFlatstore
import EventInterface
import EventRabbitMQ
import EventSpool
import EventState
import EventStream
import EventVirtual
import EventWebhook
import EventXMLRPC
import Logging
import ManagementInterface
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// evi's version, as `core:version` reports it.
let eviVersion = "0.2.0"

/// The daemon wired together: the hub with every module's transports, the MI with the core
/// commands and every module's, its listeners, and durable state.
final class Daemon: Sendable {
    let configuration: DaemonConfiguration
    let hub: EventHub
    let mi: ManagementInterface
    let http: MIHTTPServer?
    let datagram: MIDatagramServer?
    let registry: PrometheusCollectorRegistry
    let ingresses: [(ingress: any EventIngress, sink: IngressSink)]
    /// Durable delivery's spool, when anything is durable.
    let spool: Spool?
    /// The cluster's shared store (`state: postgres://…`).
    let cluster: ClusterStore?

    enum StartError: Error, CustomStringConvertible {
        /// A bad configuration value found while wiring (exit status 2).
        case configuration(String)
        /// A listener that cannot bind (exit status 1).
        case bind(String)

        var description: String {
            switch self {
            case .configuration(let message), .bind(let message): message
            }
        }
    }

    private init(
        configuration: DaemonConfiguration, hub: EventHub, mi: ManagementInterface, http: MIHTTPServer?,
        datagram: MIDatagramServer?, registry: PrometheusCollectorRegistry,
        ingresses: [(ingress: any EventIngress, sink: IngressSink)], spool: Spool?, cluster: ClusterStore?
    ) {
        self.ingresses = ingresses
        self.spool = spool
        self.cluster = cluster
        self.configuration = configuration
        self.hub = hub
        self.mi = mi
        self.http = http
        self.datagram = datagram
        self.registry = registry
    }

    /// Starts the daemon for a command (`serve`, `bench`, `demo`): a start-up error is printed
    /// and ends the command with status 2 (configuration) or 1 (a listener that cannot bind).
    static func startOrExit(
        _ configuration: DaemonConfiguration, registry: PrometheusCollectorRegistry, logger: Logger
    ) async throws -> Daemon {
        do {
            return try await start(configuration, registry: registry, logger: logger)
        } catch {
            printError("evi: \(error)")
            switch error {
            case .configuration: throw ExitCode(2)
            case .bind: throw ExitCode(1)
            }
        }
    }

    /// Composes the modules: the hub with their transports and the configured events and
    /// subscriptions, the MI with the core commands and theirs, listeners bound (paused), state
    /// restored, then requests taken.
    static func start(
        _ configuration: DaemonConfiguration, registry: PrometheusCollectorRegistry, logger: Logger
    ) async throws(StartError) -> Daemon {
        for (name, address) in [("mi.http", configuration.miHTTP), ("mi.datagram", configuration.miDatagram)] {
            if let address, !address.isLoopback, configuration.token == nil {
                throw .configuration("\(name): listening on \(address), not loopback, requires mi.token")
            }
        }
        let spool = try openSpool(configuration, logger: logger)
        let streams = BrowserStreams(
            maxClients: configuration.miLimits.maxStreamClients, maxBytes: configuration.miLimits.maxStreamBytes)
        let hub = try await makeHub(configuration, spool: spool, streams: streams, logger: logger)
        streams.attach(hub)
        let ingresses = try await startIngresses(configuration, hub: hub)
        let durable = DurableState(logger: logger)
        let mi = ManagementInterface(token: configuration.token)
        mi.registerEventCommands(hub: hub, server: serverInfo(configuration, hub: hub, observer: durable))
        mi.registerIngressCommand(ingresses)
        for module in configuration.modules {
            for command in module.commands { mi.register(MICommand(command)) }
        }
        for command in spool?.commands(hub: hub) ?? [] { mi.register(MICommand(command)) }
        spool?.start()
        let metrics = MetricsPage(hub: hub, registry: registry)
        let (http, datagram): (MIHTTPServer?, MIDatagramServer?)
        do {
            let web = MIWeb(streams: streams) { [weak hub] in
                guard let hub else { return [] }
                return await StatusSnapshot.render(hub: hub, mi: mi, streams: streams, version: "evi \(eviVersion)")
            }
            (http, datagram) = try await bindListeners(
                configuration, mi: mi, metrics: metrics, web: web, logger: logger)
            if let http, let address = configuration.miHTTP {
                var own = DestinationPolicy.OwnAddresses()
                own.add(listening: "tcp:" + ListenAddress(host: address.host, port: http.localPort).description)
                hub.registry.addOwnAddresses(own)
            }
        } catch {
            for entry in ingresses { await entry.ingress.close() }
            throw error
        }
        var cluster: ClusterStore?
        if let url = configuration.postgres {
            let node =
                configuration.clusterNode
                ?? "\(hostName()):\(http?.localPort ?? configuration.miHTTP?.port ?? 0)"
            let store = ClusterStore(url: url, node: node, hub: hub, logger: logger)
            await store.start()
            durable.cluster = store
            cluster = store
            mi.register(Self.nodesCommand(store))
            let up: @Sendable () -> Bool = { store.isUp }
            mi.stateStoreUp.withLock { $0 = up }
            metrics.stateStoreUp.withLock { $0 = up }
        } else if configuration.state != "memory" {
            do {
                let store = try SubscriptionStore(directory: configuration.state)
                try await restore(from: store, into: hub, logger: logger)
                durable.store = store
            } catch {
                await http?.close()
                await datagram?.close()
                for entry in ingresses { await entry.ingress.close() }
                throw .configuration("state: \(configuration.state): \(error)")
            }
        }
        spool?.reportUnclaimed()
        // Every metric family exists from start-up, at zero.
        for scheme in hub.registry.schemes { _ = hub.statistics.transport(scheme) }
        for event in hub.events { _ = hub.statistics.event(event.name) }
        mi.markReadiness(.ready)
        await http?.startReading()
        await datagram?.startReading()
        return Daemon(
            configuration: configuration, hub: hub, mi: mi, http: http, datagram: datagram, registry: registry,
            ingresses: ingresses, spool: spool, cluster: cluster)
    }

    /// The spool, when anything is delivered durably: `spool.dir`, else `<state>/spool`; without
    /// either (state in memory) durable delivery cannot start (exit 2).
    private static func openSpool(_ configuration: DaemonConfiguration, logger: Logger) throws(StartError) -> Spool? {
        guard configuration.usesDurableDelivery else { return nil }
        guard let directory = configuration.spoolDirectory else {
            throw .configuration(
                "spool.dir: durable delivery needs a spool directory (state is \(configuration.printedState))")
        }
        var settings = Spool.Settings(directory: directory)
        let section = configuration.spool
        settings.maxBytes = section.maxBytes
        settings.maxTotalBytes = section.maxTotalBytes
        settings.maxAge = section.maxAge
        settings.retryMinimum = section.retryMin
        settings.retryMaximum = section.retryMax
        settings.fsyncInterval = .milliseconds(section.fsyncIntervalMs)
        settings.fsyncAlways = section.fsyncAlways
        do throws(StoreError) { return try Spool(settings: settings, logger: logger) } catch {
            throw .configuration("spool.dir: \(directory): \(error)")
        }
    }

    /// The hub with every module's transports, the configuration's events and subscriptions.
    private static func makeHub(
        _ configuration: DaemonConfiguration, spool: Spool?, streams: BrowserStreams, logger: Logger
    ) async throws(StartError) -> EventHub {
        var hubConfiguration = EventHub.Configuration(
            queueSize: configuration.queueSize, allowedDestinations: configuration.allowedDestinations,
            queueBytes: configuration.queueBytes, maxEvents: configuration.maxEvents,
            maxSubscriptions: configuration.maxSubscriptions)
        hubConfiguration.delivery = configuration.delivery
        hubConfiguration.eventDelivery = configuration.eventDelivery
        hubConfiguration.idParam = configuration.spool.idParam
        let hub = EventHub(
            transports: configuration.modules.flatMap(\.transports) + streams.transports,
            configuration: hubConfiguration, logger: logger,
            durableStore: spool)
        for name in configuration.events {
            do throws(EventInterfaceError) { try hub.publish(name) } catch { throw .configuration("events: \(error)") }
        }
        return hub
    }

    /// Binds every `ingress:` entry with the module that owns its scheme, makes their addresses
    /// (and the MI datagram port) forbidden destinations, then makes the configured subscriptions.
    private static func startIngresses(_ configuration: DaemonConfiguration, hub: EventHub) async throws(StartError)
        -> [(ingress: any EventIngress, sink: IngressSink)]
    {
        var started: [(ingress: any EventIngress, sink: IngressSink)] = []
        var own = DestinationPolicy.OwnAddresses()
        for (index, settings) in configuration.ingress.enumerated() {
            let scheme = String(settings.socket.prefix { $0 != ":" })
            guard let module = configuration.modules.first(where: { type(of: $0).ingressSchemes.contains(scheme) })
            else { continue }  // the configuration refused such entries already
            let sink = IngressSink(settings: settings, hub: hub)
            do throws(SocketError) {
                let ingress = try await module.startIngress(settings, sink: sink)
                started.append((ingress, sink))
                own.add(listening: ingress.socket)
            } catch {
                for entry in started { await entry.ingress.close() }
                throw .bind(
                    "cannot listen for ingress[\(index)] on \(redactingCredentials(settings.socket)): \(error.message)")
            }
        }
        if let address = configuration.miDatagram { own.add(listening: "udp:\(address)") }
        // MI over HTTP too: a webhook to it would turn one evi:raise into raises without end.
        // (With port 0 its real port is added once it is bound.)
        if let address = configuration.miHTTP, address.port != 0 { own.add(listening: "tcp:\(address)") }
        hub.registry.addOwnAddresses(own)
        for (index, subscription) in configuration.subscriptions.enumerated() {
            if let secret = subscription.secret {
                do throws(ConfigurationError) {
                    guard let webhooks = configuration.modules.lazy.compactMap({ $0 as? WebhookModule }).first else {
                        throw ConfigurationError("the event_webhook module is not built in")
                    }
                    try webhooks.secrets.assign(secret, socket: subscription.socket)
                } catch {
                    for entry in started { await entry.ingress.close() }
                    throw .configuration("subscriptions[\(index)].secret: \(error)")
                }
            }
            do throws(EventInterfaceError) {
                try await hub.subscribe(
                    event: subscription.event, socket: subscription.socket,
                    expiry: subscription.expire.map { .seconds($0) } ?? .never, delivery: subscription.delivery)
            } catch {
                for entry in started { await entry.ingress.close() }
                throw .configuration("subscriptions[\(index)]: \(error)")
            }
        }
        return started
    }

    /// What the core commands report and check: `core:ps`, durable state, and — with a listener
    /// off loopback — each module's rules for the sockets it owns.
    private static func serverInfo(
        _ configuration: DaemonConfiguration, hub: EventHub, observer: DurableState
    ) -> MIServerInfo {
        let listeners = [
            configuration.miHTTP.map { "MI HTTP \($0)" }, configuration.miDatagram.map { "MI Datagram \($0)" },
        ].compactMap { $0 }
        let exposed = [configuration.miHTTP, configuration.miDatagram].contains { $0.map { !$0.isLoopback } ?? false }
        // Which module owns each scheme, worked out once (a module's transports are made on demand).
        var owners: [String: any EventModule] = [:]
        for module in configuration.modules {
            for transport in module.transports { owners[transport.scheme] = module }
        }
        let owner = owners
        var info = MIServerInfo(
            version: eviVersion,
            processes: {
                ["main"] + listeners + ["delivery (\(hub.statistics.snapshot().transports.count) transports)"]
            },
            observer: observer,
            admitSocket: { socket in
                guard exposed else { return nil }
                for component in socket.components {
                    if let refusal = owner[component.scheme]?.refusalOverExposedMI(component) { return refusal }
                }
                return nil
            })
        info.node = { observer.cluster?.node }
        return info
    }

    /// Binds the MI listeners, paused: a taken port fails start-up before the state directory is
    /// touched, and no request is served until the state is restored.
    private static func bindListeners(
        _ configuration: DaemonConfiguration, mi: ManagementInterface, metrics: MetricsPage, web: MIWeb,
        logger: Logger
    ) async throws(StartError) -> (MIHTTPServer?, MIDatagramServer?) {
        let group = MultiThreadedEventLoopGroup.singleton
        var http: MIHTTPServer?
        if let address = configuration.miHTTP {
            do {
                http = try await MIHTTPServer.bind(
                    host: address.host, port: address.port, group: group, mi: mi, metrics: { metrics.render() },
                    logger: logger, limits: configuration.miLimits, paused: true, web: web)
            } catch {
                throw .bind("cannot listen for MI over HTTP on \(address): \(plainReason(error))")
            }
        }
        guard let address = configuration.miDatagram else { return (http, nil) }
        do {
            let datagram = try await MIDatagramServer.bind(
                host: address.host, port: address.port, group: group, mi: mi, logger: logger, paused: true)
            return (http, datagram)
        } catch {
            await http?.close()
            throw .bind("cannot listen for MI over UDP on \(address): \(plainReason(error))")
        }
    }

    /// The line `evi serve` prints once it listens: its listeners and where its state is.
    var listeningLine: String {
        let state =
            configuration.state == "memory"
            ? "in memory (nothing kept)"
            : configuration.postgres.map { "shared in \($0) as node \(cluster?.node ?? "?")" }
                ?? "in \(configuration.state)"
        let durable = spool.map { "; durable delivery spooled in \($0.settings.directory)" } ?? ""
        return "evi \(eviVersion) listening: \(listeners); state \(state)\(durable)"
    }

    /// Where MI listens, for people: "MI over HTTP on http://…/mi, MI over UDP on …".
    var listeners: String {
        var parts: [String] = []
        if let http, let address = configuration.miHTTP {
            parts.append("MI over HTTP on http://\(ListenAddress(host: address.host, port: http.localPort))/mi")
        }
        if let datagram, let address = configuration.miDatagram {
            parts.append("MI over UDP on \(ListenAddress(host: address.host, port: datagram.localPort))")
        }
        return parts.isEmpty ? "no MI listener" : parts.joined(separator: ", ")
    }

    /// Runs until SIGTERM or SIGINT: then MI stops taking requests, queues drain for
    /// `shutdown_grace`, and everything is closed.
    ///
    /// `running` is called once the signals are trapped and the services started: a SIGTERM sent
    /// after it (a script waiting for the start line) is a graceful shutdown, never a kill.
    func run(logger: Logger, running: @escaping @Sendable () -> Void = {}) async throws {
        // Shut down in reverse order: the hub first (ingresses closed, MI answering 503 while the
        // queues drain, /ready 503), then SIGHUP handling, then the MI listeners.
        let services = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(
                        service: MIService(http: http, datagram: datagram, running: running),
                        successTerminationBehavior: .ignore,
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(
                        service: HangupService(modules: configuration.modules, logger: logger),
                        successTerminationBehavior: .ignore),
                    .init(
                        service: HubService(
                            hub: hub, ingresses: ingresses.map(\.ingress), spool: spool, cluster: cluster, mi: mi,
                            grace: configuration.shutdownGrace, logger: logger)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await services.run()
    }
}

/// Durable state as the MI sees it: the subscription store once it is open (after the listeners
/// are bound; until then, and with `state: memory`, nothing is stored). Set once during start-up,
/// before any request is read. A failed write is logged and refuses the change.
final class DurableState: SubscriptionObserver, @unchecked Sendable {
    var store: SubscriptionStore?
    /// With `state: postgres://…`, the cluster's store instead.
    var cluster: ClusterStore?
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func subscriptionChanged(event: String, socket: String, identity: String, expiry: Expiry) async throws {
        if let cluster {
            return try await cluster.subscriptionChanged(
                event: event, socket: socket, identity: identity, expiry: expiry)
        }
        do {
            try await store?.subscriptionChanged(event: event, socket: socket, identity: identity, expiry: expiry)
        } catch {
            logger.error("cannot save subscription", metadata: ["event": "\(event)", "error": "\(error)"])
            throw error
        }
    }

    func eventPublished(_ name: String) async throws {
        if let cluster { return try await cluster.eventPublished(name) }
        do { try await store?.eventPublished(name) } catch {
            logger.error("cannot save published event", metadata: ["event": "\(name)", "error": "\(error)"])
            throw error
        }
    }
}

/// What went wrong with a bind, in words: "Address already in use", not NIO's call and errno.
func plainReason(_ error: any Error) -> String {
    if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
    return "\(error)"
}

/// Brings back what the state directory holds: events published at run time, then every
/// unexpired subscription with its remaining time. One that no longer parses (a directory gone)
/// is logged and skipped.
func restore(from store: SubscriptionStore, into hub: EventHub, logger: Logger) async throws {
    for name in try store.publishedEvents() { _ = try? hub.publish(name) }
    var restored = 0
    let records = try store.load()
    for record in records {
        do throws(EventInterfaceError) {
            try await hub.subscribe(
                event: record.event, socket: record.socket, expiry: record.expire.map { .seconds($0) } ?? .never,
                remaining: record.remaining)
            restored += 1
        } catch {
            logger.warning("subscription not restored", metadata: ["event": "\(record.event)", "error": "\(error)"])
        }
    }
    logger.info(
        "state restored", metadata: ["subscriptions": "\(restored) of \(records.count)", "path": "\(store.path)"])
}

/// `GET /metrics`: the counters the core keeps, plus gauges read at each scrape. Remembers the
/// `evi_virtual_member_up` series it reported, so that those of removed subscriptions are dropped
/// instead of growing forever.
final class MetricsPage: Sendable {
    let hub: EventHub
    let registry: PrometheusCollectorRegistry
    private let reported = Mutex<Set<[String]>>([])
    /// `evi_state_store_up`, with a shared state store.
    let stateStoreUp = Mutex<(@Sendable () -> Bool)?>(nil)

    init(hub: EventHub, registry: PrometheusCollectorRegistry) {
        self.hub = hub
        self.registry = registry
    }

    func render() -> [UInt8] {
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

/// Serves MI until graceful shutdown, which closes the listeners (no new requests).
struct MIService: Service {
    let http: MIHTTPServer?
    let datagram: MIDatagramServer?

    var running: @Sendable () -> Void = {}

    func run() async throws {
        running()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                if let http { group.addTask { try await http.run() } }
                if let datagram { group.addTask { try await datagram.run() } }
            }
        } onGracefulShutdown: {
            http?.channel.close(promise: nil)
            datagram?.channel.close(promise: nil)
        }
    }
}

/// Holds the hub; on graceful shutdown delivers what is queued for the grace period, then closes.
struct HubService: Service {
    let hub: EventHub
    /// Closed first on shutdown: no event comes in while the queues drain.
    let ingresses: [any EventIngress]
    /// Synced a last time once the subscribers are closed.
    let spool: Spool?
    /// Disconnected last.
    let cluster: ClusterStore?
    /// Told that the daemon drains (`/ready` and `/mi` answer 503 until the listeners close).
    let mi: ManagementInterface
    let grace: Double

    let logger: Logger

    func run() async throws {
        // Expired subscriptions of events nobody raises are closed within a second.
        let sweeper = Task { [hub] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                hub.sweepExpired()
            }
        }
        try? await gracefulShutdown()
        mi.markReadiness(.draining)
        sweeper.cancel()
        for ingress in ingresses { await ingress.close() }
        logger.info("stopping: delivering what is queued", metadata: ["grace_seconds": "\(grace)"])
        let before = hub.statistics.snapshot().transports.values
        await hub.shutdown(grace: .milliseconds(Int(grace * 1000)))
        spool?.stop()
        await cluster?.stop()
        let after = hub.statistics.snapshot().transports.values
        func total(
            _ counts: some Sequence<StatisticsSnapshot.Transport>, _ field: (StatisticsSnapshot.Transport) -> Int
        )
            -> Int
        { counts.reduce(0) { $0 + field($1) } }
        logger.info(
            "stopped",
            metadata: [
                "delivered_during_drain": "\(total(after, \.delivered) - total(before, \.delivered))",
                "abandoned": "\(total(after, \.abandoned))",
            ])
    }
}

/// SIGHUP: every module's `hangup()` (flatstore reopens its files: logrotate's "move, then
/// signal").
struct HangupService: Service {
    let modules: [any EventModule]
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withGracefulShutdownHandler {
            for await _ in hangups.cancelOnGracefulShutdown() {
                logger.info("SIGHUP: modules reopen what they hold")
                for module in modules { await module.hangup() }
            }
        } onGracefulShutdown: {
        }
    }
}

extension DestinationPolicy.OwnAddresses {
    /// Adds the address a `udp:HOST:PORT`, `tcp:HOST:PORT` or `unix:/PATH` listener has.
    mutating func add(listening socket: String) {
        // Only what evi itself listens on: an evapi or rabbitmq ingress is a client of someone else.
        guard ["udp:", "tcp:", "tls:", "unix:"].contains(where: socket.hasPrefix) else { return }
        if socket.hasPrefix("unix:") {
            unixPaths.append(String(socket.dropFirst(5)))
            return
        }
        guard let colon = socket.firstIndex(of: ":"),
            let address = try? ListenAddress.parse(String(socket[socket.index(after: colon)...]), key: "")
        else { return }
        if ["0.0.0.0", "::", "*"].contains(address.host) {
            wildcardPorts.append(address.port)
            return
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &list) == 0 else { return }
        defer { freeaddrinfo(list) }
        var entry = list
        while let current = entry {
            let bytes = UnsafeRawBufferPointer(start: current.pointee.ai_addr, count: Int(current.pointee.ai_addrlen))
            exact.append(ResolvedAddress(family: current.pointee.ai_family, storage: Array(bytes)))
            entry = current.pointee.ai_next
        }
    }
}

extension Daemon {
    /// `evi:nodes`: the cluster's daemons by their heartbeat rows.
    static func nodesCommand(_ cluster: ClusterStore) -> MICommand {
        MICommand(
            names: ["evi:nodes"], parameterSets: [[]],
            handler: .deferred { _ throws(MIError) in
                let nodes: [(name: String, started: Double, lastSeen: Double)]
                do throws(PostgresError) { nodes = try await cluster.nodes() } catch {
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
                            ])
                        })
                ]
            })
    }
}

/// This machine's name (`cluster.node` defaults to `HOST:MIPORT`).
func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
