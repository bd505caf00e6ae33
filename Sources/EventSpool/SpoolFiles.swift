import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// One durable stream's files, in a directory of its own:
///
///     NNNNNNNNNNNNNNNNNNNN.seg   segments, named by their first sequence number (20 digits),
///                                appended with write(2) and at most `segmentSize` bytes each
///     cursor                     u64 LE the first sequence number not yet delivered, u32 LE its
///                                CRC-32, "EVIc"; replaced whole (written beside, renamed over)
///     dead                       dead letters: records moved out past the spool's bounds
///     corrupt                    damaged bytes moved out of the segments, each behind a header
///                                (``CorruptEntry``): nothing found damaged is deleted
///     stream                     what the directory is for (event and socket), for the operator
///
/// Append-only segment files rather than SQLite: one write(2) per event and no per-event
/// transaction (Docs/durable.md gives the measurement). Only the last segment can end in
/// a torn record (the process or the machine died mid-write); opening truncates it there. Damage
/// anywhere else (a flipped byte, a bad sector) costs only the records it touched: readers step
/// over it to the next whole record, and ``quarantine(_:in:)`` copies the bytes to `corrupt` and
/// overwrites them with padding. A segment is deleted once the cursor has passed all of it, and
/// the one being written once everything in it is delivered and it holds ``reclaimSize`` or more
/// (Docs/durable.md: how much delivered data a stream keeps on disk).
///
/// Not thread-safe: its ``SpoolStream`` calls it under its lock. Reading is ``SpoolReader``'s,
/// outside the lock, from the paths and bounds taken under it.
final class SpoolFiles {
    struct Segment: Sendable, Hashable {
        var first: UInt64
        var size: Int
    }

    let directory: String
    let segmentSize: Int
    let fsyncAlways: Bool
    private(set) var segments: [Segment] = []
    private var writeDescriptor: Int32 = -1
    /// The sequence number the next event gets.
    private(set) var nextSequence: UInt64 = 1
    /// The first sequence number not yet delivered (persisted in `cursor`).
    private(set) var cursor: UInt64 = 1
    private var corruptDescriptor: Int32 = -1
    private var deadDescriptor: Int32 = -1
    private(set) var deadCount = 0
    private(set) var deadOldest: Double?
    /// Records lost to damage and the damaged bytes, over the stream's life (read from `corrupt`).
    private(set) var corruptRecords = 0
    private(set) var corruptBytes = 0
    /// Damage moved aside in this run, by segment and offset: reported once however often it is read.
    private var quarantined: Set<[UInt64]> = []
    /// Said once, at opening: why the cursor file was not used (the oldest record is delivered
    /// again rather than anything lost).
    private(set) var cursorWarning: String?
    /// Damage moved aside at opening (in the segment being written), for the stream to log.
    private(set) var damageAtOpening: [(segment: UInt64, damage: SpoolReader.Damage)] = []

    /// A fully delivered segment being written is deleted from this size on, so that a stream
    /// whose subscriber keeps up holds at most this much delivered data, and space given back
    /// once a backlog is delivered (a disk that filled up) is free for the next events at once.
    static let reclaimSize = 64 << 10
    /// Written since the last fsync.
    private(set) var dirty = false

    /// Opens (creating) the stream's directory: finds the segments, truncates a torn tail, reads
    /// the cursor and counts the dead letters.
    init(directory: String, describing description: String, segmentSize: Int, fsyncAlways: Bool) throws(StoreError) {
        self.directory = directory
        self.segmentSize = segmentSize
        self.fsyncAlways = fsyncAlways
        try Self.makeDirectory(directory)
        let names = try Self.list(directory)
        segments = names.compactMap { name -> Segment? in
            guard name.hasSuffix(".seg"), let first = UInt64(name.dropLast(4)) else { return nil }
            return Segment(first: first, size: Self.size(of: directory + "/" + name))
        }.sorted { $0.first < $1.first }
        do throws(StoreError) {
            corruptDescriptor = try Self.open(directory + "/corrupt", flags: O_RDWR | O_CREAT | O_APPEND)
            for entry in CorruptEntry.readAll(descriptor: corruptDescriptor) {
                corruptRecords += entry.missing
                corruptBytes += entry.length
            }
            if let last = segments.last {
                let (next, validSize, damage) = try Self.scan(path: path(of: last), first: last.first)
                for found in damage { try quarantine(found, in: last.first) }
                damageAtOpening = damage.map { (last.first, $0) }
                if validSize < last.size {
                    guard truncate(path(of: last), off_t(validSize)) == 0 else { throw Self.failure("truncate", errno) }
                    segments[segments.count - 1].size = validSize
                }
                nextSequence = next
            }
            readCursor()
            deadDescriptor = try Self.open(directory + "/dead", flags: O_RDWR | O_CREAT | O_APPEND)
            for record in readDead() {
                deadCount += 1
                deadOldest = min(deadOldest ?? record.storedAt, record.storedAt)
            }
            let about = try Self.open(directory + "/stream", flags: O_WRONLY | O_CREAT | O_TRUNC)
            _ = Array(description.utf8).withUnsafeBytes { write(about, $0.baseAddress, $0.count) }
            Glibc.close(about)
        } catch {
            close()
            throw error
        }
    }

    func path(of segment: Segment) -> String {
        let digits = String(segment.first)
        return directory + "/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".seg"
    }

    /// Bytes the segments take (the delivered start of the oldest one included).
    var bytes: Int { segments.reduce(0) { $0 + $1.size } }

    /// Events stored and not yet delivered.
    var pending: Int { Int(nextSequence - cursor) }

    /// Stores one event; returns its sequence number. On failure nothing of it remains.
    func append(notification: [UInt8], storedAt: Double) throws(StoreError) -> UInt64 {
        let sequence = nextSequence
        let record = SpoolRecord(sequence: sequence, storedAt: storedAt, notification: notification).encoded()
        if writeDescriptor < 0 || (segments.last?.size ?? 0) >= segmentSize {
            try startSegment(first: sequence)
        }
        var size = segments[segments.count - 1].size
        var written = record.withUnsafeBytes { write(writeDescriptor, $0.baseAddress, $0.count) }
        if written != record.count, cursor == nextSequence, size > 0 {
            // The disk is full (or the write failed) and all this segment holds is delivered:
            // its space is given back and the event written into a fresh segment.
            _ = ftruncate(writeDescriptor, off_t(size))
            removeLastSegment()
            try startSegment(first: sequence)
            size = 0
            written = record.withUnsafeBytes { write(writeDescriptor, $0.baseAddress, $0.count) }
        }
        guard written == record.count else {
            let code = written < 0 ? errno : ENOSPC
            _ = ftruncate(writeDescriptor, off_t(size))  // a short write leaves no torn record behind
            throw Self.failure("write", code)
        }
        if fsyncAlways, fdatasync(writeDescriptor) != 0 { throw Self.failure("fsync", errno) }
        segments[segments.count - 1].size = size + record.count
        nextSequence = sequence + 1
        dirty = !fsyncAlways
        return sequence
    }

    private func startSegment(first: UInt64) throws(StoreError) {
        let segment = Segment(first: first, size: 0)
        let descriptor = try Self.open(path(of: segment), flags: O_WRONLY | O_CREAT | O_APPEND)
        if writeDescriptor >= 0 {
            _ = fdatasync(writeDescriptor)  // the segment is done: its last writes reach the disk now
            Glibc.close(writeDescriptor)
        }
        writeDescriptor = descriptor
        if segments.last?.first == first {
            segments[segments.count - 1].size = Self.size(of: path(of: segment))
        } else {
            segments.append(segment)
        }
    }

    /// Everything before `sequence` is delivered (or moved to dead letters): the cursor moves
    /// there, and segments wholly before it are deleted.
    func advanceCursor(to sequence: UInt64) {
        guard sequence > cursor else { return }
        cursor = min(sequence, nextSequence)
        writeCursor()
        while segments.count > 1, segments[1].first <= cursor {
            unlink(path(of: segments[0]))
            segments.removeFirst()
        }
        if let only = segments.first, cursor == nextSequence, only.size >= min(segmentSize, Self.reclaimSize) {
            // Wholly delivered: its space goes back now, and the next append starts a fresh segment.
            removeLastSegment()
        }
    }

    // MARK: The cursor

    /// The cursor as stored: 8 bytes of sequence number, their CRC-32 and a magic, so that a
    /// damaged or foreign file is told from a cursor. Written beside and renamed over, so that
    /// it is never half old and half new.
    static let cursorMagic: [UInt8] = Array("EVIc".utf8)

    private func writeCursor() {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        bytes.appendLittleEndian(cursor)
        bytes.appendLittleEndian(CRC32.checksum(bytes))
        bytes += Self.cursorMagic
        let temporary = directory + "/cursor.new"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return }
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        Glibc.close(descriptor)
        if written == bytes.count { rename(temporary, directory + "/cursor") }
    }

    /// Reads the stored cursor. One that does not check, or points past what is stored, is not
    /// trusted: delivery starts again at the oldest record kept (duplicates, never a loss).
    private func readCursor() {
        let oldest = segments.first?.first ?? nextSequence
        cursor = oldest
        let descriptor = Glibc.open(directory + "/cursor", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }  // a new stream
        defer { Glibc.close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        let slice = bytes[0..<max(0, count)]
        let stored: UInt64?
        switch count {
        case 0: stored = nil  // created, never written
        case 8: stored = slice.readLittleEndian(UInt64.self, at: 0)  // written by evi before the checksum
        case 16
        where Array(slice[12..<16]) == Self.cursorMagic
            && slice.readLittleEndian(UInt32.self, at: 8) == CRC32.checksum(slice[0..<8]):
            stored = slice.readLittleEndian(UInt64.self, at: 0)
        default:
            cursorWarning = "the cursor file does not check (\(max(0, count)) bytes)"
            return
        }
        guard let stored else { return }
        guard !segments.isEmpty else {
            cursor = nextSequence  // nothing kept: everything was delivered
            return
        }
        guard stored <= nextSequence else {
            cursorWarning = "the cursor file says \(stored), past the last record stored (\(nextSequence - 1))"
            return
        }
        cursor = max(stored, oldest)
    }

    /// Deletes the one segment left, the one being written; the next append starts a new one.
    private func removeLastSegment() {
        guard let only = segments.first, segments.count == 1 else { return }
        if writeDescriptor >= 0 {
            Glibc.close(writeDescriptor)
            writeDescriptor = -1
        }
        unlink(path(of: only))
        segments = []
    }

    /// A duplicate of the segment being written, for a background fsync that must not race a
    /// rotation closing it; nil when nothing was written since the last one.
    func descriptorToSync() -> Int32? {
        guard dirty, writeDescriptor >= 0 else { return nil }
        dirty = false
        let copy = dup(writeDescriptor)
        return copy >= 0 ? copy : nil
    }

    // MARK: Damage

    /// Moves damaged bytes of segment `first` aside: copied to `corrupt` behind a header saying
    /// where they were and how many records they took, then overwritten in place with padding,
    /// so that every later read steps over them silently. Damage already moved in this run is
    /// not counted twice. Returns whether it was new.
    @discardableResult
    func quarantine(_ damage: SpoolReader.Damage, in first: UInt64) throws(StoreError) -> Bool {
        guard damage.length > 0, quarantined.insert([first, UInt64(damage.offset)]).inserted else { return false }
        let path = path(of: Segment(first: first, size: 0))
        let descriptor = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw Self.failure("open \(path)", errno) }
        defer { Glibc.close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: damage.length)
        let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(damage.offset)) }
        bytes.removeLast(damage.length - max(0, count))
        let entry = CorruptEntry(segment: first, offset: damage.offset, length: bytes.count, missing: damage.missing)
        let record = entry.header() + bytes
        let written = record.withUnsafeBytes { write(corruptDescriptor, $0.baseAddress, $0.count) }
        guard written == record.count else {
            throw Self.failure("write \(directory)/corrupt", written < 0 ? errno : ENOSPC)
        }
        corruptRecords += damage.missing
        corruptBytes += bytes.count
        // Padding in pieces no larger than a record may be; damage smaller than the smallest
        // record stays as it is (readers step over it again; it is not counted again in this run).
        var offset = damage.offset
        var left = bytes.count
        while left >= SpoolRecord.minimumPadding {
            let size = left <= SpoolRecord.maximumPayload + SpoolRecord.headerSize ? left : SpoolRecord.maximumPayload
            let padding = SpoolRecord.padding(size: size)
            _ = padding.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
            offset += size
            left -= size
        }
        return true
    }

    // MARK: Dead letters

    func appendDead(_ records: [SpoolRecord]) throws(StoreError) {
        guard !records.isEmpty else { return }
        let bytes = records.flatMap { $0.encoded() }
        let written = bytes.withUnsafeBytes { write(deadDescriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw Self.failure("write dead letters", written < 0 ? errno : ENOSPC) }
        deadCount += records.count
        for record in records { deadOldest = min(deadOldest ?? record.storedAt, record.storedAt) }
    }

    func readDead() -> [SpoolRecord] {
        var records: [SpoolRecord] = []
        var reader = SpoolReader.FileCursor(descriptor: deadDescriptor, ordered: false)
        while let record = reader.next() { records.append(record) }
        return records
    }

    /// Forgets the dead letters; returns how many there were.
    func clearDead() -> Int {
        let count = deadCount
        _ = ftruncate(deadDescriptor, 0)
        deadCount = 0
        deadOldest = nil
        return count
    }

    /// Drops every stored, undelivered event; returns how many.
    func dropPending() -> Int {
        let dropped = pending
        advanceCursor(to: nextSequence)
        removeLastSegment()
        return dropped
    }

    func close() {
        for descriptor in [writeDescriptor, corruptDescriptor, deadDescriptor] where descriptor >= 0 {
            Glibc.close(descriptor)
        }
        writeDescriptor = -1
        corruptDescriptor = -1
        deadDescriptor = -1
    }

    // MARK: Helpers

    /// The sequence number after the last whole record of a segment, the bytes up to there, and
    /// the damage stepped over before it (what follows the last record is a torn tail).
    private static func scan(path: String, first: UInt64) throws(StoreError) -> (
        next: UInt64, size: Int, damage: [SpoolReader.Damage]
    ) {
        let descriptor = try open(path, flags: O_RDONLY)
        defer { Glibc.close(descriptor) }
        var reader = SpoolReader.FileCursor(descriptor: descriptor, after: first &- 1)
        var next = first
        var damage: [SpoolReader.Damage] = []
        while let record = reader.next() {
            next = record.sequence + 1
            damage += reader.takeDamage()
        }
        return (next, reader.consumed, damage)
    }

    static func makeDirectory(_ path: String) throws(StoreError) {
        var built = ""
        for part in path.split(separator: "/", omittingEmptySubsequences: false) {
            built += built.isEmpty && path.hasPrefix("/") ? "/" + part : (built.isEmpty ? "" : "/") + part
            if built.isEmpty || built == "/" { continue }
            if mkdir(built, 0o700) != 0 && errno != EEXIST { throw failure("create \(built)", errno) }
        }
    }

    /// The names in `directory` (`.` and `..` included).
    static func list(_ directory: String) throws(StoreError) -> [String] {
        guard let handle = opendir(directory) else { throw failure("read \(directory)", errno) }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            names.append(name)
        }
        return names
    }

    private static func size(of path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    private static func open(_ path: String, flags: Int32) throws(StoreError) -> Int32 {
        let descriptor = Glibc.open(path, flags | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw failure("open \(path)", errno) }
        return descriptor
    }

    static func failure(_ operation: String, _ code: Int32) -> StoreError {
        StoreError("\(operation): \(String(cString: strerror(code)))")
    }
}

/// The header before each run of damaged bytes in a stream's `corrupt` file: where they were and
/// how many records they took, so that an operator (or a tool) can tell what was lost.
///
///     "EVIX", u64 LE segment (its first sequence number), u64 LE offset in it,
///     u32 LE length of the bytes that follow, u32 LE records lost
struct CorruptEntry: Sendable, Equatable {
    static let magic: [UInt8] = Array("EVIX".utf8)
    static let size = 28

    var segment: UInt64
    var offset: Int
    var length: Int
    var missing: Int

    func header() -> [UInt8] {
        var bytes = Self.magic
        bytes.appendLittleEndian(segment)
        bytes.appendLittleEndian(UInt64(offset))
        bytes.appendLittleEndian(UInt32(clamping: length))
        bytes.appendLittleEndian(UInt32(clamping: missing))
        return bytes
    }

    /// Every entry of the file, in order (stops at anything that is not a header).
    static func readAll(descriptor: Int32) -> [CorruptEntry] {
        var entries: [CorruptEntry] = []
        var position = 0
        var header = [UInt8](repeating: 0, count: size)
        while true {
            let count = header.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(position)) }
            guard count == size, Array(header[0..<4]) == magic else { break }
            let slice = header[...]
            let entry = CorruptEntry(
                segment: slice.readLittleEndian(UInt64.self, at: 4),
                offset: Int(clamping: slice.readLittleEndian(UInt64.self, at: 12)),
                length: Int(slice.readLittleEndian(UInt32.self, at: 20)),
                missing: Int(slice.readLittleEndian(UInt32.self, at: 24)))
            entries.append(entry)
            position += size + entry.length
        }
        return entries
    }
}
