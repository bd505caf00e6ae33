import EventInterface
import Logging
import NIOPosix

/// `event_rabbitmq`: the `rabbitmq:` transport (AMQP 0-9-1 publishes with confirms) and ingress
/// (a queue consumed with manual acknowledgements).
public struct RabbitMQModule: EventModule {
    public static let name = "event_rabbitmq"
    public let options: RabbitMQOptions

    public init(options: RabbitMQOptions = RabbitMQOptions()) {
        self.options = options
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = RabbitMQOptions()
        for entry in try section.entries(key: prefix, known: ["heartbeat", "timeout", "mandatory"]) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "heartbeat": options.heartbeat = UInt16(try entry.value.integer(key: key, range: 0...3600))
            case "timeout": options.timeout = try entry.value.milliseconds(key: key)
            default:  // mandatory
                let text = try entry.value.string(key: key)
                guard let mandatory = RabbitMQOptions.Mandatory(rawValue: text.lowercased()) else {
                    throw ConfigurationError("\(key): expected auto, true or false, got '\(text)'")
                }
                options.mandatory = mandatory
            }
        }
        self.init(options: options)
    }

    public static var defaultSection: [String] {
        let options = RabbitMQOptions()
        return [
            "heartbeat: \(options.heartbeat)  # seconds; 0: none",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms: connect and publisher confirm",
            "mandatory: \(options.mandatory.rawValue)  # auto: on for the default exchange (an unroutable message fails)",
        ]
    }

    public var transports: [any EventTransport] { [RabbitMQTransport(options: options)] }

    public static let ingressSchemes = ["rabbitmq"]

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        try await RabbitMQIngress(
            settings: settings, sink: sink, options: options, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "evi"))
    }
}
