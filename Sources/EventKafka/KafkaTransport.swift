import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The `event_kafka` module options.
public struct KafkaOptions: Sendable, Hashable {
    /// librdkafka's `message.timeout.ms` unless a socket sets it: how long a message may wait for
    /// its delivery report (librdkafka's own default, 300 s, would hold a FAILOVER five minutes).
    public var timeout: Duration = .milliseconds(5000)

    public init(timeout: Duration = .milliseconds(5000)) { self.timeout = timeout }
}

/// `kafka:BROKERS/TOPIC[?PROPERTIES]`: produces the JSON-RPC notification to a topic through
/// librdkafka (loaded at run time), one producer per broker list and global properties.
public final class KafkaTransport: EventTransport {
    public let options: KafkaOptions
    private let producers = SharedResources<KafkaProducer.Key, ProducerSlot>()

    public init(options: KafkaOptions = KafkaOptions()) { self.options = options }

    public var scheme: String { "kafka" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let parsed = try KafkaAddress.parse(address)
        guard parsed.group == nil else {
            throw SocketError("group= names an ingress's consumer group; a subscriber has none: \(parsed.description)")
        }
        try parsed.checkWithLibrary()
        // Every broker is a destination: allowed_destinations and evi's own addresses apply.
        for broker in parsed.brokers {
            _ = try await context.resolve(broker, socketType: Int32(SOCK_STREAM.rawValue), socket: parsed.description)
        }
        return KafkaSocket(address: parsed, transport: self)
    }

    /// The producer for `key`, shared; made on the first delivery (subscribing connects to nothing).
    func retainProducer(_ key: KafkaProducer.Key) -> ProducerSlot {
        producers.retain(key) { ProducerSlot(key: key, timeout: options.timeout) }
    }

    func releaseProducer(_ key: KafkaProducer.Key) async {
        await producers.release(key)?.close()
    }
}

/// A producer made on first use, so that subscribing never connects.
final class ProducerSlot: Sendable {
    let key: KafkaProducer.Key
    let timeout: Duration
    private let made = Mutex<Result<KafkaProducer, SocketError>?>(nil)

    init(key: KafkaProducer.Key, timeout: Duration) {
        self.key = key
        self.timeout = timeout
    }

    var producer: Result<KafkaProducer, SocketError> {
        made.withLock { made in
            if let made { return made }
            let result: Result<KafkaProducer, SocketError>
            do throws(SocketError) { result = .success(try KafkaProducer(key: key, timeout: timeout)) } catch {
                result = .failure(error)
            }
            made = result
            return result
        }
    }

    func close() async {
        if case .success(let producer)? = made.withLock({ $0 }) { await producer.close() }
    }
}

public struct KafkaSocket: DeliverySocket {
    let address: KafkaAddress
    let transport: KafkaTransport

    public var scheme: String { "kafka" }
    public var description: String { address.description }
    public var identity: String { address.identity }
    public var secrets: [String] {
        address.global.filter(\.isSecret).map { "the property g.\($0.name) in \(description)" }
            + address.topicProperties.filter(\.isSecret).map { "the property t.\($0.name) in \(description)" }
    }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? KafkaSocket)?.address == address
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        let key = KafkaProducer.Key(brokers: address.bootstrapServers, global: address.global)
        return KafkaDeliverer(
            address: address, slot: transport.retainProducer(key), transport: transport,
            topic: KafkaProducer.TopicKey(topic: address.topic, properties: address.topicProperties))
    }
}

final class KafkaDeliverer: BatchDeliverer {
    let address: KafkaAddress
    let slot: ProducerSlot
    let transport: KafkaTransport
    let topic: KafkaProducer.TopicKey

    init(address: KafkaAddress, slot: ProducerSlot, transport: KafkaTransport, topic: KafkaProducer.TopicKey) {
        self.address = address
        self.slot = slot
        self.transport = transport
        self.topic = topic
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(.jsonRPC)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        switch slot.producer {
        case .failure(let error):
            return Array(repeating: .failed(DeliveryFailure(.subscriberFailed, error.message)), count: events.count)
        case .success(let producer):
            let keyParam = address.keyParam
            return await producer.produce(
                events.map { event in (event.payload(.jsonRPC), keyParam.flatMap { Self.key(event, of: $0) }) },
                to: topic)
        }
    }

    /// The record key: the named parameter's value (a string as it is, anything else as JSON).
    static func key(_ event: RaisedEvent, of parameter: String) -> [UInt8]? {
        guard case .named(let fields) = event.params, let value = fields.first(where: { $0.name == parameter })?.value
        else { return nil }
        if case .string(let text) = value { return Array(text.utf8) }
        var writer = JSONWriter()
        writer.append(value)
        return writer.bytes
    }

    func close() async {
        await transport.releaseProducer(slot.key)
    }
}
