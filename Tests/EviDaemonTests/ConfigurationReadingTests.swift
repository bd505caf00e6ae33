import EventInterface
import EviDaemon
import EviModules
import Testing

/// `evi serve --config` reading, in process: every refusal names its key and changes nothing.
@Suite struct ConfigurationReadingTests {
    @Test func anEmptyFileIsTheBuiltInConfiguration() throws {
        let empty = try load("")
        let defaults = try DaemonConfiguration()
        #expect(empty.miHTTP == defaults.miHTTP)
        #expect(empty.miHTTP == ListenAddress(host: "127.0.0.1", port: 8888))
        #expect(empty.miDatagram == ListenAddress(host: "127.0.0.1", port: 8080))
        #expect(empty.state == "./evi-state")
        #expect(empty.queueSize == 10_000)
        #expect(empty.delivery == .memory)
        #expect(empty.modules.map { type(of: $0).name } == BuiltInModules.all.map { $0.name })
    }

    @Test func thePrintedDefaultsReadBackAsTheDefaults() throws {
        let printed = try load(try DaemonConfiguration.annotatedDefaults())
        let defaults = try DaemonConfiguration()
        #expect(printed.miHTTP == defaults.miHTTP)
        #expect(printed.miDatagram == defaults.miDatagram)
        #expect(printed.state == defaults.state)
        #expect(printed.queueSize == defaults.queueSize)
        #expect(printed.queueBytes == defaults.queueBytes)
        #expect(printed.maxEvents == defaults.maxEvents)
        #expect(printed.maxSubscriptions == defaults.maxSubscriptions)
        #expect(printed.shutdownGrace == defaults.shutdownGrace)
        #expect(printed.spool.retryMax == defaults.spool.retryMax)
        #expect(printed.miLimits.maxConnections == defaults.miLimits.maxConnections)
    }

    @Test func everyTopLevelKeyIsPrintedInTheDefaults() throws {
        let printed = try DaemonConfiguration.annotatedDefaults()
        // `cluster:` only means something with a postgres state: Docs/cluster.md describes it.
        for key in DaemonConfiguration.topLevelKeys where key != "cluster" {
            #expect(printed.contains("\(key):"), "\(key)")
        }
    }

    @Test func anUnknownTopLevelKeySuggestsTheClosest() {
        #expect(refusal("quue_size: 5\n").contains("unknown key 'quue_size' (did you mean 'queue_size'?)"))
    }

    @Test func valuesOutOfRangeNameTheirKey() {
        #expect(refusal("queue_size: 0\n").contains("queue_size"))
        #expect(refusal("shutdown_grace: 4000\n").contains("shutdown_grace"))
        #expect(refusal("max_events: many\n").contains("max_events"))
    }

    @Test func miListenersCanBeTurnedOffOrMoved() throws {
        let configuration = try load("mi:\n  http: off\n  datagram: 127.0.0.1:0\n  token: s3cret\n")
        #expect(configuration.miHTTP == nil)
        #expect(configuration.miDatagram == ListenAddress(host: "127.0.0.1", port: 0))
        #expect(configuration.token == "s3cret")
    }

    @Test func aBadListenAddressIsRefused() {
        #expect(refusal("mi:\n  http: nowhere\n").contains("mi.http: expected HOST:PORT or off, got 'nowhere'"))
        #expect(refusal("mi:\n  token: ''\n").contains("mi.token must not be empty"))
    }

    @Test func miLimitsAreRead() throws {
        let configuration = try load(
            "mi:\n  max_connections: 7\n  idle_timeout: 2.5\n  allowed_hosts: [evi.example]\n")
        #expect(configuration.miLimits.maxConnections == 7)
        #expect(configuration.miLimits.idleTimeout == .milliseconds(2500))
        #expect(configuration.miLimits.allowedHosts == ["evi.example"])
        #expect(refusal("mi:\n  allowed_hosts: ['a b']\n").contains("mi.allowed_hosts: 'a b'"))
    }

    @Test func logLevelsAreLoggingsLevels() throws {
        #expect(try load("log_level: debug\n").logLevel == .debug)
        #expect(refusal("log_level: loud\n").contains("expected trace, debug, info"))
    }

    @Test func eventsMayCarryTheirDelivery() throws {
        let configuration = try load("events: [E_A, {name: E_B, delivery: durable}]\nstate: memory\n")
        #expect(configuration.events == ["E_A", "E_B"])
        #expect(configuration.eventDelivery == ["E_B": .durable])
        #expect(configuration.usesDurableDelivery)
        #expect(refusal("events: ['bad name']\n").contains("events: invalid event name 'bad name'"))
        #expect(refusal("events: [{delivery: durable}]\n").contains("events[0]: missing key 'name'"))
    }

    @Test func subscriptionsNeedAnEventAndASocket() throws {
        let configuration = try load(
            "subscriptions:\n  - {event: E_A, socket: 'udp:127.0.0.1:9', expire: 60, delivery: durable}\n")
        #expect(configuration.subscriptions.count == 1)
        #expect(configuration.subscriptions[0].socket == "udp:127.0.0.1:9")
        #expect(configuration.subscriptions[0].expire == 60)
        #expect(configuration.subscriptions[0].delivery == .durable)
        #expect(
            refusal("subscriptions: [{socket: 'udp:127.0.0.1:9'}]\n").contains("subscriptions[0]: missing key 'event'"))
        #expect(refusal("subscriptions: [{event: E_A}]\n").contains("subscriptions[0]: missing key 'socket'"))
        #expect(refusal("subscriptions: [{event: E_A, socket: x, expire: 0}]\n").contains("subscriptions[0].expire"))
    }

    @Test func aSubscriptionKeyNoModuleDefinesIsRefused() {
        #expect(refusal("subscriptions: [{event: E_A, socket: 'udp:127.0.0.1:9', colour: red}]\n").contains("colour"))
    }

    @Test func theWebhookSecretIsAKeyOfTheWebhookModule() throws {
        let yaml = """
            subscriptions:
              - event: E_A
                socket: https://127.0.0.1:9/hook
                secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
            """
        let configuration = try load(yaml)
        #expect(configuration.subscriptions[0].moduleKeys.map(\.key) == ["secret"])
        #expect(refusal(yaml.replacingOccurrences("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "short")) != "")
    }

    @Test func aModulesSubscriptionKeyIsHandedToThatModule() throws {
        let configuration = try load(
            "subscriptions: [{event: E_A, socket: 'probe:1', colour: red}]\n", modules: withProbe)
        let probe = try #require(configuration.modules.compactMap { $0 as? ProbeModule }.first)
        #expect(probe.colours.all == ["probe:1=red"])
    }

    @Test func spoolKeysAreReadAndCheckedTogether() throws {
        let configuration = try load("spool:\n  dir: /tmp/x\n  retry_min: 2\n  retry_max: 30\n  fsync: always\n")
        #expect(configuration.spool.dir == "/tmp/x")
        #expect(configuration.spool.retryMin == 2)
        #expect(configuration.spool.fsyncAlways)
        #expect(
            refusal("spool:\n  retry_min: 10\n  retry_max: 5\n").contains(
                "spool.retry_max (5.0) is less than spool.retry_min (10.0)"))
        #expect(refusal("spool:\n  fsync: sometimes\n").contains("expected interval or always"))
    }

    @Test func theSpoolLivesBesideTheStateUnlessMoved() throws {
        #expect(try load("state: /var/lib/evi\n").spoolDirectory == "/var/lib/evi/spool")
        #expect(try load("state: memory\n").spoolDirectory == nil)
        #expect(try load("state: memory\nspool: {dir: /srv/spool}\n").spoolDirectory == "/srv/spool")
    }

    @Test func relativeStateIsResolvedAgainstADirectory() {
        #expect(DaemonConfiguration.resolve(state: "./here/state", relativeTo: "/etc/evi") == "/etc/evi/here/state")
        #expect(DaemonConfiguration.resolve(state: "/abs", relativeTo: "/etc/evi") == "/abs")
        #expect(DaemonConfiguration.resolve(state: "memory", relativeTo: "/etc/evi") == "memory")
        #expect(DaemonConfiguration.resolve(state: "../up", relativeTo: "/etc/evi") == "/etc/up")
    }

    @Test func aPostgresStateIsParsedAndPrintedWithoutItsPassword() throws {
        let configuration = try load("state: postgres://evi:pw@127.0.0.1:5432/evi\ncluster: {node: n1}\n")
        #expect(configuration.postgres != nil)
        #expect(configuration.clusterNode == "n1")
        #expect(!configuration.printedState.contains("pw"))
        #expect(configuration.spoolDirectory == nil)
        #expect(configuration.storeSecrets == .refuse)
        #expect(configuration.postgres?.tls.mode == .prefer)
    }

    @Test func storeSecretsIsRefuseOrPlaintext() throws {
        let url = "state: postgres://evi@127.0.0.1/evi?sslmode=verify-full\n"
        #expect(try load(url + "cluster: {store_secrets: plaintext}\n").storeSecrets == .plaintext)
        #expect(try load(url).postgres?.tls.mode == .verifyFull)
        #expect(
            refusal(url + "cluster: {store_secrets: sometimes}\n")
                .contains("cluster.store_secrets: expected refuse or plaintext, got 'sometimes'"))
        #expect(refusal("state: postgres://evi@127.0.0.1/evi?sslmode=allow\n").contains("use prefer"))
    }

    @Test func allowedDestinationsAreNetworks() throws {
        #expect(try load("allowed_destinations: [127.0.0.0/8]\n").allowedDestinations?.count == 1)
        #expect(refusal("allowed_destinations: [somewhere]\n").contains("'somewhere' is not a CIDR"))
    }

    @Test func invalidYAMLIsRefusedAsSuch() {
        #expect(refusal("mi: [\n").hasPrefix("not valid YAML"))
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
