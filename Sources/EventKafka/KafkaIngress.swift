import CKafka
import EventInterface
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Takes events in from a Kafka topic as a member of a consumer group:
/// `kafka:BROKERS/TOPIC?group=GROUP[&g.NAME=VALUE…]`. Several evi daemons in one group split the
/// topic's partitions, and Kafka's rebalancing gives a daemon that died's partitions to the others.
///
/// An offset is stored (and committed by librdkafka within a second) only past records whose
/// events are settled — every subscriber's final outcome in memory mode, the spool write in
/// durable mode — in order per partition (``KafkaOffsets``), so a record whose event evi had not
/// finished with is read again after a crash or a rebalance (at-least-once). A record that can
/// never be accepted (not JSON, an unknown event) is counted and passed over — Kafka has no
/// reject. At most `prefetch` records are unsettled at once; past that, reading waits.
public final class KafkaIngress: EventIngress {
    public let socket: String
    private let consumer: UnsafeSendable<UnsafeMutableRawPointer>
    private let topic: String
    private let offsets = Mutex(KafkaOffsets())
    private let running = Atomic<Bool>(true)
    private let stopped = CompletionSignal()

    public var connections: Int { running.load(ordering: .relaxed) ? 1 : 0 }

    /// How long closing waits for taken records to settle, their offsets stored, before it leaves.
    static let closeGrace = Duration.seconds(5)

    public init(settings: IngressSettings, sink: IngressSink, logger: Logger) throws(SocketError) {
        guard settings.socket.hasPrefix("kafka:") else { throw SocketError("not a kafka socket: \(settings.socket)") }
        let address = try KafkaAddress.parse(String(settings.socket.dropFirst("kafka:".count)))
        guard let group = address.group else {
            throw SocketError("a kafka ingress needs ?group=GROUP (its consumer group): \(address.description)")
        }
        guard address.keyParam == nil, address.topicProperties.isEmpty else {
            throw SocketError("a kafka ingress takes group= and g. properties only: \(address.description)")
        }
        try address.checkWithLibrary()
        socket = address.description
        topic = address.topic
        // Offsets are evi's to store; librdkafka commits what is stored every second. A group new
        // to the topic starts at its beginning (g.auto.offset.reset=latest to start at its end).
        var properties: [(String, String)] = [
            ("bootstrap.servers", address.bootstrapServers), ("group.id", group),
            ("enable.auto.offset.store", "false"), ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"), ("auto.offset.reset", "earliest"),
        ]
        for property in address.global {
            properties.removeAll { $0.0 == property.name }
            properties.append((property.name, property.value))
        }
        var error = [CChar](repeating: 0, count: 512)
        let made = withCStrings(properties.map(\.0)) { names in
            withCStrings(properties.map(\.1)) { values in
                evi_kafka_consumer_new(names, values, Int32(properties.count), address.topic, &error, error.count)
            }
        }
        guard let made else {
            throw SocketError(
                "kafka consumer: \(KafkaProducer.text(error))"
            )
        }
        consumer = UnsafeSendable(made)
        let limit = settings.prefetch
        detachThread { [self] in
            poll(sink: sink, limit: limit, logger: logger)
            stopped.signal()
        }
    }

    private func poll(sink: IngressSink, limit: Int, logger: Logger) {
        var record = evi_kafka_record()
        while running.load(ordering: .relaxed) {
            if offsets.withLock({ $0.unsettled }) >= limit {
                usleep(1000)
                continue
            }
            guard evi_kafka_consumer_poll(consumer.value, 100, &record) == 1 else { continue }
            defer { evi_kafka_record_destroy(record.message) }
            if record.error != 0 {
                if record.error != -191 {  // the end of a partition is no error
                    logger.warning(
                        "kafka ingress",
                        metadata: [
                            "ingress": "\(socket)", "reason": "\(KafkaProducer.failure(code: record.error).reason)",
                        ])
                }
                continue
            }
            let partition = Int32(record.partition)
            let offset = Int64(record.offset)
            let bytes = record.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: record.length)) } ?? []
            offsets.withLock { $0.received(partition: partition, offset: offset) }
            let settle: @Sendable () -> Void = { [self] in
                guard let next = offsets.withLock({ $0.settled(partition: partition, offset: offset) }) else { return }
                let result = evi_kafka_store_offset(consumer.value, topic, partition, next)
                if result != 0 {
                    logger.debug(
                        "kafka ingress: offset not stored",
                        metadata: [
                            "partition": "\(partition)", "offset": "\(next)",
                            "reason": "\(KafkaProducer.failure(code: result).reason)",
                        ])
                }
            }
            if case .failure = sink.accept(bytes, onSettled: settle) { settle() }  // counted, passed over
        }
    }

    /// Stops reading, gives what was taken up to ``closeGrace`` to settle (its offsets stored),
    /// then commits and leaves the group (the others take the partitions).
    public func close() async {
        guard running.exchange(false, ordering: .relaxed) else { return }
        _ = await stopped.wait(timeout: .seconds(2))
        let deadline = ContinuousClock.now + Self.closeGrace
        while offsets.withLock({ $0.unsettled }) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let consumer = self.consumer
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            detachThread {
                evi_kafka_consumer_close(consumer.value)
                continuation.resume()
            }
        }
    }
}
