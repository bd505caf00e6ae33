import EventInterface
import EventNIOSupport

/// SendMessageBatch without I/O: the request body for some entries, and what a reply means for
/// each of them. Pure, so the mapping of every kind of reply is tested without a server.
enum SQSBatch {
    struct Entry: Sendable {
        /// The event's place in the delivery batch (and its `Id` in the request).
        var index: Int
        var body: [UInt8]
        var groupID: String?
        var deduplicationID: String?

        init(index: Int, body: [UInt8], groupID: String? = nil, deduplicationID: String? = nil) {
            self.index = index
            self.body = body
            self.groupID = groupID
            self.deduplicationID = deduplicationID
        }
    }

    enum Verdict: Equatable {
        case delivered
        case failed(String)
        /// Throttled, a 5xx or a failure on the service's side: worth sending again.
        case retry(String)
    }

    /// `entries` cut into requests of at most `count` entries and `bytes` of bodies.
    static func split(_ entries: [Entry], count: Int, bytes: Int) -> [[Entry]] {
        var batches: [[Entry]] = []
        var current: [Entry] = []
        var size = 0
        for entry in entries {
            if !current.isEmpty, current.count == count || size + entry.body.count > bytes {
                batches.append(current)
                current = []
                size = 0
            }
            current.append(entry)
            size += entry.body.count
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// `{"QueueUrl":…,"Entries":[{"Id":"0","MessageBody":…},…]}`.
    static func body(_ entries: [Entry], queueURL: String) -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 256 + entries.reduce(0) { $0 + $1.body.count * 2 })
        writer.append(raw: "{\"QueueUrl\":")
        writer.append(string: queueURL)
        writer.append(raw: ",\"Entries\":[")
        for (position, entry) in entries.enumerated() {
            if position > 0 { writer.append(raw: ",") }
            writer.append(raw: "{\"Id\":")
            writer.append(string: String(entry.index))
            writer.append(raw: ",\"MessageBody\":")
            writer.append(string: String(decoding: entry.body, as: UTF8.self))
            if let group = entry.groupID {
                writer.append(raw: ",\"MessageGroupId\":")
                writer.append(string: group)
            }
            if let deduplication = entry.deduplicationID {
                writer.append(raw: ",\"MessageDeduplicationId\":")
                writer.append(string: deduplication)
            }
            writer.append(raw: "}")
        }
        writer.append(raw: "]}")
        return writer.bytes
    }

    /// Error types that mean "slow down", in the JSON protocol's `__type` (with or without the
    /// `com.amazonaws.sqs#` prefix) or the query protocol's code.
    static let throttling: Set<String> = [
        "ThrottlingException", "Throttling", "RequestThrottled", "AWS.SimpleQueueService.RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException", "KmsThrottled",
    ]

    /// What `reply` means for each entry of `batch`, in order.
    static func verdicts(for batch: [Entry], reply result: Result<HTTPReply, DeliveryFailure>) -> [Verdict] {
        let reply: HTTPReply
        switch result {
        case .failure(let failure): return Array(repeating: .failed(failure.reason), count: batch.count)
        case .success(let got): reply = got
        }
        let json = try? EventValue(jsonBytes: reply.body)
        guard reply.status == 200 else {
            let (type, message) = error(json)
            let reason = "HTTP \(reply.status)" + (type.map { " \($0)" } ?? "") + (message.map { ": \($0)" } ?? "")
            let retry = reply.status >= 500 || reply.status == 429 || type.map { throttling.contains($0) } == true
            return Array(repeating: retry ? .retry(reason) : .failed(reason), count: batch.count)
        }
        guard case .object(let fields)? = json else {
            return Array(repeating: .failed("HTTP 200 without a SendMessageBatch result"), count: batch.count)
        }
        var verdicts: [String: Verdict] = [:]
        for field in fields {
            guard case .array(let items) = field.value else { continue }
            for case .object(let entry) in items {
                guard case .string(let id)? = entry.first(where: { $0.name == "Id" })?.value else { continue }
                switch field.name {
                case "Successful": verdicts[id] = .delivered
                case "Failed":
                    let code = text(entry, "Code") ?? "failed"
                    let reason = "SQS \(code)" + (text(entry, "Message").map { ": \($0)" } ?? "")
                    // SenderFault false: the service failed, not the message.
                    if case .bool(false)? = entry.first(where: { $0.name == "SenderFault" })?.value {
                        verdicts[id] = .retry(reason)
                    } else {
                        verdicts[id] = throttling.contains(code) ? .retry(reason) : .failed(reason)
                    }
                default: break
                }
            }
        }
        return batch.map { verdicts[String($0.index)] ?? .failed("SQS reply does not mention this entry") }
    }

    static func text(_ fields: [EventField], _ name: String) -> String? {
        if case .string(let value)? = fields.first(where: { $0.name == name })?.value { return value }
        return nil
    }

    /// The error's type (without its namespace) and message, from a JSON protocol error body.
    static func error(_ json: EventValue?) -> (type: String?, message: String?) {
        guard case .object(let fields)? = json else { return (nil, nil) }
        let type = (text(fields, "__type") ?? text(fields, "code")).map { type in
            String(type[(type.lastIndex(of: "#").map { type.index(after: $0) } ?? type.startIndex)...])
        }
        let message = text(fields, "message") ?? text(fields, "Message")
        return (type, message.map { String($0.prefix(300)) })
    }
}
