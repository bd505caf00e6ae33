/// Appends compact JSON to a byte buffer.
///
/// Hand-written because it is on the hot path (every raise encodes once per format) and because
/// the bytes are specified exactly: compact, member order kept, `/` and non-ASCII written as they
/// are, only `"`, `\` and control characters escaped.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 128) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func append(raw text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    public mutating func append(_ value: EventValue) {
        switch value {
        case .string(let string): append(string: string)
        case .int(let integer): append(integer: integer)
        case .double(let double): append(double: double)
        case .bool(let flag): flag ? append(raw: "true") : append(raw: "false")
        case .null: append(raw: "null")
        case .array(let values): append(array: values)
        case .object(let fields): append(object: fields)
        }
    }

    public mutating func append(array values: [EventValue]) {
        bytes.append(UInt8(ascii: "["))
        for (position, value) in values.enumerated() {
            if position > 0 { bytes.append(UInt8(ascii: ",")) }
            append(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    public mutating func append(object fields: [EventField]) {
        bytes.append(UInt8(ascii: "{"))
        for (position, field) in fields.enumerated() {
            if position > 0 { bytes.append(UInt8(ascii: ",")) }
            append(string: field.name)
            bytes.append(UInt8(ascii: ":"))
            append(field.value)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    public mutating func append(integer: Int64) {
        if integer >= 0 && integer < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(integer))
            return
        }
        // Digits of the magnitude, built backwards; UInt64 holds |Int64.min|.
        var magnitude = integer.magnitude
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)  // 32 bytes of scratch
        withUnsafeMutableBytes(of: &digits) { scratch in
            var position = scratch.count
            repeat {
                position -= 1
                scratch[position] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if integer < 0 {
                position -= 1
                scratch[position] = UInt8(ascii: "-")
            }
            bytes.append(contentsOf: scratch[position...])
        }
    }

    /// Shortest text that reads back as the same double (Swift's `description` is round-trip
    /// exact and always JSON-valid for finite values). NaN and infinities become `null`.
    public mutating func append(double: Double) {
        guard double.isFinite else {
            append(raw: "null")
            return
        }
        bytes.append(contentsOf: double.description.utf8)
    }

    public mutating func append(string: String) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { utf8 in
            var runStart = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                if runStart < index { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index])) }
                runStart = index + 1
                switch byte {
                case UInt8(ascii: "\""): append(raw: "\\\"")
                case UInt8(ascii: "\\"): append(raw: "\\\\")
                case 0x0A: append(raw: "\\n")
                case 0x0D: append(raw: "\\r")
                case 0x09: append(raw: "\\t")
                case 0x08: append(raw: "\\b")
                case 0x0C: append(raw: "\\f")
                default:
                    append(raw: "\\u00")
                    bytes.append(Self.hexDigit(byte >> 4))
                    bytes.append(Self.hexDigit(byte & 0x0F))
                }
            }
            if runStart < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

extension EventValue {
    /// This value as compact JSON text.
    public var jsonText: String {
        var writer = JSONWriter()
        writer.append(self)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}

/// The JSON-RPC 2.0 notification that udp, unix, tcp and rabbitmq deliver
/// (`transports.md`): `{"jsonrpc":"2.0","method":M,"params":P}`, with an optional integer `id`
/// first for reliable-mode requests, `params` absent when the event has none.
public enum JSONRPCNotification {
    /// Encodes one notification.
    /// - Parameters:
    ///   - method: the event name, or the method a tcp socket overrides it with.
    ///   - params: the raised parameters.
    ///   - eventParam: when set, a parameter of this name holding `eventName` is put first.
    ///   - id: when set, the request id, placed first (reliable mode).
    public static func encode(
        method: String,
        params: EventParams,
        eventParam: (name: String, eventName: String)? = nil,
        id: Int64? = nil
    ) -> [UInt8] {
        var writer = JSONWriter(reservingCapacity: 64 + method.utf8.count + params.count * 24)
        if let id {
            writer.append(raw: "{\"id\":")
            writer.append(integer: id)
            writer.append(raw: ",\"jsonrpc\":\"2.0\",\"method\":")
        } else {
            writer.append(raw: "{\"jsonrpc\":\"2.0\",\"method\":")
        }
        writer.append(string: method)
        var params = params
        if let eventParam {
            switch params {
            case .none: params = .named([EventField(eventParam.name, .string(eventParam.eventName))])
            case .named(let fields):
                params = .named([EventField(eventParam.name, .string(eventParam.eventName))] + fields)
            case .positional(let values): params = .positional([.string(eventParam.eventName)] + values)
            }
        }
        switch params {
        case .none: break
        case .named(let fields):
            writer.append(raw: ",\"params\":")
            writer.append(object: fields)
        case .positional(let values):
            writer.append(raw: ",\"params\":")
            writer.append(array: values)
        }
        writer.append(raw: "}")
        return writer.bytes
    }
}
