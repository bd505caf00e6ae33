import EventInterface

/// A JSON-RPC error reply: the core's ``CommandError`` (what module commands throw too), with
/// the errors the MI itself answers.
public typealias MIError = CommandError

extension CommandError {
    public static let parseError = MIError(code: -32700, message: "Parse error")
    public static let invalidRequest = MIError(code: -32600, message: "Invalid Request")
    public static let methodNotFound = MIError(code: -32601, message: "Method not found")
    public static let wrongParameterCount = MIError(
        code: -32602, message: "Invalid params", data: "Too few or too many parameters")
    public static let unauthorized = MIError(code: -32001, message: "Unauthorized")

    public static func invalidParams(_ data: String) -> MIError {
        MIError(code: -32602, message: "Invalid params", data: data)
    }

    /// OpenSIPS' answer to any bad value, with the reason in `data`.
    public static func badParameter(_ data: String) -> MIError {
        MIError(code: 400, message: "Bad parameter value", data: data)
    }

    public static func notFound(_ message: String, _ data: String? = nil) -> MIError {
        MIError(code: 404, message: message, data: data)
    }

    var value: EventValue {
        var fields = [EventField("code", .int(Int64(code))), EventField("message", .string(message))]
        if let data { fields.append(EventField("data", .string(data))) }
        return .object(fields)
    }
}

/// The parameters of one call, bound to the names of the command's parameter set.
public struct MIParams: Sendable {
    /// In the order given (named) or of the parameter set (positional). A list, not a dictionary:
    /// there are at most a handful, and hashing them showed in scripts/profile's MI counts.
    public let fields: [EventField]
    /// The request is one of a JSON-RPC batch: a raise then queues its event to batch with the
    /// others rather than send it on the MI's thread.
    public var inBatch = false

    public init(_ fields: [EventField]) { self.fields = fields }

    public func value(_ name: String) -> EventValue? { fields.first { $0.name == name }?.value }

    public func has(_ name: String) -> Bool { value(name) != nil }

    /// A string parameter (numbers are accepted and printed, as OpenSIPS reads everything as text).
    public func string(_ name: String) throws(MIError) -> String {
        guard let value = value(name) else { throw .wrongParameterCount }
        switch value {
        case .string(let text): return text
        case .int(let number): return String(number)
        default: throw .badParameter("\(name) must be a string")
        }
    }

    /// An integer parameter; numeric strings are accepted (opensips-cli sends `"120"`).
    public func integer(_ name: String) throws(MIError) -> Int {
        guard let value = value(name) else { throw .wrongParameterCount }
        switch value {
        case .int(let number):
            guard let result = Int(exactly: number) else { throw .badParameter("\(name) out of range") }
            return result
        case .string(let text):
            guard let number = Int(text.trimmingWhitespace()) else {
                throw .badParameter("\(name) must be an integer: \(text)")
            }
            return number
        case .double(let number) where number.rounded() == number && abs(number) < 1e15:
            return Int(number)
        default:
            throw .badParameter("\(name) must be an integer")
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }), let last = lastIndex(where: { !$0.isWhitespace })
        else { return "" }
        return String(self[first...last])
    }
}
