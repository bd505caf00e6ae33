import EventInterface
import Metrics
import Synchronization

/// The JSON-RPC 2.0 management interface (Docs/mi.md): decodes requests, runs commands, encodes the
/// exact replies. Transport-free: the HTTP and datagram servers hand it bodies.
public final class ManagementInterface: Sendable {
    /// What processing a request body gave.
    public enum Processing: Sendable {
        /// The reply body, or `nil` for a notification (no reply).
        case done([UInt8]?)
        /// A command must wait; the closure gives the reply body (or `nil`).
        case pending(@Sendable () async -> [UInt8]?)
    }

    /// Where a request came from, for access control.
    public enum Origin: Sendable {
        /// HTTP checks the bearer token itself, before the body is read.
        case http
        /// A datagram carries its token as the request member `token`.
        case datagram
    }

    /// Required on every request when set (`mi.token`).
    public let token: String?

    /// Where the daemon is in its life, for `GET /ready` and for refusing requests while it drains.
    public enum Readiness: UInt8, Sendable {
        /// Listeners bound, state not yet restored: `/ready` is 503.
        case starting
        case ready
        /// Shutting down: queues drain; `/ready` and `/mi` answer 503 until the listeners close.
        case draining
    }
    private let readinessValue = Atomic<UInt8>(Readiness.starting.rawValue)

    public var readiness: Readiness { Readiness(rawValue: readinessValue.load(ordering: .relaxed)) ?? .starting }

    public func markReadiness(_ value: Readiness) {
        readinessValue.store(value.rawValue, ordering: .relaxed)
    }

    /// With a shared state store: whether it is reachable now (`/ready` says so in its body; it
    /// stays 200, since delivery works without it).
    public let stateStoreUp = Mutex<(@Sendable () -> Bool)?>(nil)
    /// With a shared state store: whether this node's connection to it is encrypted now
    /// (`/ready`'s `state_store_tls`).
    public let stateStoreTLS = Mutex<(@Sendable () -> Bool)?>(nil)
    private let commands = Mutex<[String: MICommand]>([:])
    private let ordered = Mutex<[MICommand]>([])
    private let droppedDatagrams: [DatagramDrop: Counter]

    /// Most requests in one batch; a larger batch gets one `-32600` error.
    public static let maximumBatch = 1_000
    /// Most bytes of replies one batch may produce; past it, one `-32600` error instead.
    public static let maximumReplyBytes = 16 << 20

    /// Why a datagram got no reply at all. Over UDP only valid, authorised requests are answered:
    /// a datagram's source can be forged, and answering anything else (another server's reply, a
    /// parse error) lets one spoofed packet start an endless exchange between two MI ports or
    /// reflect traffic at a victim. Counted in `evi_mi_dropped_total{reason}`.
    public enum DatagramDrop: String, Sendable, CaseIterable {
        case parseError = "parse_error"
        /// Not an object or a batch of them, or a JSON-RPC response (`result`/`error`).
        case notARequest = "not_a_request"
        /// An object without `"jsonrpc":"2.0"` and a string `method`, or with an `id` or `params`
        /// of the wrong type, or a batch too large.
        case invalidRequest = "invalid_request"
        /// `mi.token` is set and the request's `token` member is missing or wrong.
        case unauthorized
    }

    public init(token: String? = nil) {
        self.token = token
        var counters: [DatagramDrop: Counter] = [:]
        for reason in DatagramDrop.allCases {
            counters[reason] = Counter(label: "evi_mi_dropped_total", dimensions: [("reason", reason.rawValue)])
        }
        droppedDatagrams = counters
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    public func isToken(_ presented: some Collection<UInt8>) -> Bool {
        guard let token else { return true }
        return constantTimeEquals(Array(token.utf8), presented)
    }

    /// Adds a command under all its names; later registrations of a name win.
    public func register(_ command: MICommand) {
        commands.withLock { table in for name in command.names { table[name] = command } }
        ordered.withLock { $0.append(command) }
    }

    /// Every name answered to, in registration order (3.x names with their legacy names).
    public var commandNames: [String] { ordered.withLock { $0.flatMap(\.names) } }

    public func command(named name: String) -> MICommand? { commands.withLock { $0[name] } }

    // MARK: Requests

    public func process(_ body: [UInt8], origin: Origin) -> Processing {
        let request: EventValue
        do {
            request = try EventValue(jsonBytes: body)
        } catch {
            if origin == .datagram { return drop(.parseError) }
            return .done(Self.reply(id: .null, .failure(.parseError)))
        }
        if origin == .datagram, let reason = screen(request) { return drop(reason) }
        if case .array(let requests) = request {
            guard !requests.isEmpty else { return .done(Self.reply(id: .null, .failure(.invalidRequest))) }
            guard requests.count <= Self.maximumBatch else {
                return .done(
                    Self.reply(
                        id: .null,
                        .failure(
                            MIError(
                                code: -32600, message: "Invalid Request",
                                data: "batch of \(requests.count) requests (max \(Self.maximumBatch))"))))
            }
            let calls = requests.map { prepare($0, origin: origin, inBatch: true) }
            if calls.allSatisfy({ $0.isImmediate }) {
                var replies = BatchReplies()
                for call in calls where !replies.overflowed { replies.append(call.immediateReply) }
                return .done(replies.bytes)
            }
            return .pending {
                var replies = BatchReplies()
                for call in calls where !replies.overflowed { replies.append(await call.run()) }
                return replies.bytes
            }
        }
        let call = prepare(request, origin: origin)
        if call.isImmediate { return .done(call.immediateReply) }
        return .pending { await call.run() }
    }

    private func drop(_ reason: DatagramDrop) -> Processing {
        droppedDatagrams[reason]?.increment()
        return .done(nil)
    }

    /// Why a datagram is not a valid, authorised request (or batch of them), or nil when it is.
    func screen(_ request: EventValue) -> DatagramDrop? {
        switch request {
        case .object(let fields): return screen(fields)
        case .array(let items):
            guard !items.isEmpty, items.count <= Self.maximumBatch else { return .invalidRequest }
            for item in items {
                guard case .object(let fields) = item else { return .notARequest }
                if let reason = screen(fields) { return reason }
            }
            return nil
        default: return .notARequest
        }
    }

    private func screen(_ fields: [EventField]) -> DatagramDrop? {
        var method: EventValue?
        var version: EventValue?
        var presented: EventValue?
        for field in fields {
            switch field.name {
            case "result", "error": return .notARequest
            case "method": method = field.value
            case "jsonrpc": version = field.value
            case "token": presented = field.value
            case "id":
                switch field.value {
                case .string, .int, .double, .null: break
                default: return .invalidRequest
                }
            case "params":
                switch field.value {
                case .object, .array: break
                default: return .invalidRequest
                }
            default: break
            }
        }
        guard case .string? = method else { return method == nil ? .notARequest : .invalidRequest }
        guard version == .string("2.0") else { return .invalidRequest }
        if token != nil {
            guard case .string(let text)? = presented, isToken(text.utf8) else { return .unauthorized }
        }
        return nil
    }

    /// Processes a request and waits for the reply (for callers that are async anyway).
    public func reply(to body: [UInt8], origin: Origin) async -> [UInt8]? {
        switch process(body, origin: origin) {
        case .done(let reply): return reply
        case .pending(let work): return await work()
        }
    }

    /// One request, validated and bound, ready to run.
    struct Call: Sendable {
        enum Work: Sendable {
            case answered(Result<EventValue, MIError>)
            /// Run when its reply is taken, not when the request is bound: a batch's results are
            /// then encoded one at a time instead of all held at once.
            case immediate(@Sendable (MIParams) throws(MIError) -> EventValue, MIParams)
            case deferred(@Sendable (MIParams) async throws(MIError) -> EventValue, MIParams)
        }
        let id: EventValue
        /// A notification (no `id` member) is run but not answered.
        let isNotification: Bool
        let work: Work

        var isImmediate: Bool {
            switch work {
            case .answered, .immediate: true
            case .deferred: false
            }
        }

        /// Runs an immediate command (notifications too) and gives its reply.
        var immediateReply: [UInt8]? {
            let result: Result<EventValue, MIError>
            switch work {
            case .answered(let answered): result = answered
            case .immediate(let handler, let params):
                do throws(MIError) { result = .success(try handler(params)) } catch { result = .failure(error) }
            case .deferred: return nil
            }
            return isNotification ? nil : ManagementInterface.reply(id: id, result)
        }

        func run() async -> [UInt8]? {
            let result: Result<EventValue, MIError>
            switch work {
            case .answered, .immediate: return immediateReply
            case .deferred(let handler, let params):
                do throws(MIError) {
                    result = .success(try await handler(params))
                } catch {
                    result = .failure(error)
                }
            }
            return isNotification ? nil : ManagementInterface.reply(id: id, result)
        }
    }

    private func prepare(_ request: EventValue, origin: Origin, inBatch: Bool = false) -> Call {
        guard case .object(let fields) = request else {
            return Call(id: .null, isNotification: false, work: .answered(.failure(.invalidRequest)))
        }
        var id: EventValue?
        var method: EventValue?
        var params: EventValue?
        var version: EventValue?
        var presentedToken: EventValue?
        for field in fields {
            switch field.name {
            case "id": id = field.value
            case "method": method = field.value
            case "params": params = field.value
            case "jsonrpc": version = field.value
            case "token": presentedToken = field.value
            default: break
            }
        }
        let replyID: EventValue
        switch id {
        case nil, .null?: replyID = .null
        case .string?, .int?, .double?: replyID = id ?? .null
        default: return Call(id: .null, isNotification: false, work: .answered(.failure(.invalidRequest)))
        }
        let isNotification = id == nil
        func fail(_ error: MIError) -> Call {
            Call(id: replyID, isNotification: isNotification, work: .answered(.failure(error)))
        }
        if origin == .datagram, token != nil {
            guard case .string(let text)? = presentedToken, isToken(text.utf8) else { return fail(.unauthorized) }
        }
        guard version == .string("2.0"), case .string(let name)? = method else { return fail(.invalidRequest) }
        switch params {
        case nil, .object?, .array?: break
        default: return fail(.invalidRequest)
        }
        guard let command = command(named: name) else { return fail(.methodNotFound) }
        var bound: MIParams
        do throws(MIError) {
            bound = try command.bind(params)
            bound.inBatch = inBatch
        } catch {
            return fail(error)
        }
        switch command.handler {
        case .immediate(let handler):
            return Call(id: replyID, isNotification: isNotification, work: .immediate(handler, bound))
        case .deferred(let handler):
            return Call(id: replyID, isNotification: isNotification, work: .deferred(handler, bound))
        }
    }

    // MARK: Replies

    /// `{"jsonrpc":"2.0","result":R,"id":ID}` or `{"jsonrpc":"2.0","error":E,"id":ID}`, the
    /// member order OpenSIPS writes.
    static func reply(id: EventValue, _ result: Result<EventValue, MIError>) -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 96)
        switch result {
        case .success(let value):
            writer.append(raw: "{\"jsonrpc\":\"2.0\",\"result\":")
            writer.append(value)
        case .failure(let error):
            writer.append(raw: "{\"jsonrpc\":\"2.0\",\"error\":")
            writer.append(error.value)
        }
        writer.append(raw: ",\"id\":")
        writer.append(id)
        writer.append(raw: "}")
        return writer.bytes
    }

}

/// A batch's replies, joined as they come, up to `maximumReplyBytes`: past that one `-32600`
/// error replaces them all (the requests run so far stay run), so a batch cannot make the daemon
/// build a reply of hundreds of megabytes.
struct BatchReplies {
    private var joined: [UInt8] = [UInt8(ascii: "[")]
    private var count = 0
    private(set) var overflowed = false

    mutating func append(_ reply: [UInt8]?) {
        guard let reply, !overflowed else { return }
        guard joined.count + reply.count + 2 <= ManagementInterface.maximumReplyBytes else {
            overflowed = true
            joined = []
            return
        }
        if count > 0 { joined.append(UInt8(ascii: ",")) }
        joined += reply
        count += 1
    }

    /// The batch reply, the overflow error, or nil when every request was a notification.
    var bytes: [UInt8]? {
        if overflowed {
            return ManagementInterface.reply(
                id: .null,
                .failure(
                    MIError(
                        code: -32600, message: "Invalid Request",
                        data: "the batch's replies exceed \(ManagementInterface.maximumReplyBytes >> 20) MiB")))
        }
        return count == 0 ? nil : joined + [UInt8(ascii: "]")]
    }
}

/// Equal byte strings, compared in time that depends only on their lengths.
func constantTimeEquals(_ expected: [UInt8], _ presented: some Collection<UInt8>) -> Bool {
    var difference = UInt8(truncatingIfNeeded: expected.count ^ presented.count)
    var index = 0
    for byte in presented {
        difference |= byte ^ (index < expected.count ? expected[index] : 0)
        index += 1
    }
    return difference == 0
}
