import EventInterface
import Synchronization

/// The JSON-RPC 2.0 management interface (mi.md): decodes requests, runs commands, encodes the
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
    private let commands = Mutex<[String: MICommand]>([:])
    private let ordered = Mutex<[MICommand]>([])

    public init(token: String? = nil) {
        self.token = token
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
            return .done(Self.reply(id: .null, .failure(.parseError)))
        }
        if case .array(let requests) = request {
            guard !requests.isEmpty else { return .done(Self.reply(id: .null, .failure(.invalidRequest))) }
            let calls = requests.map { prepare($0, origin: origin) }
            if calls.allSatisfy({ $0.isImmediate }) {
                let replies = calls.compactMap { $0.immediateReply }
                return .done(replies.isEmpty ? nil : Self.batch(replies))
            }
            return .pending {
                var replies: [[UInt8]] = []
                for call in calls { if let reply = await call.run() { replies.append(reply) } }
                return replies.isEmpty ? nil : Self.batch(replies)
            }
        }
        let call = prepare(request, origin: origin)
        if call.isImmediate { return .done(call.immediateReply) }
        return .pending { await call.run() }
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
            case deferred(@Sendable (MIParams) async throws(MIError) -> EventValue, MIParams)
        }
        let id: EventValue
        /// A notification (no `id` member) is run but not answered.
        let isNotification: Bool
        let work: Work

        var isImmediate: Bool {
            if case .answered = work { return true }
            return false
        }

        var immediateReply: [UInt8]? {
            guard case .answered(let result) = work, !isNotification else { return nil }
            return ManagementInterface.reply(id: id, result)
        }

        func run() async -> [UInt8]? {
            let result: Result<EventValue, MIError>
            switch work {
            case .answered(let answered): result = answered
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

    private func prepare(_ request: EventValue, origin: Origin) -> Call {
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
        if origin == .datagram, let token, presentedToken != .string(token) { return fail(.unauthorized) }
        guard version == .string("2.0"), case .string(let name)? = method else { return fail(.invalidRequest) }
        switch params {
        case nil, .object?, .array?: break
        default: return fail(.invalidRequest)
        }
        guard let command = command(named: name) else { return fail(.methodNotFound) }
        let bound: MIParams
        do throws(MIError) {
            bound = try command.bind(params)
        } catch {
            return fail(error)
        }
        switch command.handler {
        case .immediate(let handler):
            do throws(MIError) {
                return Call(id: replyID, isNotification: isNotification, work: .answered(.success(try handler(bound))))
            } catch {
                return fail(error)
            }
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

    static func batch(_ replies: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(ascii: "[")]
        for (index, reply) in replies.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes += reply
        }
        bytes.append(UInt8(ascii: "]"))
        return bytes
    }
}
