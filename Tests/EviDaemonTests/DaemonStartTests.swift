import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventNIOSupport
import EviDaemon
import EviModules
import Logging
import ManagementInterface
import Prometheus
import Testing

/// The daemon composed in this process, as `evi serve` composes it, on ports the kernel chooses.
@Suite(.serialized) struct DaemonStartTests {
    static func quiet() -> Logger {
        var logger = Logger(label: "evi-daemon-tests")
        logger.logLevel = .critical
        return logger
    }

    /// A configuration on free loopback ports with nothing kept.
    static func ephemeral(_ yaml: String = "", modules: [any EventModule.Type] = BuiltInModules.all) throws
        -> DaemonConfiguration
    {
        try DaemonConfiguration.load(
            yaml: "mi:\n  http: 127.0.0.1:0\n  datagram: 127.0.0.1:0\nstate: memory\n" + yaml, modules: modules)
    }

    static func start(_ configuration: DaemonConfiguration) async throws -> Daemon {
        try await Daemon.start(configuration, registry: PrometheusCollectorRegistry(), logger: quiet())
    }

    static func mi(_ daemon: Daemon, _ body: String) throws -> BlockingHTTP.Response {
        try BlockingHTTP.request(
            host: "127.0.0.1", port: try #require(daemon.http).localPort, method: "POST", path: "/mi",
            headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }

    @Test func startsOnFreePortsAndAnswersMI() async throws {
        try await withTeardown { teardown in
            let daemon = try await Self.start(try Self.ephemeral())
            teardown.add { await daemon.stop() }
            let reply = try Self.mi(daemon, #"{"jsonrpc":"2.0","method":"version","id":1}"#)
            #expect(reply.bodyText == #"{"jsonrpc":"2.0","result":{"Server":"evi \#(eviVersion)"},"id":1}"#)
            #expect(daemon.listeningLine.hasPrefix("evi \(eviVersion) listening: MI over HTTP on http://127.0.0.1:"))
            #expect(daemon.listeningLine.hasSuffix("; state in memory (nothing kept)"))
            #expect(daemon.state == nil)
        }
    }

    @Test func withBothMIListenersOffItSaysSo() async throws {
        try await withTeardown { teardown in
            let daemon = try await Self.start(
                try DaemonConfiguration.load(yaml: "mi: {http: off, datagram: off}\nstate: memory\n"))
            teardown.add { await daemon.stop() }
            #expect(daemon.http == nil && daemon.datagram == nil)
            #expect(daemon.listeners == "no MI listener")
        }
    }

    @Test func configuredEventsAndSubscriptionsAreInTheHubAndDeliver() async throws {
        try await withTeardown { teardown in
            let receiver = try DatagramReceiver()
            teardown.add { await receiver.close() }
            let daemon = try await Self.start(
                try Self.ephemeral(
                    "events: [E_CONFIGURED]\nsubscriptions: [{event: E_CONFIGURED, socket: '\(receiver.socket)'}]\n"))
            teardown.add { await daemon.stop() }
            let event = try daemon.hub.publish("E_CONFIGURED")
            try daemon.hub.raise(event, ["n": 1])
            let messages = await receiver.waitFor(count: 1)
            #expect(messages.first?.contains(#""n":1"#) == true, "\(messages)")
        }
    }

    @Test func aTakenPortIsABindErrorNamingTheListener() async throws {
        try await withTeardown { teardown in
            let first = try await Self.start(try Self.ephemeral())
            teardown.add { await first.stop() }
            let port = try #require(first.http).localPort
            var second = try Self.ephemeral()
            second.miHTTP = ListenAddress(host: "127.0.0.1", port: port)
            do {
                let unexpected = try await Self.start(second)
                await unexpected.stop()
                Issue.record("a taken port was accepted")
            } catch {
                guard case .bind(let message)? = error as? Daemon.StartError else {
                    Issue.record("not a bind error: \(error)")
                    return
                }
                #expect(message.contains("127.0.0.1:\(port)"), "\(message)")
                #expect(message.contains("Address already in use"), "\(message)")
            }
        }
    }

    @Test func miOffLoopbackWithoutATokenIsAConfigurationError() async throws {
        var configuration = try Self.ephemeral()
        configuration.miDatagram = ListenAddress(host: "0.0.0.0", port: 0)
        await #expect {
            _ = try await Self.start(configuration)
        } throws: { error in
            (error as? Daemon.StartError)?.description
                == "mi.datagram: listening on 0.0.0.0:0, not loopback, requires mi.token"
        }
    }

    @Test func durableDeliveryWithoutASpoolIsAConfigurationError() async throws {
        let configuration = try Self.ephemeral("delivery: durable\n")
        await #expect {
            _ = try await Self.start(configuration)
        } throws: { error in
            guard case .configuration(let message)? = error as? Daemon.StartError else { return false }
            return message.hasPrefix("spool.dir: durable delivery needs a spool directory")
        }
    }

    @Test func aStateDirectoryIsTheLocalStoreAndKeepsSubscriptions() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-daemon-state")
            teardown.add { directory.remove() }
            var configuration = try Self.ephemeral()
            configuration.state = directory.path
            let daemon = try await Self.start(configuration)
            #expect(daemon.state is LocalStateStore)
            #expect(daemon.listeningLine.contains("state in \(directory.path)"))
            try daemon.hub.publish("E_KEPT")
            try await daemon.state?.eventPublished("E_KEPT")
            try await daemon.hub.subscribe(event: "E_KEPT", socket: "udp:127.0.0.1:9")
            try await daemon.state?.subscriptionChanged(
                event: "E_KEPT", socket: "udp:127.0.0.1:9", identity: "udp:127.0.0.1:9", expiry: .never,
                attributes: .none)
            await daemon.stop()
            let restarted = try await Self.start(configuration)
            teardown.add { await restarted.stop() }
            #expect(try restarted.hub.subscribers(of: "E_KEPT").count == 1)
        }
    }

    @Test func aPostgresStateIsTheSharedStore() throws {
        let configuration = try DaemonConfiguration.load(
            yaml: "state: postgres://evi:pw@127.0.0.1:1/evi\ncluster: {node: n1}\n")
        let hub = EventHub(transports: [])
        let store = try stateStore(for: configuration, node: "unused", hub: hub, logger: Self.quiet())
        #expect(store is SharedStateStore)
        #expect(store?.node == "n1")
        #expect(store?.summary.contains("pw") == false)
        #expect(try stateStore(for: try Self.ephemeral(), node: "x", hub: hub, logger: Self.quiet()) == nil)
    }

    /// The page renders the registry it was given (the one `evi serve` bootstraps the metrics
    /// system with), and the virtual member family before any virtual subscription exists.
    @Test func theMetricsPageRendersItsRegistryAndTheMemberFamily() async throws {
        try await withTeardown { teardown in
            let registry = PrometheusCollectorRegistry()
            registry.makeCounter(name: "evi_test_total").increment(by: Int64(3))
            let daemon = try await Daemon.start(try Self.ephemeral(), registry: registry, logger: Self.quiet())
            teardown.add { await daemon.stop() }
            let page = try BlockingHTTP.request(
                host: "127.0.0.1", port: try #require(daemon.http).localPort, method: "GET", path: "/metrics")
            #expect(page.status == 200)
            #expect(page.bodyText.contains("evi_test_total 3"), "\(page.bodyText)")
            #expect(page.bodyText.contains("# TYPE evi_virtual_member_up gauge"))
        }
    }

    @Test func anIngressStartsOnAFreePortAndRaisesIntoTheHub() async throws {
        try await withTeardown { teardown in
            let receiver = try DatagramReceiver()
            teardown.add { await receiver.close() }
            let daemon = try await Self.start(
                try Self.ephemeral(
                    "events: [E_IN]\nsubscriptions: [{event: E_IN, socket: '\(receiver.socket)'}]\n"
                        + "ingress: ['udp:127.0.0.1:0']\n"))
            teardown.add { await daemon.stop() }
            let ingress = try #require(daemon.ingresses.first?.ingress)
            let port = Int(ingress.socket.split(separator: ":").last ?? "") ?? 0
            sendDatagram(Array(#"{"jsonrpc":"2.0","method":"E_IN","params":{"x":2}}"#.utf8), toPort: port)
            let messages = await receiver.waitFor(count: 1)
            #expect(messages.first?.contains(#""x":2"#) == true, "\(messages)")
        }
    }

    @Test func modulesCommandsAreRegisteredOnTheMI() async throws {
        try await withTeardown { teardown in
            let daemon = try await Self.start(try Self.ephemeral())
            teardown.add { await daemon.stop() }
            let reply = try Self.mi(daemon, #"{"jsonrpc":"2.0","method":"which","id":1}"#)
            for command in ["raise_event", "event_subscribe", "subscribers_list", "evi:ingress", "evi_flat_rotate"] {
                #expect(reply.bodyText.contains(command), "\(command): \(reply.bodyText)")
            }
        }
    }
}
