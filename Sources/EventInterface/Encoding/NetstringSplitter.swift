/// Splits a byte stream of netstrings (`LEN:DATA,`, how Kamailio's evapi frames what it relays by
/// default) into their data, fed in arbitrary chunks. A malformed frame (no length, a length over
/// `maximumLength`, a missing `,`) is counted and the stream resynchronised at the next byte.
public struct NetstringSplitter: Sendable {
    private var buffer: [UInt8] = []
    public let maximumLength: Int
    /// Frames refused as malformed or too long.
    public private(set) var malformed = 0

    /// Digits a length prefix may have: those of `maximumLength` (7 for 1 MiB).
    public let maximumDigits: Int

    public init(maximumLength: Int = 1 << 20) {
        self.maximumLength = maximumLength
        maximumDigits = String(maximumLength).count
    }

    /// Whether a frame has begun and not ended.
    public var hasPartialFrame: Bool { !buffer.isEmpty }

    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var frames: [[UInt8]] = []
        var position = 0
        while position < buffer.count {
            // Whitespace between frames (a newline after the comma) is allowed.
            if buffer[position] == UInt8(ascii: "\n") || buffer[position] == UInt8(ascii: "\r")
                || buffer[position] == UInt8(ascii: " ")
            {
                position += 1
                continue
            }
            var length = 0
            var cursor = position
            while cursor < buffer.count, cursor - position <= maximumDigits, let digit = Self.digit(buffer[cursor]) {
                length = length * 10 + digit
                cursor += 1
            }
            // At most as many digits as the largest length has, leading zeros counted: a longer
            // prefix (endless zeros) is refused at once, the whole run of digits with it, rather
            // than buffered and scanned again at every read.
            if cursor - position > maximumDigits {
                malformed += 1
                while cursor < buffer.count, Self.digit(buffer[cursor]) != nil { cursor += 1 }
                position = cursor
                continue
            }
            if cursor == buffer.count { break }  // the length goes on in the next chunk
            guard cursor > position, buffer[cursor] == UInt8(ascii: ":"), length <= maximumLength else {
                malformed += 1
                position += 1
                continue
            }
            let end = cursor + 1 + length
            guard end < buffer.count else { break }  // the data goes on in the next chunk
            guard buffer[end] == UInt8(ascii: ",") else {
                malformed += 1
                position += 1
                continue
            }
            frames.append(Array(buffer[(cursor + 1)..<end]))
            position = end + 1
        }
        buffer.removeFirst(position)
        return frames
    }

    private static func digit(_ byte: UInt8) -> Int? {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? Int(byte - UInt8(ascii: "0")) : nil
    }
}
