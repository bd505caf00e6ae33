import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One file and its descriptor, shared by every subscription that writes the path.
///
/// A lock serialises writers and rotation; the whole lines between two rotations are one `write`
/// on an `O_APPEND` descriptor, so no line is torn or lost by a rotation, whoever writes.
final class FlatstoreFile: Sendable {
    /// When a line was last written (wall clock, the bits of a Double), read without the file's
    /// lock by the transport choosing which descriptor to close.
    private let lastWriteBits = Atomic<UInt64>(0)
    var lastWrite: Double { Double(bitPattern: lastWriteBits.load(ordering: .relaxed)) }

    let path: String
    private unowned let transport: FlatstoreTransport
    private struct State {
        var descriptor: Int32 = -1
        var size = 0
        var lines = 0
        /// The wall-clock period the current file belongs to.
        var period: Int?
        /// When this file last announced a rotation (at most one per second).
        var lastAnnouncement = -Double.infinity
    }
    private let state = Mutex(State())
    /// Mirrors `state.descriptor >= 0`, readable without the file's lock (other files ask while
    /// they hold their own).
    private let descriptorOpen = Atomic<Bool>(false)

    init(path: String, transport: FlatstoreTransport) {
        self.path = path
        self.transport = transport
    }

    var isOpen: Bool { descriptorOpen.load(ordering: .relaxed) }

    private var options: FlatstoreOptions { transport.options }

    func write(_ line: [UInt8]) -> DeliveryOutcome {
        write(lines: [line])[0]
    }

    /// Writes the lines in order, as few `write` calls as rotation allows: the lines between two
    /// rotations go out as one `O_APPEND` write (whole, so still never interleaved with another
    /// writer's lines). One write per line could not keep up with a release build raising over MI:
    /// a live flatstore member's queue filled and dropped events.
    func write(lines: [[UInt8]]) -> [DeliveryOutcome] {
        let now = transport.wallClock()
        var announcements: [(String, String)] = []
        let wasOpen = isOpen
        let outcomes = state.withLock { state -> [DeliveryOutcome] in
            var outcomes = [DeliveryOutcome](repeating: .delivered, count: lines.count)
            var run: [UInt8] = []
            var runLines: [Int] = []
            func flush() {
                guard !runLines.isEmpty else { return }
                defer {
                    run.removeAll(keepingCapacity: true)
                    runLines.removeAll(keepingCapacity: true)
                }
                if state.descriptor < 0, let failure = open(&state, now: now) {
                    for index in runLines { outcomes[index] = .failed(failure) }
                    return
                }
                let written = run.withUnsafeBytes { Glibc.write(state.descriptor, $0.baseAddress, $0.count) }
                if written == run.count {
                    state.size += run.count
                    state.lines += runLines.count
                    lastWriteBits.store(now.bitPattern, ordering: .relaxed)
                    return
                }
                // Lines wholly written count as delivered; the rest failed.
                let reason = written < 0 ? String(cString: strerror(errno)) : "short write"
                let failure = DeliveryFailure(.subscriberFailed, "cannot write \(path): \(reason)")
                var end = 0
                for index in runLines {
                    end += lines[index].count
                    if written >= 0 && end <= written {
                        state.size += lines[index].count
                        state.lines += 1
                    } else {
                        outcomes[index] = .failed(failure)
                    }
                }
                Glibc.close(state.descriptor)
                state.descriptor = -1
                descriptorOpen.store(false, ordering: .relaxed)
            }
            for (index, line) in lines.enumerated() {
                if let reason = rotationDue(
                    &state, pendingBytes: run.count, pendingLines: runLines.count, adding: line.count, now: now)
                {
                    flush()
                    if let old = rotate(&state) { announcements.append((reason, old)) }
                }
                run.append(contentsOf: line)
                runLines.append(index)
            }
            flush()
            return outcomes
        }
        for (reason, old) in announcements { announce(reason: reason, oldPath: old, now: now) }
        // Outside the lock: closing other files' descriptors takes their locks.
        if !wasOpen && isOpen { transport.makeRoomForDescriptor(except: self) }
        return outcomes
    }

    /// Which rotation, if any, is due before writing `count` more bytes after the pending ones.
    private func rotationDue(
        _ state: inout State, pendingBytes: Int, pendingLines: Int, adding count: Int, now: Double
    ) -> String? {
        let size = state.size + pendingBytes
        let lines = state.lines + pendingLines
        if let period = options.rotatePeriod {
            let current = Int(now) / period
            if let filePeriod = state.period, filePeriod != current, lines > 0 { return "period" }
            if state.period == nil { state.period = current }
        }
        if let limit = options.rotateSize, size > 0, size + count > limit { return "size" }
        if let limit = options.rotateCount, lines >= limit { return "count" }
        return nil
    }

    /// Renames PATH to PATH.1 (shifting older ones, keeping `rotate_keep`) and closes the
    /// descriptor so the next write opens a new file. Returns the old file's new name.
    private func rotate(_ state: inout State) -> String? {
        if state.descriptor >= 0 {
            Glibc.close(state.descriptor)
            state.descriptor = -1
            descriptorOpen.store(false, ordering: .relaxed)
        }
        for index in stride(from: options.rotateKeep - 1, through: 1, by: -1) {
            _ = Glibc.rename("\(path).\(index)", "\(path).\(index + 1)")
        }
        let renamed = Glibc.rename(path, "\(path).1") == 0
        state.size = 0
        state.lines = 0
        state.period = nil
        return renamed ? "\(path).1" : nil
    }

    /// Opens the file inside its directory's real path (checked against `allowed_dirs` again: a
    /// link may have been put in since subscribing), never following a link at the last step and
    /// never blocking (`O_NONBLOCK`: a FIFO put there would otherwise hold the writer forever);
    /// anything but a regular file is refused.
    private func open(_ state: inout State, now: Double) -> DeliveryFailure? {
        let directory: String
        do throws(SocketError) {
            directory = try PathPolicy(allowedDirs: options.allowedDirs).realDirectory(
                of: path, kind: "flatstore", socket: "flatstore:\(path)")
        } catch {
            return DeliveryFailure(.subscriberFailed, "cannot open \(path): \(error.message)")
        }
        let directoryDescriptor = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryDescriptor >= 0 else {
            return DeliveryFailure(.subscriberFailed, "cannot open \(directory): \(String(cString: strerror(errno)))")
        }
        defer { Glibc.close(directoryDescriptor) }
        let name = String(path[path.index(after: path.lastIndex(of: "/") ?? path.startIndex)...])
        let descriptor = openat(
            directoryDescriptor, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
            mode_t(options.filePermissions))
        guard descriptor >= 0 else {
            let reason = errno == ELOOP ? "a symbolic link" : String(cString: strerror(errno))
            return DeliveryFailure(.subscriberFailed, "cannot open \(path): \(reason)")
        }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(descriptor)
            return DeliveryFailure(.subscriberFailed, "cannot open \(path): not a regular file")
        }
        state.size = Int(info.st_size)
        if let period = options.rotatePeriod { state.period = Int(now) / period }
        state.descriptor = descriptor
        descriptorOpen.store(true, ordering: .relaxed)
        return nil
    }

    /// Reopens the path (after an outside move, or on request): the next line goes to a new file.
    func reopen(reason: String) {
        let now = transport.wallClock()
        state.withLock { state in
            if state.descriptor >= 0 { Glibc.close(state.descriptor) }
            state.descriptor = -1
            descriptorOpen.store(false, ordering: .relaxed)
            state.size = 0
            state.lines = 0
            _ = open(&state, now: now)
        }
        announce(reason: reason, oldPath: path, now: now)
    }

    private func announce(reason: String, oldPath: String, now: Double) {
        let due = state.withLock { state -> Bool in
            guard now - state.lastAnnouncement >= 1 else { return false }
            state.lastAnnouncement = now
            return true
        }
        if due { transport.announceRotation(reason: reason, path: path, oldPath: oldPath) }
    }

    /// Closes the descriptor only (too many open files); the next write reopens it.
    func closeDescriptor() {
        state.withLock { state in
            if state.descriptor >= 0 { Glibc.close(state.descriptor) }
            state.descriptor = -1
            descriptorOpen.store(false, ordering: .relaxed)
        }
    }

    func close() { closeDescriptor() }
}
