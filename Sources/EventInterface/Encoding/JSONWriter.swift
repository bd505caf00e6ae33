/// Appends compact JSON to a byte buffer.
///
/// Hand-written because it is on the hot path (every raise encodes once per format) and because
/// the bytes are specified exactly: compact, member order kept, `/` and non-ASCII written as they
/// are, only `"`, `\` and control characters escaped.
///
/// It writes through a raw buffer it owns rather than appending to an `Array`: the profile of
/// `scripts/profile` showed `Array.append` (uniqueness and capacity checks per byte) as most of
/// the cost of encoding a small event; here a byte is a store and a run of bytes one `memcpy`.
public struct JSONWriter: ~Copyable {
    private var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    /// Bytes written so far.
    public private(set) var count = 0

    /// Whether `base` was allocated here (and is freed here), or is a caller's scratch.
    private var ownsBase = true

    public init(reservingCapacity capacity: Int = 128) {
        self.capacity = max(16, capacity)
        base = .allocate(capacity: self.capacity)
    }

    private init(scratch: UnsafeMutableBufferPointer<UInt8>) {
        base = scratch.baseAddress ?? .allocate(capacity: 16)
        capacity = scratch.baseAddress == nil ? 16 : scratch.count
        ownsBase = scratch.baseAddress == nil
    }

    /// Runs `body` with a writer whose first `capacity` bytes are stack scratch, so encoding a
    /// small value allocates only the result; a larger one moves to the heap as it grows.
    public static func withScratch<Result>(capacity: Int, _ body: (inout JSONWriter) -> Result) -> Result {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { scratch in
            var writer = JSONWriter(scratch: scratch)
            return body(&writer)
        }
    }

    deinit { if ownsBase { base.deallocate() } }

    /// A copy of what was written.
    public var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    @inline(__always)
    private mutating func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        let grown = max(capacity * 2, count + extra)
        let moved = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        moved.update(from: base, count: count)
        if ownsBase { base.deallocate() }
        base = moved
        capacity = grown
        ownsBase = true
    }

    @inline(__always)
    private mutating func write(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    private mutating func write(_ run: UnsafeBufferPointer<UInt8>) {
        guard let source = run.baseAddress, run.count > 0 else { return }
        reserve(run.count)
        (base + count).update(from: source, count: run.count)
        count += run.count
    }

    public mutating func append(raw text: StaticString) {
        text.withUTF8Buffer { write($0) }
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
        write(UInt8(ascii: "["))
        for (position, value) in values.enumerated() {
            if position > 0 { write(UInt8(ascii: ",")) }
            append(value)
        }
        write(UInt8(ascii: "]"))
    }

    public mutating func append(object fields: [EventField]) {
        write(UInt8(ascii: "{"))
        for (position, field) in fields.enumerated() {
            if position > 0 { write(UInt8(ascii: ",")) }
            append(string: field.name)
            write(UInt8(ascii: ":"))
            append(field.value)
        }
        write(UInt8(ascii: "}"))
    }

    public mutating func append(integer: Int64) {
        if integer >= 0 && integer < 10 {
            write(UInt8(ascii: "0") + UInt8(integer))
            return
        }
        // Digits of the magnitude, written backwards into the reserved room; UInt64 holds |Int64.min|.
        var magnitude = integer.magnitude
        var length = integer < 0 ? 1 : 0
        var rest = magnitude
        repeat {
            length += 1
            rest /= 10
        } while rest > 0
        reserve(length)
        var position = count + length
        repeat {
            position -= 1
            base[position] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        if integer < 0 { base[count] = UInt8(ascii: "-") }
        count += length
    }

    /// Shortest text that reads back as the same double (Swift's `description` is round-trip
    /// exact and always JSON-valid for finite values). NaN and infinities become `null`.
    public mutating func append(double: Double) {
        guard double.isFinite else {
            append(raw: "null")
            return
        }
        var text = double.description
        text.withUTF8 { write($0) }
    }

    public mutating func append(string: String) {
        var string = string
        string.withUTF8 { utf8 in
            guard let source = utf8.baseAddress, !Self.needsEscaping(utf8) else {
                appendEscaped(utf8)
                return
            }
            // The common case: nothing to escape, so quotes and one copy.
            reserve(utf8.count + 2)
            base[count] = UInt8(ascii: "\"")
            (base + count + 1).update(from: source, count: utf8.count)
            base[count + 1 + utf8.count] = UInt8(ascii: "\"")
            count += utf8.count + 2
        }
    }

    /// Whether any byte is a control character, `"` or `\`; eight bytes at a time.
    private static func needsEscaping(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let start = UnsafeRawPointer(utf8.baseAddress) else { return false }
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        @inline(__always) func hasZeroByte(_ word: UInt64) -> Bool { (word &- ones) & ~word & highs != 0 }
        var offset = 0
        while offset + 8 <= utf8.count {
            let word = start.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            // A byte below 0x20 (bytes of 0x80 and up are UTF-8, never escaped), or equal to '"' or '\'.
            let control = (word &- ones &* 0x20) & ~word & highs
            if control != 0 || hasZeroByte(word ^ (ones &* 0x22)) || hasZeroByte(word ^ (ones &* 0x5C)) { return true }
            offset += 8
        }
        while offset < utf8.count {
            let byte = utf8[offset]
            if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return true }
            offset += 1
        }
        return false
    }

    private mutating func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        write(UInt8(ascii: "\""))
        var runStart = 0
        for index in 0..<utf8.count {
            let byte = utf8[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            if runStart < index { write(UnsafeBufferPointer(rebasing: utf8[runStart..<index])) }
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
                write(Self.hexDigit(byte >> 4))
                write(Self.hexDigit(byte & 0x0F))
            }
        }
        if runStart < utf8.count { write(UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        write(UInt8(ascii: "\""))
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
/// (`Docs/sockets.md`): `{"jsonrpc":"2.0","method":M,"params":P}`, with an optional integer `id`
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
        JSONWriter.withScratch(capacity: 1024) { writer in
            encode(into: &writer, method: method, params: params, eventParam: eventParam, id: id)
            return writer.bytes
        }
    }

    private static func encode(
        into writer: inout JSONWriter, method: String, params: EventParams,
        eventParam: (name: String, eventName: String)?, id: Int64?
    ) {
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
    }
}
