import EventInterface

/// The PostgreSQL frontend/backend protocol (version 3.0), only what evi's state store uses: the
/// startup and authentication exchange (trust, cleartext, MD5, SCRAM-SHA-256), simple queries with
/// text results, and LISTEN/NOTIFY notifications. Pure: bytes in, messages out, no I/O, so every
/// message kind is tested without a server (see Tests/EventClusterTests).
enum PostgresFrontend {
    /// The startup message: protocol 3.0 and the connection parameters.
    static func startup(user: String, database: String) -> [UInt8] {
        var body: [UInt8] = []
        append(int32: 196_608, to: &body)
        for (key, value) in [
            ("user", user), ("database", database), ("application_name", "evi"),
            ("client_encoding", "UTF8"),
        ] {
            body += Array(key.utf8) + [0] + Array(value.utf8) + [0]
        }
        body.append(0)
        var message: [UInt8] = []
        append(int32: Int32(body.count + 4), to: &message)
        return message + body
    }

    /// A simple query (`Q`); `text` must hold no NUL (``PostgresLiteral`` refuses them).
    static func query(_ text: String) -> [UInt8] { message("Q", Array(text.utf8) + [0]) }

    /// A password (cleartext or MD5 form).
    static func password(_ text: String) -> [UInt8] { message("p", Array(text.utf8) + [0]) }

    /// SASLInitialResponse for `mechanism` with the client's first message.
    static func saslInitial(mechanism: String, data: [UInt8]) -> [UInt8] {
        var body = Array(mechanism.utf8) + [0]
        append(int32: Int32(data.count), to: &body)
        return message("p", body + data)
    }

    static func saslResponse(_ data: [UInt8]) -> [UInt8] { message("p", data) }

    static let terminate = message("X", [])

    static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: type.unicodeScalars.first ?? "?")]
        append(int32: Int32(body.count + 4), to: &out)
        return out + body
    }

    static func append(int32 value: Int32, to bytes: inout [UInt8]) {
        let bits = UInt32(bitPattern: value)
        bytes += [UInt8(bits >> 24), UInt8(bits >> 16 & 0xFF), UInt8(bits >> 8 & 0xFF), UInt8(bits & 0xFF)]
    }
}

/// A message from the server.
enum PostgresBackend: Equatable {
    enum Authentication: Equatable {
        case ok
        case cleartext
        case md5(salt: [UInt8])
        case sasl(mechanisms: [String])
        case saslContinue([UInt8])
        case saslFinal([UInt8])
        case unsupported(Int32)
    }

    case authentication(Authentication)
    case parameterStatus(name: String, value: String)
    case backendKeyData
    case readyForQuery
    case rowDescription(columns: [String])
    /// Text values; nil for SQL NULL.
    case dataRow([String?])
    case commandComplete(String)
    case emptyQuery
    /// `fields` by their one-letter codes (`S` severity, `C` SQLSTATE, `M` message…).
    case error(fields: [Character: String])
    case notice
    case notification(channel: String, payload: String)
    case other(UInt8)
}

/// Splits the server's byte stream into messages, bounded: a message claiming more than
/// `maximumMessage` bytes is a protocol error, not a reason to buffer it.
struct PostgresDecoder {
    static let maximumMessage = 16 << 20
    private var buffer: [UInt8] = []
    private var start = 0

    enum DecodeError: Error, Equatable { case tooLarge(Int), malformed(String) }

    mutating func feed(_ bytes: some Sequence<UInt8>) { buffer += bytes }

    /// The next whole message, nil when more bytes are needed.
    mutating func next() throws(DecodeError) -> PostgresBackend? {
        guard buffer.count - start >= 5 else { return compact() }
        let type = buffer[start]
        let length = Int(Self.int32(buffer, at: start + 1))
        guard length >= 4 else { throw .malformed("length \(length)") }
        guard length <= Self.maximumMessage else { throw .tooLarge(length) }
        guard buffer.count - start >= 1 + length else { return compact() }
        let body = Array(buffer[(start + 5)..<(start + 1 + length)])
        start += 1 + length
        return try Self.parse(type: type, body: body)
    }

    private mutating func compact() -> PostgresBackend? {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
        return nil
    }

    static func int32(_ bytes: [UInt8], at offset: Int) -> Int32 {
        Int32(
            bitPattern: UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
                | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
    }

    static func int16(_ bytes: [UInt8], at offset: Int) -> Int {
        Int(Int16(bitPattern: UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])))
    }

    /// A NUL-terminated string at `offset`, and the offset after its NUL.
    static func cString(_ bytes: [UInt8], at offset: Int) throws(DecodeError) -> (String, Int) {
        guard offset <= bytes.count, let end = bytes[offset...].firstIndex(of: 0) else {
            throw .malformed("unterminated string")
        }
        return (String(decoding: bytes[offset..<end], as: UTF8.self), end + 1)
    }

    static func parse(type: UInt8, body: [UInt8]) throws(DecodeError) -> PostgresBackend {
        switch type {
        case UInt8(ascii: "R"):
            guard body.count >= 4 else { throw .malformed("authentication") }
            let code = int32(body, at: 0)
            switch code {
            case 0: return .authentication(.ok)
            case 3: return .authentication(.cleartext)
            case 5:
                guard body.count >= 8 else { throw .malformed("md5 salt") }
                return .authentication(.md5(salt: Array(body[4..<8])))
            case 10:
                var mechanisms: [String] = []
                var offset = 4
                while offset < body.count, body[offset] != 0 {
                    let (name, next) = try cString(body, at: offset)
                    mechanisms.append(name)
                    offset = next
                }
                return .authentication(.sasl(mechanisms: mechanisms))
            case 11: return .authentication(.saslContinue(Array(body[4...])))
            case 12: return .authentication(.saslFinal(Array(body[4...])))
            default: return .authentication(.unsupported(code))
            }
        case UInt8(ascii: "S"):
            let (name, next) = try cString(body, at: 0)
            let (value, _) = try cString(body, at: next)
            return .parameterStatus(name: name, value: value)
        case UInt8(ascii: "K"): return .backendKeyData
        case UInt8(ascii: "Z"): return .readyForQuery
        case UInt8(ascii: "T"):
            guard body.count >= 2 else { throw .malformed("row description") }
            var columns: [String] = []
            var offset = 2
            for _ in 0..<max(0, int16(body, at: 0)) {
                let (name, next) = try cString(body, at: offset)
                columns.append(name)
                offset = next + 18
            }
            return .rowDescription(columns: columns)
        case UInt8(ascii: "D"):
            guard body.count >= 2 else { throw .malformed("data row") }
            var values: [String?] = []
            var offset = 2
            for _ in 0..<max(0, int16(body, at: 0)) {
                guard offset + 4 <= body.count else { throw .malformed("data row") }
                let length = Int(int32(body, at: offset))
                offset += 4
                if length < 0 {
                    values.append(nil)
                    continue
                }
                guard offset + length <= body.count else { throw .malformed("data row value") }
                values.append(String(decoding: body[offset..<(offset + length)], as: UTF8.self))
                offset += length
            }
            return .dataRow(values)
        case UInt8(ascii: "C"): return .commandComplete(try cString(body, at: 0).0)
        case UInt8(ascii: "I"): return .emptyQuery
        case UInt8(ascii: "E"):
            var fields: [Character: String] = [:]
            var offset = 0
            while offset < body.count, body[offset] != 0 {
                let code = Character(Unicode.Scalar(body[offset]))
                let (value, next) = try cString(body, at: offset + 1)
                fields[code] = value
                offset = next
            }
            return .error(fields: fields)
        case UInt8(ascii: "N"): return .notice
        case UInt8(ascii: "A"):
            guard body.count >= 4 else { throw .malformed("notification") }
            let (channel, next) = try cString(body, at: 4)
            let (payload, _) = try cString(body, at: next)
            return .notification(channel: channel, payload: payload)
        default: return .other(type)
        }
    }
}

/// SQL literals for the simple query protocol: strings quoted with `'` doubled (the server runs
/// with `standard_conforming_strings = on`, set at connect), NUL refused (PostgreSQL text cannot
/// hold it, and it would end the query early).
enum PostgresLiteral {
    struct NulError: Error {}

    static func string(_ text: String) throws(NulError) -> String {
        guard !text.utf8.contains(0) else { throw NulError() }
        return "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
    }

    static func optional(_ text: String?) throws(NulError) -> String {
        guard let text else { return "NULL" }
        return try string(text)
    }
}
