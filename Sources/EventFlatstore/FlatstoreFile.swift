#if canImport(Glibc)
    import Glibc
#endif
import EventInterface
import Synchronization

/// One file and its descriptor, shared by every subscription that writes the path.
///
/// A lock serialises writers and rotation; each line is one `write` on an `O_APPEND` descriptor,
/// so no line is torn or lost by a rotation, whoever writes.
final class FlatstoreFile: @unchecked Sendable {
    // `references` and `lastWrite` are guarded by the transport's table lock and `state`'s lock.
    var references = 1
    private(set) var lastWrite = 0.0

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

    func write(lines: [[UInt8]]) -> [DeliveryOutcome] {
        let now = transport.wallClock()
        var announcements: [(String, String)] = []
        let wasOpen = isOpen
        let outcomes = state.withLock { state -> [DeliveryOutcome] in
            lines.map { line in
                if let reason = rotationDue(&state, adding: line.count, now: now) {
                    if let old = rotate(&state) { announcements.append((reason, old)) }
                }
                if state.descriptor < 0 {
                    if let failure = open(&state, now: now) { return .failed(failure) }
                }
                let written = line.withUnsafeBytes { Glibc.write(state.descriptor, $0.baseAddress, $0.count) }
                guard written == line.count else {
                    let reason = written < 0 ? String(cString: strerror(errno)) : "short write"
                    Glibc.close(state.descriptor)
                    state.descriptor = -1
                    descriptorOpen.store(false, ordering: .relaxed)
                    return .failed(DeliveryFailure(.subscriberFailed, "cannot write \(path): \(reason)"))
                }
                state.size += line.count
                state.lines += 1
                lastWrite = now
                return .delivered
            }
        }
        for (reason, old) in announcements { announce(reason: reason, oldPath: old, now: now) }
        // Outside the lock: closing other files' descriptors takes their locks.
        if !wasOpen && isOpen { transport.makeRoomForDescriptor(except: self) }
        return outcomes
    }

    /// Which rotation, if any, is due before writing `count` more bytes.
    private func rotationDue(_ state: inout State, adding count: Int, now: Double) -> String? {
        if let period = options.rotatePeriod {
            let current = Int(now) / period
            if let filePeriod = state.period, filePeriod != current, state.lines > 0 { return "period" }
            if state.period == nil { state.period = current }
        }
        if let limit = options.rotateSize, state.size > 0, state.size + count > limit { return "size" }
        if let limit = options.rotateCount, state.lines >= limit { return "count" }
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

    private func open(_ state: inout State, now: Double) -> DeliveryFailure? {
        let descriptor = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode_t(options.filePermissions))
        guard descriptor >= 0 else {
            return DeliveryFailure(.subscriberFailed, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        if fstat(descriptor, &info) == 0 { state.size = Int(info.st_size) }
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
