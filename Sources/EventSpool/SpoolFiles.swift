import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// One durable stream's files, in a directory of its own:
///
///     NNNNNNNNNNNNNNNNNNNN.seg   segments, named by their first sequence number (20 digits),
///                                appended with write(2) and at most `segmentSize` bytes each
///     cursor                     u64 LE: the first sequence number not yet delivered
///     dead                       dead letters: records moved out past the spool's bounds
///     stream                     what the directory is for (event and socket), for the operator
///
/// Append-only segment files rather than SQLite: one write(2) per event and no per-event
/// transaction (README "Durable delivery" gives the measurement). Only the last segment can end in
/// a torn record (the process or the machine died mid-write); opening truncates it there. A
/// segment is deleted once the cursor has passed all of it.
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
    private var cursorDescriptor: Int32 = -1
    private var deadDescriptor: Int32 = -1
    private(set) var deadCount = 0
    private(set) var deadOldest: Double?
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
            if let last = segments.last {
                let (next, validSize) = try Self.scan(path: path(of: last), first: last.first)
                if validSize < last.size {
                    guard truncate(path(of: last), off_t(validSize)) == 0 else { throw Self.failure("truncate", errno) }
                    segments[segments.count - 1].size = validSize
                }
                nextSequence = next
            }
            cursorDescriptor = try Self.open(directory + "/cursor", flags: O_RDWR | O_CREAT)
            var stored: UInt64 = 0
            if pread(cursorDescriptor, &stored, 8, 0) == 8 { cursor = UInt64(littleEndian: stored) }
            cursor = max(cursor, segments.first?.first ?? nextSequence)
            cursor = min(cursor, nextSequence)
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
        let size = segments[segments.count - 1].size
        let written = record.withUnsafeBytes { write(writeDescriptor, $0.baseAddress, $0.count) }
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
        var little = cursor.littleEndian
        _ = pwrite(cursorDescriptor, &little, 8, 0)
        while segments.count > 1, segments[1].first <= cursor {
            unlink(path(of: segments[0]))
            segments.removeFirst()
        }
        if let only = segments.first, cursor == nextSequence, only.size >= segmentSize {
            // Wholly delivered and full: the next append starts a fresh segment anyway.
            removeLastSegment()
        }
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
        var reader = SpoolReader.FileCursor(descriptor: deadDescriptor)
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
        for descriptor in [writeDescriptor, cursorDescriptor, deadDescriptor] where descriptor >= 0 {
            Glibc.close(descriptor)
        }
        writeDescriptor = -1
        cursorDescriptor = -1
        deadDescriptor = -1
    }

    // MARK: Helpers

    /// The sequence number after the last whole record of a segment, and the bytes up to there.
    private static func scan(path: String, first: UInt64) throws(StoreError) -> (next: UInt64, size: Int) {
        let descriptor = try open(path, flags: O_RDONLY)
        defer { Glibc.close(descriptor) }
        var reader = SpoolReader.FileCursor(descriptor: descriptor)
        var next = first
        while let record = reader.next() { next = record.sequence + 1 }
        return (next, reader.consumed)
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
