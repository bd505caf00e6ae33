import EventInterface

/// `event_xmlrpc`: the `xmlrpc:` transport.
public struct XMLRPCModule: EventModule {
    public static let name = "event_xmlrpc"
    public let options: XMLRPCOptions

    public init(options: XMLRPCOptions = XMLRPCOptions()) {
        self.options = options
        transports = [XMLRPCTransport(options: options)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = XMLRPCOptions()
        for entry in try section.entries(key: prefix, known: ["use_struct_param", "timeout"]) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "use_struct_param": options.useStructParam = try entry.value.boolean(key: key)
            default: options.timeout = try entry.value.milliseconds(key: key)  // timeout
            }
        }
        self.init(options: options)
    }

    public static var defaultSection: [String] {
        let options = XMLRPCOptions()
        return [
            "use_struct_param: \(options.useStructParam)  # true: named params as one <struct> (standard peers)",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms",
        ]
    }

    public let transports: [any EventTransport]
}
