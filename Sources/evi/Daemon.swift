import ArgumentParser
import EventDatagram
import EventFlatstore
import EventInterface
import EventRabbitMQ
import EventState
import EventStream
import EventVirtual
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
let eviVersion = "0.1.0"

/// The daemon wired together: the hub with every transport, the MI and its listeners.
final class Daemon: Sendable {
    let configuration: DaemonConfiguration
    let hub: EventHub
    let mi: ManagementInterface
    let http: MIHTTPServer?
    let datagram: MIDatagramServer?
    let registry: PrometheusCollectorRegistry

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

    let flatstore: FlatstoreTransport

    /// The transports of this build, configured.
    static func transports(_ configuration: DaemonConfiguration, flatstore: FlatstoreTransport) -> [any EventTransport]
    {
        [
            UDPTransport(), UnixTransport(allowedDirs: configuration.unixAllowedDirs),
            StreamTransport(options: configuration.stream),
            XMLRPCTransport(options: configuration.xmlrpc), RabbitMQTransport(options: configuration.rabbitmq),
            flatstore,
            VirtualTransport(failoverTimeout: configuration.failoverTimeout),
        ]
    }

    private init(
        configuration: DaemonConfiguration, hub: EventHub, mi: ManagementInterface, http: MIHTTPServer?,
        datagram: MIDatagramServer?, registry: PrometheusCollectorRegistry, flatstore: FlatstoreTransport
    ) {
        self.flatstore = flatstore
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

    static func start(
        _ configuration: DaemonConfiguration, registry: PrometheusCollectorRegistry, logger: Logger
    ) async throws(StartError) -> Daemon {
        for (name, address) in [("mi.http", configuration.miHTTP), ("mi.datagram", configuration.miDatagram)] {
            if let address, !address.isLoopback, configuration.token == nil {
                throw .configuration("\(name): listening on \(address), not loopback, requires mi.token")
            }
        }
        let flatstore = FlatstoreTransport(options: configuration.flatstore)
        let hub = EventHub(
            transports: transports(configuration, flatstore: flatstore),
            configuration: .init(
                queueSize: configuration.queueSize, allowedDestinations: configuration.allowedDestinations,
                queueBytes: configuration.queueBytes, maxEvents: configuration.maxEvents,
                maxSubscriptions: configuration.maxSubscriptions),
            logger: logger)
        for name in configuration.events {
            do throws(EventInterfaceError) { try hub.publish(name) } catch { throw .configuration("events: \(error)") }
        }
        for (index, subscription) in configuration.subscriptions.enumerated() {
            do throws(EventInterfaceError) {
                try await hub.subscribe(
                    event: subscription.event, socket: subscription.socket,
                    expiry: subscription.expire.map { .seconds($0) } ?? .never)
            } catch {
                throw .configuration("subscriptions[\(index)]: \(error)")
            }
        }
        let durable = DurableState()

        let mi = ManagementInterface(token: configuration.token)
        let listeners = [
            configuration.miHTTP.map { "MI HTTP \($0)" }, configuration.miDatagram.map { "MI Datagram \($0)" },
        ].compactMap { $0 }
        // With a listener off loopback and no allowed_dirs, files cannot be chosen over MI.
        let exposed = [configuration.miHTTP, configuration.miDatagram].contains { $0.map { !$0.isLoopback } ?? false }
        let guardFiles = exposed && configuration.flatstore.allowedDirs == nil
        let guardUnix = exposed && configuration.unixAllowedDirs == nil
        mi.registerEventCommands(
            hub: hub,
            server: MIServerInfo(
                version: eviVersion,
                processes: {
                    ["main"] + listeners + ["delivery (\(hub.statistics.snapshot().transports.count) transports)"]
                },
                subscriptionChanged: { event, socket, expiry in
                    guard let store = durable.store else { return }
                    let identity = (try? await hub.registry.parseSocket(socket))?.identity ?? socket
                    do {
                        try await store.offThread {
                            try $0.save(event: event, canonical: identity, socket: socket, expiry: expiry)
                        }
                    } catch {
                        logger.error("cannot save subscription", metadata: ["event": "\(event)", "error": "\(error)"])
                        throw error
                    }
                },
                admitSocket: { socket in
                    if guardFiles, socket.contains("flatstore:") {
                        return
                            "flatstore subscriptions over MI need event_flatstore.allowed_dirs when MI is not on loopback"
                    }
                    if guardUnix, socket.contains("unix:") {
                        return "unix subscriptions over MI need event_datagram.allowed_dirs when MI is not on loopback"
                    }
                    return nil
                },
                eventPublished: { event in
                    do { try await durable.store?.offThread { try $0.savePublished(event) } } catch {
                        logger.error(
                            "cannot save published event", metadata: ["event": "\(event)", "error": "\(error)"])
                    }
                }))
        mi.register(
            MICommand(
                names: ["event_flatstore:rotate", "evi_flat_rotate"], parameterSets: [["path_to_file"]],
                handler: .deferred { params throws(MIError) in
                    let path = try params.string("path_to_file")
                    let found = await flatstore.onIOThread { (try? flatstore.rotate(path: path)) != nil }
                    guard found else {
                        throw MIError(code: 400, message: "File not found", data: "no subscription writes \(path)")
                    }
                    return "OK"
                }))

        let group = MultiThreadedEventLoopGroup.singleton
        var http: MIHTTPServer?
        var datagram: MIDatagramServer?
        let memberSeries = MemberSeries()
        let metrics: @Sendable () -> [UInt8] = { renderMetrics(hub: hub, registry: registry, members: memberSeries) }
        // Bound paused: a taken port fails start-up before the state directory is touched, and
        // no request is served until the state is restored.
        if let address = configuration.miHTTP {
            do {
                http = try await MIHTTPServer.bind(
                    host: address.host, port: address.port, group: group, mi: mi, metrics: metrics, logger: logger,
                    limits: configuration.miLimits, paused: true)
            } catch {
                throw .bind("cannot listen for MI over HTTP on \(address): \(plainReason(error))")
            }
        }
        if let address = configuration.miDatagram {
            do {
                datagram = try await MIDatagramServer.bind(
                    host: address.host, port: address.port, group: group, mi: mi, logger: logger, paused: true)
            } catch {
                await http?.close()
                throw .bind("cannot listen for MI over UDP on \(address): \(plainReason(error))")
            }
        }
        if configuration.state != "memory" {
            do {
                let opened = try SubscriptionStore(directory: configuration.state)
                try await restore(from: opened, into: hub, logger: logger)
                durable.store = opened
            } catch {
                await http?.close()
                await datagram?.close()
                throw .configuration("state: \(configuration.state): \(error)")
            }
        }
        // Every metric family exists from start-up, at zero.
        for scheme in hub.registry.schemes { _ = hub.statistics.transport(scheme) }
        for event in hub.events { _ = hub.statistics.event(event.name) }
        await http?.startReading()
        await datagram?.startReading()
        return Daemon(
            configuration: configuration, hub: hub, mi: mi, http: http, datagram: datagram, registry: registry,
            flatstore: flatstore)
    }

    /// The line `evi serve` prints once it listens: its listeners and where its state is.
    var listeningLine: String {
        let state = configuration.state == "memory" ? "in memory (nothing kept)" : "in \(configuration.state)"
        return "evi \(eviVersion) listening: \(listeners); state \(state)"
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
    func run(logger: Logger) async throws {
        let services = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: HubService(hub: hub, grace: configuration.shutdownGrace, logger: logger)),
                    .init(
                        service: ReopenOnHangup(flatstore: flatstore, logger: logger),
                        successTerminationBehavior: .ignore),
                    .init(
                        service: MIService(http: http, datagram: datagram), successTerminationBehavior: .ignore,
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await services.run()
    }
}

/// The subscription store once it is open (after the listeners are bound); until then, and with
/// `state: memory`, nil. Set once during start-up, before any request is read.
final class DurableState: @unchecked Sendable {
    var store: SubscriptionStore?
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

/// The `evi_virtual_member_up` series the last scrape reported, so that those of removed
/// subscriptions are dropped instead of growing forever.
final class MemberSeries: Sendable {
    let reported = Mutex<Set<[String]>>([])
}

/// Prometheus text for `GET /metrics`: the counters the core keeps, plus gauges read now.
func renderMetrics(hub: EventHub, registry: PrometheusCollectorRegistry, members: MemberSeries) -> [UInt8] {
    let snapshot = hub.statistics.snapshot()
    Gauge(label: "evi_queue_depth").record(snapshot.transports.values.reduce(0) { $0 + $1.queued })
    var current = Set<[String]>()
    for event in hub.events {
        let subscribers = (try? hub.subscribers(of: event.name)) ?? []
        Gauge(label: "evi_subscriptions", dimensions: [("event", event.name)]).record(subscribers.count)
        for subscriber in subscribers {
            for member in subscriber.members ?? [] {
                current.insert([event.name, subscriber.socket, member.socket])
                Gauge(
                    label: "evi_virtual_member_up",
                    dimensions: [("event", event.name), ("socket", subscriber.socket), ("member", member.socket)]
                ).record(member.state == .up ? 1 : 0)
            }
        }
    }
    let stale = members.reported.withLock { reported in
        defer { reported = current }
        return reported.subtracting(current)
    }
    for labels in stale {
        Gauge(
            label: "evi_virtual_member_up",
            dimensions: [("event", labels[0]), ("socket", labels[1]), ("member", labels[2])]
        ).destroy()
    }
    var bytes = registry.emitToBuffer()
    if current.isEmpty && !String(decoding: bytes, as: UTF8.self).contains("evi_virtual_member_up") {
        bytes += Array("# TYPE evi_virtual_member_up gauge\n".utf8)
    }
    return bytes
}

/// Serves MI until graceful shutdown, which closes the listeners (no new requests).
struct MIService: Service {
    let http: MIHTTPServer?
    let datagram: MIDatagramServer?

    func run() async throws {
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
        sweeper.cancel()
        logger.info("stopping: delivering what is queued", metadata: ["grace_seconds": "\(grace)"])
        let before = hub.statistics.snapshot().transports.values
        await hub.shutdown(grace: .milliseconds(Int(grace * 1000)))
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

/// SIGHUP reopens every flatstore file (logrotate's "move, then signal").
struct ReopenOnHangup: Service {
    let flatstore: FlatstoreTransport
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withGracefulShutdownHandler {
            for await _ in hangups.cancelOnGracefulShutdown() {
                logger.info("SIGHUP: reopening flatstore files", metadata: ["files": "\(flatstore.openPaths.count)"])
                await flatstore.onIOThread { flatstore.reopenAll() }
            }
        } onGracefulShutdown: {
        }
    }
}
