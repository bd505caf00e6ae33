import EventInterface
import EventInterfaceTestKit
import EviDaemon
import EviModules

/// A module whose defaults cannot be made: start-up must stop naming it, not drop it.
struct BrokenDefaultsModule: EventModule {
    static let name = "event_broken"
    init(section: ConfigurationNode) throws(ConfigurationError) {
        throw ConfigurationError("the CA bundle cannot be read")
    }
    var transports: [any EventTransport] { [] }
}

/// A module that counts how often its transports are built, and listens on `probe:HOST:PORT`
/// (which needs `allowed_sources` off loopback, as udp does) without ever binding.
struct ProbeModule: EventModule {
    static let name = "event_probe"
    static let ingressSchemes = ["probe"]
    static let subscriptionKeys = ["colour"]
    let transports: [any EventTransport]
    let colours = Recorder()

    init(section: ConfigurationNode) throws(ConfigurationError) {
        transports = [TestTransport(scheme: "probe")]
        Self.built.add()
    }

    static let built = Counter()

    static func localListener(_ settings: IngressSettings, key: String) throws(ConfigurationError)
        -> LocalListener?
    {
        .network(try ListenAddress.parse(settings.schemeAndRest.rest, key: key), offLoopbackNeeds: "allowed_sources")
    }

    func applySubscriptionKeys(_ entries: [ConfigurationEntry], socket: String, key: String)
        throws(ConfigurationError)
    {
        for entry in entries { colours.add("\(socket)=\(try entry.value.string(key: "\(key).colour"))") }
    }
}

/// The built-in modules plus the probe.
let withProbe: [any EventModule.Type] = BuiltInModules.all + [ProbeModule.self]

/// Reads a configuration with the built-in modules, the way `evi serve --config` does.
func load(_ yaml: String, modules: [any EventModule.Type] = BuiltInModules.all) throws(ConfigurationError)
    -> DaemonConfiguration
{
    try DaemonConfiguration.load(yaml: yaml, modules: modules)
}

/// The message a configuration is refused with ("" when it is accepted).
func refusal(_ yaml: String, modules: [any EventModule.Type] = BuiltInModules.all) -> String {
    do {
        _ = try load(yaml, modules: modules)
        return ""
    } catch {
        return error.description
    }
}

#if canImport(Glibc)
    import Glibc
#endif

/// Sends one datagram to 127.0.0.1:`port` from a socket of its own.
func sendDatagram(_ bytes: [UInt8], toPort port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
            bytes.withUnsafeBytes {
                sendto(fd, $0.baseAddress, $0.count, 0, raw, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
}
