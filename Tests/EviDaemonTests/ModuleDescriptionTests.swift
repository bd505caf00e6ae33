import EventInterface
import EviDaemon
import EviModules
import Testing

/// What the daemon learns from the modules rather than from scheme lists of its own.
@Suite(.serialized) struct ModuleDescriptionTests {
    @Test func aModuleWhoseDefaultsFailStopsStartUpWithTheReason() {
        #expect(
            refusal("", modules: BuiltInModules.all + [BrokenDefaultsModule.self])
                == "modules.event_broken: its defaults cannot be used: the CA bundle cannot be read")
        #expect(throws: ConfigurationError.self) {
            _ = try DaemonConfiguration.annotatedDefaults(modules: [BrokenDefaultsModule.self])
        }
    }

    @Test func aModuleIsBuiltOnceAndItsTransportsKept() throws {
        let before = ProbeModule.built.count
        let configuration = try load("", modules: withProbe)
        let probe = try #require(configuration.modules.compactMap { $0 as? ProbeModule }.first)
        let first = probe.transports.map { ObjectIdentifier($0 as AnyObject) }
        let second = probe.transports.map { ObjectIdentifier($0 as AnyObject) }
        #expect(first == second)
        #expect(ProbeModule.built.count == before + 1)
    }

    @Test func anUnknownModuleSectionSuggestsAndListsTheModules() {
        let message = refusal("modules:\n  event_strem: {}\n")
        #expect(message.contains("unknown module 'modules.event_strem' (did you mean 'event_stream'?)"))
        #expect(message.contains("event_datagram"))
    }

    @Test func aModuleSectionReplacesThatModulesDefaults() throws {
        let configuration = try load("modules:\n  event_probe: {}\n", modules: withProbe)
        #expect(configuration.modules.count == withProbe.count)
        #expect(configuration.modules.map { type(of: $0).name }.last == "event_probe")
    }

    @Test func anIngressIsMatchedToTheModuleOfItsScheme() throws {
        let configuration = try DaemonConfiguration(modules: withProbe)
        #expect(configuration.ingressModule(for: "probe:127.0.0.1:1").map { type(of: $0).name } == "event_probe")
        #expect(configuration.ingressModule(for: "udp:127.0.0.1:1").map { type(of: $0).name } == "event_datagram")
        #expect(configuration.ingressModule(for: "gopher:x") == nil)
        #expect(refusal("ingress: ['gopher:x']\n").contains("'gopher:x' is not an ingress this build has (schemes: "))
    }

    /// The guard the daemon applies to every module's listeners: a new listening ingress is
    /// covered by saying so, not by being added to a list in the daemon.
    @Test func aNewModulesListenerOffLoopbackNeedsAllowedSources() throws {
        #expect(
            refusal("ingress: ['probe:0.0.0.0:7000']\n", modules: withProbe)
                == "ingress[0]: listening on 0.0.0.0:7000, not loopback, requires allowed_sources")
        #expect(try load("ingress: ['probe:127.0.0.1:7000']\n", modules: withProbe).ingress.count == 1)
        let allowed = try load(
            "ingress: [{socket: 'probe:0.0.0.0:7000', allowed_sources: [10.0.0.0/8]}]\n", modules: withProbe)
        #expect(allowed.ingress[0].allowedSources?.count == 1)
    }

    @Test func builtInListenersOffLoopbackNeedAllowedSources() {
        #expect(refusal("ingress: ['udp:0.0.0.0:7000']\n").contains("requires allowed_sources"))
        #expect(refusal("ingress: ['tcp:0.0.0.0:7000']\n").contains("requires allowed_sources"))
        #expect(refusal("ingress: ['udp:127.0.0.1:7000']\n") == "")
        #expect(
            refusal("ingress: [{socket: 'udp:0.0.0.0:7000', allowed_sources: [nowhere]}]\n").contains(
                "'nowhere' is not a CIDR"))
    }

    @Test func ingressOptionsAreRead() throws {
        let configuration = try load(
            "ingress:\n  - {socket: 'tcp:127.0.0.1:0', framing: json, event_param: name, publish_unknown: true}\n")
        let settings = configuration.ingress[0]
        #expect(settings.framing == .json)
        #expect(settings.eventParam == "name")
        #expect(settings.publishUnknown)
        #expect(
            refusal("ingress: [{socket: 'tcp:127.0.0.1:0', framing: xml}]\n").contains("expected netstring or json"))
    }

    @Test func everyBuiltInModuleHasADistinctName() {
        let names = BuiltInModules.all.map { $0.name }
        #expect(Set(names).count == names.count)
        let schemes = BuiltInModules.all.flatMap { $0.ingressSchemes }
        #expect(Set(schemes).count == schemes.count)
    }
}
