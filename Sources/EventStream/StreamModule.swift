import EventInterface
import Logging
import NIOPosix

/// `event_stream`: the `tcp:` transport (JSON-RPC over a persistent TCP connection).
public struct StreamModule: EventModule {
    public static let name = "event_stream"
    public let options: StreamOptions

    public init(options: StreamOptions = StreamOptions()) {
        self.options = options
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = StreamOptions()
        for entry in try section.entries(key: prefix, known: ["reliable_mode", "timeout", "event_param"]) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "reliable_mode": options.reliableMode = try entry.value.boolean(key: key)
            case "timeout": options.timeout = try entry.value.milliseconds(key: key)
            default: options.eventParam = try entry.value.optionalString(key: key)  // event_param
            }
        }
        self.init(options: options)
    }

    public static var defaultSection: [String] {
        let options = StreamOptions()
        return [
            "reliable_mode: \(options.reliableMode)  # true: JSON-RPC requests, success only on a reply without error",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms: connect, write and reply",
            "event_param: null  # e.g. event: adds {\"event\":\"E_X\"} first to the params",
        ]
    }

    public var transports: [any EventTransport] { [StreamTransport(options: options)] }

    /// `tcp:` (the peer of OpenSIPS' event_stream) and `evapi:` (a client of Kamailio's evapi).
    public static let ingressSchemes = ["tcp", "evapi"]

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        if settings.socket.hasPrefix("evapi:") {
            return try await EvapiIngress(
                settings: settings, sink: sink, group: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "evi"))
        }
        return try await StreamIngress.start(
            settings: settings, sink: sink, group: MultiThreadedEventLoopGroup.singleton)
    }
}
