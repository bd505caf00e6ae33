import EventInterface
import EventNIOSupport

/// `sqs:QUEUE_URL[?group_id=CONST | ?group_param=NAME]` (OpenSIPS' syntax; the query is evi's, for
/// FIFO queues, and is not part of the URL sent).
public struct SQSAddress: Sendable, Hashable, CustomStringConvertible {
    /// Where a FIFO message's `MessageGroupId` comes from.
    public enum MessageGroup: Sendable, Hashable {
        case constant(String)
        case parameter(String)
    }

    /// The queue URL, without evi's query.
    public var url: HTTPURL
    public var group: MessageGroup?
    /// The region named by the host, if it names one.
    public var regionInHost: String?

    public var isFIFO: Bool { url.path.hasSuffix(".fifo") }
    public var queueURL: String { url.description }

    public var description: String {
        switch group {
        case nil: "sqs:\(queueURL)"
        case .constant(let value)?: "sqs:\(queueURL)?group_id=\(value)"
        case .parameter(let name)?: "sqs:\(queueURL)?group_param=\(name)"
        }
    }

    /// Parses what follows `sqs:`.
    public static func parse(_ address: String) throws(SocketError) -> SQSAddress {
        let socket = "sqs:" + address
        var text = Substring(address)
        var group: MessageGroup?
        if let question = text.firstIndex(of: "?") {
            let query = text[text.index(after: question)...]
            text = text[..<question]
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[1].isEmpty else {
                    throw SocketError("sqs query wants NAME=VALUE, got '\(pair)': \(socket)")
                }
                guard group == nil else {
                    throw SocketError("sqs socket takes one of group_id, group_param: \(socket)")
                }
                switch parts[0] {
                case "group_id": group = .constant(String(parts[1]))
                case "group_param": group = .parameter(String(parts[1]))
                default:
                    throw SocketError("unknown sqs option '\(parts[0])' (group_id, group_param): \(socket)")
                }
            }
        }
        let url = try HTTPURL.parse(String(text), socket: socket)
        // A queue URL is /ACCOUNT/QUEUE: anything else would be sent to the service's root or to a
        // queue that cannot exist.
        let segments = url.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard segments.count == 2, segments.allSatisfy({ !$0.isEmpty }) else {
            throw SocketError("sqs socket needs a queue URL ending in /ACCOUNT/QUEUE: \(socket)")
        }
        guard url.target == String(url.path) else {
            throw SocketError("a queue URL has no query of its own: \(socket)")
        }
        var address = SQSAddress(url: url, group: group, regionInHost: Self.region(ofHost: url.hostPort.host))
        if address.isFIFO, group == nil {
            throw SocketError(
                "a FIFO queue needs a message group: add ?group_id=CONST or ?group_param=NAME: \(socket)")
        }
        if case .constant(let value)? = group, value.utf8.count > 128 {
            throw SocketError("group_id longer than 128 characters: \(socket)")
        }
        address.url = url
        return address
    }

    /// `sqs.REGION.amazonaws.com[.cn]` or `REGION.queue.amazonaws.com`.
    static func region(ofHost host: String) -> String? {
        let labels = host.lowercased().split(separator: ".")
        if labels.count >= 4, labels[0] == "sqs", labels[2] == "amazonaws" { return String(labels[1]) }
        if labels.count >= 4, labels[1] == "queue", labels[2] == "amazonaws" { return String(labels[0]) }
        return nil
    }
}
