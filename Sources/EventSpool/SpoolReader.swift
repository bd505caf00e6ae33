#if canImport(Glibc)
    import Glibc
#endif

/// Reads a stream's stored events back, in sequence order, outside the stream's lock: the
/// delivery task of a subscriber that fell behind (its events no longer all in memory) and the
/// shedding of dead letters read through it. It keeps its place in the segment it is reading, so
/// reading a backlog is sequential.
struct SpoolReader {
    /// Records one after the other from an open file, read in large chunks with pread(2).
    struct FileCursor {
        let descriptor: Int32
        /// File offset of the next unread byte, and bytes of whole records consumed.
        private(set) var offset = 0
        private(set) var consumed = 0
        private var buffer: [UInt8] = []
        private var start = 0
        static let chunk = 256 << 10

        init(descriptor: Int32, offset: Int = 0) {
            self.descriptor = descriptor
            self.offset = offset
            self.consumed = offset
        }

        /// Bytes that do not make a record were met (a torn tail, or a record still being written).
        private(set) var sawCorrupt = false

        /// The next whole record, or nil at the end of the file or at a torn or corrupt tail.
        mutating func next() -> SpoolRecord? {
            while true {
                switch SpoolRecord.parse(buffer[start...]) {
                case .record(let record, let length):
                    start += length
                    consumed += length
                    return record
                case .corrupt:
                    sawCorrupt = true
                    return nil
                case .incomplete:
                    guard fill() else { return nil }
                }
            }
        }

        private mutating func fill() -> Bool {
            if start > 0 {
                buffer.removeFirst(start)
                start = 0
            }
            let old = buffer.count
            buffer += [UInt8](repeating: 0, count: Self.chunk)
            let count = buffer[old...].withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress, $0.count, off_t(offset))
            }
            buffer.removeLast(Self.chunk - max(0, count))
            guard count > 0 else { return false }
            offset += count
            return true
        }
    }

    private var open: (first: UInt64, cursor: FileCursor)?
    /// The last sequence number the open cursor returned: asking for one at or before it rewinds.
    private var lastRead: UInt64?
    /// A record read past the end asked for, kept for the next read.
    private var held: SpoolRecord?

    /// Up to `limit` records with sequence numbers from `from` up to (not including) `end`, from
    /// `segments` (paths by first sequence number, as the stream had them under its lock).
    mutating func read(
        from: UInt64, end: UInt64, limit: Int, segments: [(first: UInt64, path: String)]
    ) -> [SpoolRecord] {
        var records: [SpoolRecord] = []
        var wanted = from
        if let record = held {
            held = nil
            if record.sequence == wanted, record.sequence < end {
                records.append(record)
                wanted += 1
            } else {
                close()
            }
        }
        if let lastRead, wanted <= lastRead, records.isEmpty { close() }
        reading: while records.count < limit, wanted < end {
            guard let index = segments.lastIndex(where: { $0.first <= wanted }) else {
                // What is wanted was deleted (moved to dead letters, purged): go on from what is there.
                guard let first = segments.first, first.first < end, first.first > wanted else { break }
                wanted = first.first
                continue
            }
            let segment = segments[index]
            if open?.first != segment.first {
                close()
                let descriptor = Glibc.open(segment.path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else { break }
                open = (segment.first, FileCursor(descriptor: descriptor))
            }
            guard var cursor = open?.cursor else { break }
            while records.count < limit, let record = cursor.next() {
                lastRead = record.sequence
                if record.sequence < wanted { continue }
                if record.sequence >= end || record.sequence != wanted {
                    held = record
                    open?.cursor = cursor
                    break reading
                }
                records.append(record)
                wanted = record.sequence + 1
            }
            let corrupt = cursor.sawCorrupt
            open?.cursor = cursor
            if corrupt {
                close()  // re-read from the start next time: the record may have been mid-write
                break
            }
            if records.count >= limit { break }
            guard index + 1 < segments.count else { break }  // the rest is not written yet
            wanted = max(wanted, segments[index + 1].first)
        }
        return records
    }

    /// Rewinds: the next read opens its segment afresh (a retry after a failure, a purge).
    mutating func close() {
        if let open { Glibc.close(open.cursor.descriptor) }
        open = nil
        lastRead = nil
        held = nil
    }
}
