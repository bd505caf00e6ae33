import EventInterface
import Logging

/// `event_kafka`: the `kafka:` transport (librdkafka producer, loaded at run time).
public struct KafkaModule: EventModule {
    public static let name = "event_kafka"
    public let options: KafkaOptions

    public init(options: KafkaOptions = KafkaOptions()) {
        self.options = options
        transports = [KafkaTransport(options: options)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = KafkaOptions()
        for entry in try section.entries(key: prefix, known: ["timeout"]) {
            options.timeout = try entry.value.milliseconds(key: "\(prefix).\(entry.key)", range: 1...3_600_000)
        }
        self.init(options: options)
    }

    public static var defaultSection: [String] {
        [
            "timeout: \(KafkaOptions().timeout.components.seconds * 1000)  # ms a message may wait for its delivery report (message.timeout.ms)"
        ]
    }

    public let transports: [any EventTransport]

    public static let ingressSchemes = ["kafka"]

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        try KafkaIngress(settings: settings, sink: sink, logger: Logger(label: "evi"))
    }
}
