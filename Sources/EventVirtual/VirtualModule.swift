import EventInterface

/// `event_virtual`: the `virtual:` socket and its policies.
public struct VirtualModule: EventModule {
    public static let name = "event_virtual"
    /// Seconds a failed FAILOVER (or ROUND-ROBIN) member is skipped.
    public let failoverTimeout: Double

    public init(failoverTimeout: Double = 30) {
        self.failoverTimeout = failoverTimeout
        transports = [VirtualTransport(failoverTimeout: failoverTimeout)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var timeout = 30.0
        for entry in try section.entries(key: prefix, known: ["failover_timeout"]) {
            timeout = try entry.value.number(key: "\(prefix).\(entry.key)", range: 0...86_400)
        }
        self.init(failoverTimeout: timeout)
    }

    public static var defaultSection: [String] {
        let seconds = VirtualModule().failoverTimeout
        return ["failover_timeout: \(Int(seconds))  # seconds a failed FAILOVER member is skipped"]
    }

    public let transports: [any EventTransport]
}
