import EventInterface

/// `event_datagram`: the `udp:` and `unix:` transports.
public struct DatagramModule: EventModule {
    public static let name = "event_datagram"
    /// Where unix sockets may point (`allowed_dirs`), or nil: anywhere.
    public let unixAllowedDirs: [String]?

    public init(unixAllowedDirs: [String]? = nil) {
        self.unixAllowedDirs = unixAllowedDirs
        transports = [UDPTransport(), UnixTransport(allowedDirs: unixAllowedDirs)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var allowed: [String]?
        for entry in try section.entries(key: prefix, known: ["allowed_dirs"]) {
            let key = "\(prefix).\(entry.key)"
            allowed = try entry.value.optionalStrings(key: key)
            for directory in allowed ?? [] where !directory.hasPrefix("/") {
                throw ConfigurationError("\(key): entries must be absolute: \(directory)")
            }
        }
        self.init(unixAllowedDirs: allowed)
    }

    public static let defaultSection = [
        "allowed_dirs: null  # e.g. [/run/evi]: where unix sockets may point; required for unix over an exposed MI"
    ]

    public let transports: [any EventTransport]

    public static let ingressSchemes = ["udp", "unix"]

    /// Both listen here: a udp ingress off loopback needs `allowed_sources`.
    public static func localListener(_ settings: IngressSettings, key: String) throws(ConfigurationError)
        -> LocalListener?
    {
        let (scheme, rest) = settings.schemeAndRest
        if scheme == "unix" { return .unixPath(rest) }
        return .network(try ListenAddress.parse(rest, key: "\(key).socket"), offLoopbackNeeds: "allowed_sources")
    }

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        try DatagramIngress(settings: settings, sink: sink)
    }

    public func refusalOverExposedMI(_ socket: any EventSocket) -> String? {
        guard socket.scheme == "unix", unixAllowedDirs == nil else { return nil }
        return "unix subscriptions over MI need event_datagram.allowed_dirs when MI is not on loopback"
    }
}
