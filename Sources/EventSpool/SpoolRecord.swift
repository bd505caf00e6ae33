import EventInterface

/// One stored event, as it lies in a segment or dead-letter file:
///
///     u32 LE  payload length
///     u32 LE  CRC-32 (IEEE) of the payload
///     payload: u64 LE sequence number, f64 LE wall-clock time stored (Unix seconds), then the
///              event's JSON-RPC notification, byte for byte what udp/tcp/rabbitmq send
///
/// The checksum is how a torn tail after a crash (a record half written when the process or the
/// machine died) is told from a record, and how damage in the middle of a file is found: the
/// length and checksum frame each record, so reading resynchronises at the next offset where a
/// whole record checks (``SpoolReader/FileCursor``) and only the damaged bytes are lost.
/// A *padding* record (sequence number 0, which no event has, and zeros) is skipped: damaged bytes are overwritten with one once they are moved to `corrupt`.
/// The notification is the payload because most transports send exactly it, and decoding it
/// gives back the parameters with their JSON types and order (the ingress decoder).
struct SpoolRecord: Sendable, Hashable {
    static let headerSize = 8
    static let prefixSize = 16
    /// A record larger than this is taken for garbage (events are bounded far below it).
    static let maximumPayload = 64 << 20

    var sequence: UInt64
    var storedAt: Double
    var notification: [UInt8]

    /// The record's bytes.
    func encoded() -> [UInt8] {
        var payload = [UInt8]()
        payload.reserveCapacity(Self.prefixSize + notification.count)
        payload.appendLittleEndian(sequence)
        payload.appendLittleEndian(storedAt.bitPattern)
        payload += notification
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.headerSize + payload.count)
        bytes.appendLittleEndian(UInt32(payload.count))
        bytes.appendLittleEndian(CRC32.checksum(payload))
        bytes += payload
        return bytes
    }

    enum Parse: Equatable {
        case record(SpoolRecord, length: Int)
        /// Filler that stands where damaged bytes were: skipped.
        case padding(length: Int)
        /// More bytes are needed (or, at the end of a file, a torn tail).
        case incomplete
        /// The bytes are not a record: a torn or corrupt tail.
        case corrupt
    }

    /// Reads the record at the start of `bytes`.
    static func parse(_ bytes: ArraySlice<UInt8>) -> Parse {
        guard bytes.count >= headerSize else { return .incomplete }
        let start = bytes.startIndex
        let length = Int(bytes.readLittleEndian(UInt32.self, at: start))
        let checksum = bytes.readLittleEndian(UInt32.self, at: start + 4)
        guard length >= prefixSize, length <= maximumPayload else { return .corrupt }
        guard bytes.count >= headerSize + length else { return .incomplete }
        let payload = bytes[(start + headerSize)..<(start + headerSize + length)]
        guard CRC32.checksum(payload) == checksum else { return .corrupt }
        guard payload.readLittleEndian(UInt64.self, at: payload.startIndex) != 0 else {
            return .padding(length: headerSize + length)
        }
        let record = SpoolRecord(
            sequence: payload.readLittleEndian(UInt64.self, at: payload.startIndex),
            storedAt: Double(bitPattern: payload.readLittleEndian(UInt64.self, at: payload.startIndex + 8)),
            notification: Array(payload[(payload.startIndex + prefixSize)...]))
        return .record(record, length: headerSize + length)
    }
}

extension SpoolRecord {
    /// The smallest padding record: a header and a prefix.
    static let minimumPadding = headerSize + prefixSize

    /// A padding record of exactly `size` bytes (at least ``minimumPadding``): zeros that check.
    static func padding(size: Int) -> [UInt8] {
        let payload = [UInt8](repeating: 0, count: max(0, size - headerSize))
        var bytes = [UInt8]()
        bytes.reserveCapacity(headerSize + payload.count)
        bytes.appendLittleEndian(UInt32(payload.count))
        bytes.appendLittleEndian(CRC32.checksum(payload))
        return bytes + payload
    }
}

/// CRC-32 (IEEE 802.3, the zlib one), table-driven.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var little = value.littleEndian
        Swift.withUnsafeBytes(of: &little) { append(contentsOf: $0) }
    }
}

extension ArraySlice where Element == UInt8 {
    func readLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at index: Int) -> T {
        var value = T.zero
        for offset in 0..<MemoryLayout<T>.size { value |= T(self[index + offset]) << (8 * offset) }
        return value
    }
}
