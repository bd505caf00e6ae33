import EventInterface
import EventSpool
import Logging
import ManagementInterface
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// evi's version, as `core:version` reports it.
package let eviVersion = "0.2.0"

/// The daemon wired together: the hub with every module's transports, the MI with the core
/// commands and every module's, its listeners, and durable state.
package final class Daemon: Sendable {
    package let configuration: DaemonConfiguration
    package let hub: EventHub
    package let mi: ManagementInterface
    package let http: MIHTTPServer?
    package let datagram: MIDatagramServer?
    package let registry: PrometheusCollectorRegistry
    package let ingresses: [(ingress: any EventIngress, sink: IngressSink)]
    /// Durable delivery's spool, when anything is durable.
    package let spool: Spool?
    /// Where subscriptions outlive the process (nil with `state: memory`).
    package let state: (any DaemonStateStore)?

    package enum StartError: Error, CustomStringConvertible {
        /// A bad configuration value found while wiring (exit status 2).
        case configuration(String)
        /// A listener that cannot bind (exit status 1).
        case bind(String)

        package var description: String {
            switch self {
            case .configuration(let message), .bind(let message): message
            }
        }
    }

    private init(
        configuration: DaemonConfiguration, hub: EventHub, mi: ManagementInterface, http: MIHTTPServer?,
        datagram: MIDatagramServer?, registry: PrometheusCollectorRegistry,
        ingresses: [(ingress: any EventIngress, sink: IngressSink)], spool: Spool?, state: (any DaemonStateStore)?
    ) {
        self.ingresses = ingresses
        self.spool = spool
        self.state = state
        self.configuration = configuration
        self.hub = hub
        self.mi = mi
        self.http = http
        self.datagram = datagram
        self.registry = registry
    }

    /// Starts the daemon for a command (`serve`, `bench`, `demo`): a start-up error is printed
    /// and ends the command with status 2 (configuration) or 1 (a listener that cannot bind).
    package static func startOrExit(
        _ configuration: DaemonConfiguration, registry: PrometheusCollectorRegistry, logger: Logger
    ) async -> Daemon {
        do {
            return try await start(configuration, registry: registry, logger: logger)
        } catch {
            printError("evi: \(error)")
            switch error {
            case .configuration: exit(2)
            case .bind: exit(1)
            }
        }
    }

    /// Composes the modules: the hub with their transports and the configured events and
    /// subscriptions, the MI with the core commands and theirs, listeners bound (paused), state
    /// restored, then requests taken.
    package static func start(
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
        let durable = DurableState()
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
                own.add(.network(ListenAddress(host: address.host, port: http.localPort), offLoopbackNeeds: nil))
                hub.registry.addOwnAddresses(own)
            }
        } catch {
            for entry in ingresses { await entry.ingress.close() }
            throw error
        }
        let state: (any DaemonStateStore)?
        do {
            state = try stateStore(
                for: configuration, node: "\(hostName()):\(http?.localPort ?? configuration.miHTTP?.port ?? 0)",
                hub: hub, logger: logger)
            try await state?.start(into: hub)
        } catch {
            await http?.close()
            await datagram?.close()
            for entry in ingresses { await entry.ingress.close() }
            throw .configuration("state: \(configuration.state): \(error)")
        }
        durable.store = state
        for command in state?.commands ?? [] { mi.register(command) }
        if let up = state?.isUp {
            mi.stateStoreUp.withLock { $0 = up }
            metrics.stateStoreUp.withLock { $0 = up }
        }
        if let tls = state?.isTLS { mi.stateStoreTLS.withLock { $0 = tls } }
        spool?.reportUnclaimed()
        // Every metric family exists from start-up, at zero.
        for scheme in hub.registry.schemes { _ = hub.statistics.transport(scheme) }
        for event in hub.events { _ = hub.statistics.event(event.name) }
        mi.markReadiness(.ready)
        await http?.startReading()
        await datagram?.startReading()
        return Daemon(
            configuration: configuration, hub: hub, mi: mi, http: http, datagram: datagram, registry: registry,
            ingresses: ingresses, spool: spool, state: state)
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
            guard let module = configuration.ingressModule(for: settings.socket) else { continue }  // refused already
            let sink = IngressSink(settings: settings, hub: hub)
            do throws(SocketError) {
                let ingress = try await module.startIngress(settings, sink: sink)
                started.append((ingress, sink))
                var bound = settings
                bound.socket = ingress.socket
                if let listener = try? type(of: module).localListener(bound, key: "") { own.add(listener) }
            } catch {
                for entry in started { await entry.ingress.close() }
                throw .bind(
                    "cannot listen for ingress[\(index)] on \(redactingCredentials(settings.socket)): \(error.message)")
            }
        }
        if let address = configuration.miDatagram { own.add(.network(address, offLoopbackNeeds: nil)) }
        // MI over HTTP too: a webhook to it would turn one evi:raise into raises without end.
        // (With port 0 its real port is added once it is bound.)
        if let address = configuration.miHTTP, address.port != 0 { own.add(.network(address, offLoopbackNeeds: nil)) }
        hub.registry.addOwnAddresses(own)
        for (index, subscription) in configuration.subscriptions.enumerated() {
            do throws(EventInterfaceError) {
                try await hub.subscribe(
                    event: subscription.event, socket: subscription.socket,
                    expiry: subscription.expire.map { .seconds($0) } ?? .never, delivery: subscription.delivery,
                    attributes: subscription.attributes)
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
        // Which module owns each scheme.
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
        info.node = { observer.store?.node }
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

    /// Stops what ``start(_:registry:logger:)`` started, for those who never call ``run(logger:running:)``
    /// (tests, the bench, an embedder): the ingresses, the hub (delivering what is queued for
    /// `grace`), the spool, the state store, then the MI listeners.
    package func stop(grace: Duration = .seconds(1)) async {
        for entry in ingresses { await entry.ingress.close() }
        await hub.shutdown(grace: grace)
        spool?.stop()
        await state?.stop()
        await http?.close()
        await datagram?.close()
    }

    /// The line `evi serve` prints once it listens: its listeners and where its state is.
    package var listeningLine: String {
        let state = self.state?.summary ?? "in memory (nothing kept)"
        let durable = spool.map { "; durable delivery spooled in \($0.settings.directory)" } ?? ""
        return "evi \(eviVersion) listening: \(listeners); state \(state)\(durable)"
    }

    /// Where MI listens, for people: "MI over HTTP on http://…/mi, MI over UDP on …".
    package var listeners: String {
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
    package func run(logger: Logger, running: @escaping @Sendable () -> Void = {}) async throws {
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
                            hub: hub, ingresses: ingresses.map(\.ingress), spool: spool, state: state, mi: mi,
                            grace: configuration.shutdownGrace, logger: logger)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await services.run()
    }
}

/// What went wrong with a bind, in words: "Address already in use", not NIO's call and errno.
package func plainReason(_ error: any Error) -> String {
    if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
    return "\(error)"
}

/// This machine's name (`cluster.node` defaults to `HOST:MIPORT`).
package func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension DestinationPolicy.OwnAddresses {
    /// Adds what a listener of evi's own is bound to: a webhook or a udp subscriber pointed at it
    /// would turn one event into events without end.
    package mutating func add(_ listener: LocalListener) {
        switch listener {
        case .unixPath(let path): unixPaths.append(path)
        case .network(let address, _):
            if ["0.0.0.0", "::", "*"].contains(address.host) {
                wildcardPorts.append(address.port)
                return
            }
            exact += Resolver.addresses(host: address.host, port: address.port, socketType: Int32(SOCK_DGRAM.rawValue))
        }
    }
}
