import CKafka
import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One librdkafka producer, shared by every subscription with the same brokers and global
/// properties: its topic handles, the thread that serves its delivery reports, and the messages
/// waiting for theirs.
///
/// Success is librdkafka's delivery report (acknowledged as the `acks` property says); failure a
/// report with an error — the message timeout (`message.timeout.ms`, from `event_kafka.timeout`
/// unless the socket sets it) included — or a refusal at once (local queue full).
final class KafkaProducer: Sendable {
    let key: Key
    /// The librdkafka handle: thread-safe by librdkafka's contract.
    private let handle: UnsafeSendable<UnsafeMutableRawPointer>
    private let topics = Mutex<[TopicKey: UnsafeSendable<UnsafeMutableRawPointer>]>([:])
    private let running = Atomic<Bool>(true)
    private let stopped = CompletionSignal()

    struct Key: Hashable, Sendable {
        var brokers: String
        var global: [KafkaAddress.Property]
    }

    struct TopicKey: Hashable, Sendable {
        var topic: String
        var properties: [KafkaAddress.Property]
    }

    /// Creates the producer (librdkafka starts connecting to the brokers now).
    init(key: Key, timeout: Duration) throws(SocketError) {
        try KafkaLibrary.load()
        self.key = key
        var properties = [("bootstrap.servers", key.brokers)]
        if !key.global.contains(where: { $0.name == "message.timeout.ms" }) {
            properties.append(
                (
                    "message.timeout.ms",
                    String(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
                ))
        }
        // evi hands librdkafka a delivery batch and waits for its reports before the next: a long
        // linger (librdkafka's 5 ms) delays every batch, none (0) sends each record alone.
        // `evi bench --scenario kafka`, mock cluster: 5 ms 48,430 events/s, 0 ms 7,956/s,
        // 1 ms 199,073/s. A socket's g.linger.ms wins.
        if !key.global.contains(where: { $0.name == "linger.ms" || $0.name == "queue.buffering.max.ms" }) {
            properties.append(("linger.ms", "1"))
        }
        properties += key.global.map { ($0.name, $0.value) }
        var error = [CChar](repeating: 0, count: 512)
        let made = withCStrings(properties.map(\.0)) { names in
            withCStrings(properties.map(\.1)) { values in
                evi_kafka_producer_new(names, values, Int32(properties.count), kafkaReport, nil, &error, error.count)
            }
        }
        guard let made else { throw SocketError("kafka producer for \(key.brokers): \(Self.text(error))") }
        handle = UnsafeSendable(made)
        let poller = handle
        detachThread { [self] in
            while running.load(ordering: .relaxed) { _ = evi_kafka_poll(poller.value, 100) }
            stopped.signal()
        }
    }

    /// The topic handle for `topic` with these topic properties, made on first use.
    private func topicHandle(_ key: TopicKey) -> Result<UnsafeSendable<UnsafeMutableRawPointer>, DeliveryFailure> {
        topics.withLock { topics in
            if let handle = topics[key] { return .success(handle) }
            var error = [CChar](repeating: 0, count: 512)
            let made = withCStrings(key.properties.map(\.name)) { names in
                withCStrings(key.properties.map(\.value)) { values in
                    evi_kafka_topic_new(
                        handle.value, key.topic, names, values, Int32(key.properties.count), &error, error.count)
                }
            }
            guard let made else {
                return .failure(DeliveryFailure(.subscriberFailed, "kafka topic: \(Self.text(error))"))
            }
            topics[key] = UnsafeSendable(made)
            return .success(UnsafeSendable(made))
        }
    }

    /// Produces `payloads` (with their keys) to the topic and waits for every delivery report.
    func produce(_ messages: [(payload: [UInt8], key: [UInt8]?)], to topic: TopicKey) async -> [DeliveryOutcome] {
        let handle: UnsafeMutableRawPointer
        switch topicHandle(topic) {
        case .success(let made): handle = made.value
        case .failure(let failure): return Array(repeating: .failed(failure), count: messages.count)
        }
        return await withCheckedContinuation { continuation in
            let batch = ReportBatch(count: messages.count, continuation: continuation)
            for (index, message) in messages.enumerated() {
                let ticket = Unmanaged.passRetained(ReportTicket(batch: batch, index: index)).toOpaque()
                let refused = message.payload.withUnsafeBytes { payload in
                    (message.key ?? []).withUnsafeBytes { key in
                        evi_kafka_produce(
                            handle, payload.baseAddress, payload.count, message.key == nil ? nil : key.baseAddress,
                            key.count, ticket)
                    }
                }
                if refused != 0 {
                    Unmanaged<ReportTicket>.fromOpaque(ticket).release()
                    batch.complete(index, .failed(Self.failure(code: refused)))
                }
            }
        }
    }

    static func failure(code: Int32, text: String? = nil) -> DeliveryFailure {
        let reason = text ?? String(cString: evi_kafka_error_text(code))
        return DeliveryFailure(.subscriberFailed, code == -184 ? "queue full (kafka): \(reason)" : "kafka: \(reason)")
    }

    /// Waits up to a second for what is in flight, then destroys the producer.
    func close() async {
        running.store(false, ordering: .relaxed)
        _ = await stopped.wait(timeout: .seconds(2))
        for topic in topics.withLock({ Array($0.values) }) { evi_kafka_topic_destroy(topic.value) }
        let handle = self.handle
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            detachThread {
                evi_kafka_producer_destroy(handle.value, 1000)
                continuation.resume()
            }
        }
    }

    /// The text the C shim wrote into `buffer` (up to its NUL).
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The delivery reports of one produced batch, collected until the last one resumes its waiter.
final class ReportBatch: Sendable {
    private struct State {
        var outcomes: [DeliveryOutcome]
        var remaining: Int
    }
    private let state: Mutex<State>
    private let continuation: CheckedContinuation<[DeliveryOutcome], Never>

    init(count: Int, continuation: CheckedContinuation<[DeliveryOutcome], Never>) {
        state = Mutex(State(outcomes: Array(repeating: .delivered, count: count), remaining: count))
        self.continuation = continuation
    }

    func complete(_ index: Int, _ outcome: DeliveryOutcome) {
        let done = state.withLock { state -> [DeliveryOutcome]? in
            state.outcomes[index] = outcome
            state.remaining -= 1
            return state.remaining == 0 ? state.outcomes : nil
        }
        if let done { continuation.resume(returning: done) }
    }
}

/// One message's place in its batch: the `opaque` librdkafka hands back with its report.
final class ReportTicket: Sendable {
    let batch: ReportBatch
    let index: Int
    init(batch: ReportBatch, index: Int) {
        self.batch = batch
        self.index = index
    }
}

/// librdkafka's delivery report, on the producer's poll thread.
private let kafkaReport: evi_kafka_report_fn = { _, opaque, error, text in
    guard let opaque else { return }
    let ticket = Unmanaged<ReportTicket>.fromOpaque(opaque).takeRetainedValue()
    let outcome: DeliveryOutcome =
        error == 0
        ? .delivered : .failed(KafkaProducer.failure(code: error, text: text.map { String(cString: $0) }))
    ticket.batch.complete(ticket.index, outcome)
}

/// A pointer handed to a thread of ours; only that thread (or, after it stopped, the closer) uses it.
struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// `strings` as a C array of C strings for the duration of `body`.
func withCStrings<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> Result) -> Result {
    let duplicated = strings.map { strdup($0) }
    defer { for pointer in duplicated { free(pointer) } }
    // A trailing nil, so that the array (and its base address) exists even for no strings.
    let pointers: [UnsafePointer<CChar>?] = duplicated.map { UnsafePointer<CChar>($0) } + [nil]
    return pointers.withUnsafeBufferPointer { buffer in body(buffer.baseAddress.unsafelyUnwrapped) }
}
