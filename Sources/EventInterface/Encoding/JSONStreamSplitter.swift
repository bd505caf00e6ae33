/// Splits a byte stream of back-to-back JSON values (how tcp subscribers receive JSON-RPC
/// messages: no separator) into whole values, fed in arbitrary chunks.
public struct JSONStreamSplitter: Sendable {
    private var buffer: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var start: Int?
    private var scanned = 0
    /// Longest value accepted; a stream that exceeds it is garbage and is dropped.
    public let maximumValueSize: Int
    /// Values dropped for exceeding `maximumValueSize`.
    public private(set) var oversized = 0

    /// Whether a value has begun and not ended (a peer that stops mid-message).
    public var hasPartialValue: Bool { start != nil }

    public init(maximumValueSize: Int = 16 << 20) {
        self.maximumValueSize = maximumValueSize
    }

    /// Adds bytes and returns every value they complete, in order.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var values: [[UInt8]] = []
        while scanned < buffer.count {
            let byte = buffer[scanned]
            if start == nil {
                if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                    start = scanned
                    depth = 1
                }
                scanned += 1
                continue
            }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else if byte == UInt8(ascii: "\"") {
                inString = true
            } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                depth += 1
            } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                depth -= 1
                if depth == 0, let first = start {
                    values.append(Array(buffer[first...scanned]))
                    start = nil
                }
            }
            scanned += 1
        }
        if start == nil {
            buffer.removeAll(keepingCapacity: true)
            scanned = 0
        } else if let first = start, first > 0 {
            buffer.removeFirst(first)
            scanned -= first
            start = 0
        }
        if buffer.count > maximumValueSize {
            oversized += 1
            buffer.removeAll()
            scanned = 0
            start = nil
            depth = 0
            inString = false
            escaped = false
        }
        return values
    }
}
