#if canImport(Glibc)
    import Glibc
#endif

/// Reads a stream's stored events back, in sequence order, outside the stream's lock: the
/// delivery task of a subscriber that fell behind (its events no longer all in memory) and the
/// shedding of dead letters read through it. It keeps its place in the segment it is reading, so
/// reading a backlog is sequential.
struct SpoolReader {
    /// Bytes of a file that are not records, with a whole record (or the file's end) after them.
    struct Damage: Sendable, Equatable {
        /// File offset and length of the damaged bytes.
        var offset: Int
        var length: Int
        /// Sequence numbers the damage took: the gap between the records either side of it.
        var missing: Int
    }

    /// Records one after the other from an open file, read in large chunks with pread(2).
    ///
    /// Where the bytes at the read position are not a record, the cursor looks for the next
    /// offset where a whole record checks (its length, its CRC, and a sequence number after the
    /// last one read) and goes on from there, noting the bytes it stepped over as ``Damage``; if
    /// none follows, the file ends in a torn tail (``sawCorrupt``).
    struct FileCursor {
        let descriptor: Int32
        /// File offset of the next unread byte, and bytes of whole records consumed.
        private(set) var offset = 0
        private(set) var consumed = 0
        private var buffer: [UInt8] = []
        private var start = 0
        static let chunk = 256 << 10
        /// The sequence number of the last record returned (before the first: the segment's first - 1).
        private(set) var lastSequence: UInt64
        /// Damage stepped over since the last ``takeDamage()``.
        private var damage: [Damage] = []
        /// Damage whose gap is known only at the next record.
        private var open: (offset: Int, length: Int)?

        /// Whether sequence numbers rise through the file (segments; not dead letters, where a
        /// replay and a restart can put older numbers after newer ones).
        private let ordered: Bool

        init(descriptor: Int32, offset: Int = 0, after lastSequence: UInt64 = 0, ordered: Bool = true) {
            self.descriptor = descriptor
            self.offset = offset
            self.consumed = offset
            self.lastSequence = lastSequence
            self.ordered = ordered
        }

        private func follows(_ record: SpoolRecord) -> Bool { !ordered || record.sequence > lastSequence }

        /// Bytes that do not make a record were met at the end (a torn tail, or a record still
        /// being written); ``consumed`` is where they begin.
        private(set) var sawCorrupt = false

        /// The damage met so far, and forgets it; one still open (the file ended after it) is
        /// given with no gap, which only the reader, knowing the next segment, can tell.
        mutating func takeDamage(closingOpen: Bool = false) -> [Damage] {
            if closingOpen, let open {
                damage.append(Damage(offset: open.offset, length: open.length, missing: 0))
                self.open = nil
            }
            defer { damage = [] }
            return damage
        }

        /// The next whole record, or nil at the end of the file or at a torn or corrupt tail.
        mutating func next() -> SpoolRecord? {
            while true {
                switch SpoolRecord.parse(buffer[start...]) {
                case .record(let record, let length) where follows(record):
                    start += length
                    consumed += length
                    if let open {
                        let missing = ordered ? Int(clamping: record.sequence - lastSequence - 1) : 0
                        damage.append(Damage(offset: open.offset, length: open.length, missing: missing))
                        self.open = nil
                    }
                    lastSequence = record.sequence
                    return record
                case .padding(let length):
                    start += length
                    consumed += length
                case .record, .corrupt:
                    guard let skip = resynchronise() else {
                        sawCorrupt = true
                        return nil
                    }
                    stepOver(skip)
                case .incomplete:
                    if fill() { continue }
                    // The end of the file: a record still being written or torn — or damage to a
                    // length that now reaches past the end, when a whole record follows.
                    guard buffer.count > start, let skip = resynchronise() else { return nil }
                    stepOver(skip)
                }
            }
        }

        private mutating func stepOver(_ skip: Int) {
            if let open, open.offset + open.length == consumed {
                self.open = (open.offset, open.length + skip)
            } else {
                if let open { damage.append(Damage(offset: open.offset, length: open.length, missing: 0)) }
                open = (consumed, skip)
            }
            start += skip
            consumed += skip
        }

        /// How far ahead of the read position the next whole record (or padding) starts, or nil
        /// when none does before the end of the file as it is now.
        private mutating func resynchronise() -> Int? {
            var probe = start + 1
            var atEnd = false
            while true {
                if buffer.count - probe < SpoolRecord.headerSize {
                    if atEnd { return nil }
                    let removed = start
                    atEnd = !fill()
                    probe -= removed
                    continue
                }
                switch SpoolRecord.parse(buffer[probe...]) {
                case .record(let record, _) where follows(record):
                    return probe - start
                case .padding:
                    return probe - start
                case .incomplete where !atEnd:
                    let removed = start
                    atEnd = !fill()
                    probe -= removed
                case .record, .corrupt, .incomplete:
                    probe += 1
                }
            }
        }

        /// Reads the next chunk after what is buffered (dropping what was consumed); false at the end.
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
    /// Damage met in the segments read, for the stream to move aside (``takeDamage()``).
    private var damage: [(segment: UInt64, damage: Damage)] = []

    /// The damage found since the last call: the stream quarantines it.
    mutating func takeDamage() -> [(segment: UInt64, damage: Damage)] {
        defer { damage = [] }
        return damage
    }

    /// Up to `limit` records with sequence numbers from `from` up to (not including) `end`, from
    /// `segments` (paths by first sequence number, as the stream had them under its lock).
    /// Records lost to damage are stepped over: reading goes on from the next whole record.
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
                open = (segment.first, FileCursor(descriptor: descriptor, after: segment.first &- 1))
            }
            guard var cursor = open?.cursor else { break }
            var ended = false
            while records.count < limit {
                guard let record = cursor.next() else {
                    ended = true
                    break
                }
                damage += cursor.takeDamage().map { (segment.first, $0) }
                lastRead = record.sequence
                // A segment's sequence numbers follow each other: a gap is records that damage took
                // (found now, or padded over before). Reading goes on after them.
                if record.sequence > wanted, wanted >= segment.first { wanted = min(record.sequence, end) }
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
            let sealed = index + 1 < segments.count
            var info = stat()
            let size = sealed && ended && fstat(cursor.descriptor, &info) == 0 ? Int(info.st_size) : cursor.consumed
            if size > cursor.consumed {
                // A sealed segment is never written again: what ends it that is not a record is
                // damage, and reading goes on in the next segment.
                let next = segments[index + 1].first
                let missing = Int(clamping: next > cursor.lastSequence + 1 ? next - cursor.lastSequence - 1 : 0)
                damage += cursor.takeDamage(closingOpen: true).map { (segment.first, $0) }
                damage.append(
                    (segment.first, Damage(offset: cursor.consumed, length: size - cursor.consumed, missing: missing)))
                close()
                if records.count >= limit { break }
                wanted = max(wanted, min(next, end))
                continue
            }
            open?.cursor = cursor
            if corrupt {
                close()  // re-read from the start next time: the record may have been mid-write
                break
            }
            if records.count >= limit { break }
            guard sealed else { break }  // the rest is not written yet
            damage += cursor.takeDamage(closingOpen: true).map { (segment.first, $0) }
            wanted = max(wanted, segments[index + 1].first)
        }
        resumeFrom = wanted
        return records
    }

    /// Where the last read stopped: after the last record it gave, or past records lost to damage.
    private(set) var resumeFrom: UInt64 = 0

    /// Rewinds: the next read opens its segment afresh (a retry after a failure, a purge).
    mutating func close() {
        if let open { Glibc.close(open.cursor.descriptor) }
        open = nil
        lastRead = nil
        held = nil
    }
}
