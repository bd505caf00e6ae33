import EventInterface
import Logging
import Synchronization

/// One durable line of delivery: its files, the recent events still in memory, and the task that
/// delivers them in order and retries what failed.
///
/// Storing (the raising thread) writes the event to the current segment under the lock and, while
/// the task is caught up and the memory window has room, keeps it in memory too, so a healthy
/// subscriber never reads its events back from disk. A subscriber that fell behind (down, slow,
/// or a restart with a backlog) is fed from the segments until it catches up with the tail. An
/// event leaves the spool (the cursor passes it) only once delivered; a failure is retried, in
/// order, after the backoff. Past the bounds (`max_bytes`, the total, `max_age`) the oldest events
/// move to dead letters.
final class SpoolStream: Sendable {
    struct Settings: Sendable {
        var maxBytes: Int
        var maxAge: Double
        var retryMinimum: Double
        var retryMaximum: Double
        /// Events (and bytes) kept in memory for a caught-up delivery task.
        var windowCount: Int
        var windowBytes: Int
    }

    /// A stored event in hand: its sequence number, when it was stored (wall clock), the event.
    struct Item: Sendable {
        let sequence: UInt64
        let storedAt: Double
        let event: RaisedEvent
    }

    private struct State {
        var files: SpoolFiles
        var window: [Item] = []
        var windowStart = 0
        var windowBytes = 0
        /// The task has read everything stored: new events may go to the window.
        var caughtUp = true
        /// The next sequence number the task takes (at or after the cursor).
        var readFrom: UInt64
        /// Taken and failed, retried before anything else, in order.
        var retry: [Item] = []
        /// Moved on by a purge or a shedding: results of a delivery begun before are stale.
        var generation = 0
        var waiter: CheckedContinuation<Void, Never>?
        var waiterTicket = 0
        var closing = false
        var shedRequested = false
        var retryAt: Double?
        var lastError: String?
        /// Dead letters made since the last log line about them, and when that was (monotonic ns):
        /// one line per 10 s however many segments are shed.
        var deadSinceLog = 0
        var deadLoggedAt: UInt64?

        mutating func takeWaiter() -> CheckedContinuation<Void, Never>? {
            defer { waiter = nil }
            return waiter
        }
    }

    /// The subscription's event, its socket (printed), and what this stream delivers to.
    let event: Event
    let socket: String
    let identity: String
    let name: String
    let transport: String
    let directory: String
    private let settings: Settings
    private let deliverer: any EventDeliverer
    private let spool: SpoolTotals
    private let clock: any EventClock
    private let logger: Logger
    private let state: Mutex<State>
    private let finished = CompletionSignal()
    static let batchSize = 256

    init(
        files: sending SpoolFiles, event: Event, socket: String, identity: String, stream: DurableStream,
        settings: Settings,
        spool: SpoolTotals, clock: any EventClock, logger: Logger
    ) {
        self.event = event
        self.socket = socket
        self.identity = identity
        self.name = stream.name
        self.transport = stream.transport
        self.directory = files.directory
        self.settings = settings
        self.deliverer = stream.deliverer
        self.spool = spool
        self.clock = clock
        self.logger = logger
        let pending = files.pending
        spool.add(bytes: files.bytes)
        let cursor = files.cursor
        let cursorWarning = files.cursorWarning
        let damage = files.damageAtOpening
        state = Mutex(State(files: files, caughtUp: pending == 0, readFrom: cursor))
        if let warning = cursorWarning {
            logger.warning(
                "spool: cursor unreadable, delivering again from the oldest event kept",
                metadata: ["event": "\(event.name)", "socket": "\(name)", "reason": "\(warning)"])
        }
        spool.recordCorrupt(0, event: event.name, socket: stream.name)  // the series exists from the start
        if pending > 0 {
            logger.info(
                "spool: delivering what an earlier run stored",
                metadata: ["event": "\(event.name)", "socket": "\(name)", "events": "\(pending)"])
        }
        announce(damage)
        Task { await self.run() }
    }

    // MARK: Damage

    /// Moves what readers found damaged aside (``SpoolFiles/quarantine(_:in:)``) and says so.
    private func quarantine(_ damage: [(segment: UInt64, damage: SpoolReader.Damage)]) {
        let moved = state.withLock { state in
            damage.filter { found in
                do throws(StoreError) {
                    return try state.files.quarantine(found.damage, in: found.segment)
                } catch {
                    logger.error(
                        "spool: cannot move damaged bytes aside", metadata: ["socket": "\(name)", "reason": "\(error)"])
                    return false
                }
            }
        }
        announce(moved)
    }

    private func announce(_ damage: [(segment: UInt64, damage: SpoolReader.Damage)]) {
        for (segment, found) in damage {
            logger.warning(
                "spool: damaged records skipped, their bytes moved to corrupt",
                metadata: [
                    "event": "\(event.name)", "socket": "\(name)", "directory": "\(directory)",
                    "segment": "\(segment)", "bytes": "\(found.offset)..<\(found.offset + found.length)",
                    "records": "\(found.missing)",
                ])
            spool.recordCorrupt(found.missing, event: event.name, socket: name)
        }
    }

    // MARK: Storing (raising threads)

    func store(_ event: RaisedEvent, notification: [UInt8], storedAt: Double) throws(StoreError) {
        deliverer.prepare(event)
        let settings = self.settings
        let (waiter, added) = try state.withLock {
            state throws(StoreError) -> (CheckedContinuation<Void, Never>?, Int) in
            guard !state.closing else { throw StoreError("shutting down") }
            let before = state.files.bytes
            let sequence = try state.files.append(notification: notification, storedAt: storedAt)
            let available = state.window.count - state.windowStart
            if state.caughtUp && available < settings.windowCount
                && state.windowBytes + event.size <= settings.windowBytes
            {
                state.window.append(Item(sequence: sequence, storedAt: storedAt, event: event))
                state.windowBytes += event.size
            } else {
                state.caughtUp = false
            }
            // Past the bound the woken task sheds before it delivers.
            if state.files.bytes > settings.maxBytes { state.shedRequested = true }
            return (state.takeWaiter(), state.files.bytes - before)
        }
        waiter?.resume()
        if spool.add(bytes: added) { requestShedding() }
    }

    /// Asks the task to move its oldest events to dead letters until within bounds.
    func requestShedding() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.shedRequested = true
            return state.takeWaiter()
        }?.resume()
    }

    // MARK: The delivery task

    private enum Step {
        case batch([Item], generation: Int)
        case read(from: UInt64, end: UInt64, segments: [(first: UInt64, path: String)])
        case shed
        case wait
        case finished
    }

    private func run() async {
        var reader = SpoolReader()
        var backoff = RetryBackoff(minimum: settings.retryMinimum, maximum: settings.retryMaximum)
        while true {
            let step = state.withLock { state -> Step in
                if state.closing { return .finished }
                if state.shedRequested || self.headTooOld(state) { return .shed }
                if !state.retry.isEmpty { return .batch(state.retry, generation: state.generation) }
                // Window entries the cursor has passed (shed, purged) are dropped.
                while state.windowStart < state.window.count,
                    state.window[state.windowStart].sequence < state.readFrom
                {
                    state.windowBytes -= state.window[state.windowStart].event.size
                    state.windowStart += 1
                }
                if state.windowStart < state.window.count, state.window[state.windowStart].sequence == state.readFrom {
                    let end = min(state.window.count, state.windowStart + Self.batchSize)
                    let batch = Array(state.window[state.windowStart..<end])
                    for item in batch { state.windowBytes -= item.event.size }
                    state.windowStart = end
                    if state.windowStart == state.window.count {
                        state.window.removeAll(keepingCapacity: true)
                        state.windowStart = 0
                    }
                    state.readFrom = (batch.last?.sequence ?? state.readFrom) + 1
                    return .batch(batch, generation: state.generation)
                }
                if state.readFrom < state.files.nextSequence {
                    let end =
                        state.windowStart < state.window.count
                        ? state.window[state.windowStart].sequence : state.files.nextSequence
                    let files = state.files
                    return .read(
                        from: state.readFrom, end: end, segments: files.segments.map { ($0.first, files.path(of: $0)) })
                }
                state.caughtUp = true
                return .wait
            }
            switch step {
            case .finished:
                reader.close()
                await deliverer.close()
                finished.signal()
                return
            case .wait:
                await sleep(upTo: nil)
            case .shed:
                shed(&reader)
            case .read(let from, let end, let segments):
                let records = reader.read(from: from, end: end, limit: Self.batchSize, segments: segments)
                let resume = reader.resumeFrom
                let damage = reader.takeDamage()
                if !damage.isEmpty { quarantine(damage) }
                guard !records.isEmpty else {
                    if resume > from {
                        // Only records lost to damage were there: the cursor passes them.
                        let freed = state.withLock { state -> Int in
                            guard state.readFrom == from else { return 0 }
                            let before = state.files.bytes
                            state.readFrom = resume
                            if state.files.cursor == from { state.files.advanceCursor(to: resume) }
                            return before - state.files.bytes
                        }
                        _ = spool.add(bytes: -freed)
                        continue
                    }
                    // Nothing readable where events should be: the files went away under us (purged).
                    state.withLock { $0.readFrom = max($0.readFrom, $0.files.cursor) }
                    await sleep(upTo: 0.1)
                    continue
                }
                let items = records.map(item(from:))
                let taken = state.withLock { state -> Bool in
                    guard state.readFrom == from else { return false }
                    state.readFrom = max((records.last?.sequence ?? from) + 1, resume)
                    return true
                }
                if taken { await deliver(items, generation: nil, backoff: &backoff) }
            case .batch(let items, let generation):
                await deliver(items, generation: generation, backoff: &backoff)
            }
        }
    }

    private func item(from record: SpoolRecord) -> Item {
        let params: EventParams
        switch IngressDecoder().decode(record.notification) {
        case .success(let message): params = message.params
        case .failure: params = .none  // never written by evi; delivered as stored
        }
        return Item(
            sequence: record.sequence, storedAt: record.storedAt,
            event: RaisedEvent(event: event, params: params, raisedAt: clock.now(), jsonRPC: record.notification))
    }

    /// Delivers `items` (the retry list when `generation` is given, else freshly taken) and moves
    /// the cursor past what was delivered; what failed is retried after the backoff.
    private func deliver(_ items: [Item], generation: Int?, backoff: inout RetryBackoff) async {
        let outcomes = await deliverer.deliver(batch: items.map(\.event))
        var failed: [Item] = []
        var lastFailure = ""
        for (item, outcome) in zip(items, outcomes) {
            if case .failed(let failure) = outcome {
                failed.append(item)
                lastFailure = failure.reason
            }
        }
        let wait = failed.isEmpty ? 0 : backoff.failed()
        if failed.isEmpty { backoff.succeeded() }
        let now = clock.now()
        let freed = state.withLock { state -> Int in
            let before = state.files.bytes
            let stale = generation.map { $0 != state.generation } ?? false
            if !stale {
                // Everything before `readFrom` was taken, and is delivered or failed: the cursor
                // stops at the first failure (events after it that were delivered are not sent again).
                let cursor = failed.first?.sequence ?? state.readFrom
                state.files.advanceCursor(to: cursor)
                state.retry = failed
                if failed.isEmpty {
                    if state.lastError != nil, state.retryAt != nil {
                        logger.info("spool: delivering again", metadata: ["socket": "\(name)"])
                    }
                    state.retryAt = nil
                } else {
                    state.retryAt = now + wait
                    state.lastError = lastFailure
                }
            }
            return before - state.files.bytes
        }
        _ = spool.add(bytes: -freed)
        guard !failed.isEmpty else { return }
        spool.recordRetries(failed.count, transport: transport)
        if wait == settings.retryMinimum {
            logger.warning(
                "spool: delivery failed, retrying",
                metadata: [
                    "event": "\(event.name)", "socket": "\(name)", "reason": "\(lastFailure)",
                    "events": "\(failed.count)",
                ])
        }
        let until = now + wait
        while clock.now() < until {
            await sleep(upTo: min(1, until - clock.now()))
            let interrupted = state.withLock { $0.closing || $0.shedRequested || self.headTooOld($0) }
            if interrupted { return }
        }
    }

    /// Whether the oldest event in hand is past `max_age` (only what is in hand is looked at:
    /// the retry list, whose head is the oldest undelivered event).
    private func headTooOld(_ state: borrowing State) -> Bool {
        guard let head = state.retry.first else { return false }
        return unixTime() - head.storedAt > settings.maxAge
    }

    /// Moves the oldest undelivered events to dead letters while the stream is past a bound.
    private func shed(_ reader: inout SpoolReader) {
        reader.close()
        while true {
            let plan = state.withLock { state -> (from: UInt64, end: UInt64, segments: [(UInt64, String)])? in
                state.shedRequested = false
                let files = state.files
                // Past the byte bound: the rest of the oldest segment at once (the one being
                // written is never shed for bytes); past the age: the head.
                let overBytes = (files.bytes > settings.maxBytes || spool.overTotal) && files.segments.count > 1
                let tooOld = headTooOld(state)
                guard overBytes || tooOld, files.cursor < files.nextSequence else { return nil }
                // The run of old events at the head of the retry list, at once.
                var end = files.cursor + 1
                if !overBytes {
                    let limit = unixTime() - settings.maxAge
                    for item in state.retry.dropFirst() {
                        guard item.sequence == end, item.storedAt < limit else { break }
                        end += 1
                    }
                }
                if overBytes { end = files.segments[1].first }
                return (files.cursor, end, files.segments.map { ($0.first, files.path(of: $0)) })
            }
            guard let plan else { return }
            var records: [SpoolRecord] = []
            while records.count < Int(plan.end - plan.from) {
                let next = reader.read(
                    from: plan.from + UInt64(records.count), end: plan.end, limit: 4096,
                    segments: plan.segments.map { (first: $0.0, path: $0.1) })
                guard !next.isEmpty else { break }
                records += next
            }
            let damage = reader.takeDamage()
            if !damage.isEmpty { quarantine(damage) }
            reader.close()
            let moved = state.withLock { state -> (Int, Int)? in
                guard state.files.cursor == plan.from else { return nil }  // purged meanwhile
                do throws(StoreError) { try state.files.appendDead(records) } catch {
                    logger.error("spool: cannot write dead letters", metadata: ["reason": "\(error)"])
                    return nil
                }
                let before = state.files.bytes
                state.files.advanceCursor(to: plan.end)
                state.readFrom = max(state.readFrom, plan.end)
                state.retry.removeAll { $0.sequence < plan.end }
                state.generation += 1
                return (records.count, before - state.files.bytes)
            }
            guard let (count, freed) = moved else { return }
            _ = spool.add(bytes: -freed)
            spool.recordDeadLetters(count, event: event.name, socket: name)
            let now = monotonicNanoseconds()
            let report = state.withLock { state -> Int? in
                state.deadSinceLog += count
                if let last = state.deadLoggedAt, now &- last < 10_000_000_000 { return nil }
                defer { (state.deadSinceLog, state.deadLoggedAt) = (0, now) }
                return state.deadSinceLog
            }
            if let report {
                logger.error(
                    "spool: events moved to dead letters (past max_bytes, max_total_bytes or max_age)",
                    metadata: ["event": "\(event.name)", "socket": "\(name)", "events_since_last_report": "\(report)"])
            }
        }
    }

    /// Parks the task until a store, a close or a shedding request wakes it, or `seconds` pass.
    private func sleep(upTo seconds: Double?) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ticket = state.withLock { state -> Int? in
                if state.closing || state.shedRequested { return nil }
                if seconds == nil, state.readFrom < state.files.nextSequence || !state.retry.isEmpty { return nil }
                state.waiterTicket += 1
                state.waiter = continuation
                return state.waiterTicket
            }
            guard let ticket else {
                continuation.resume()
                return
            }
            guard let seconds else { return }
            Task {
                try? await Task.sleep(for: .milliseconds(Int(max(0, seconds) * 1000)))
                self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                    guard state.waiterTicket == ticket else { return nil }
                    return state.takeWaiter()
                }?.resume()
            }
        }
    }

    // MARK: Operator

    struct Report: Sendable {
        var events: Int
        var bytes: Int
        var oldestStoredAt: Double?
        var retryIn: Double?
        var lastError: String?
        var deadLetters: Int
        var deadOldest: Double?
        var corruptRecords: Int
        var corruptBytes: Int
    }

    func report() -> Report {
        let now = clock.now()
        var (report, cursor, segments) = state.withLock { state in
            let files = state.files
            return (
                Report(
                    events: files.pending, bytes: files.bytes, oldestStoredAt: state.retry.first?.storedAt,
                    retryIn: state.retryAt.map { max(0, $0 - now) }, lastError: state.lastError,
                    deadLetters: files.deadCount, deadOldest: files.deadOldest, corruptRecords: files.corruptRecords,
                    corruptBytes: files.corruptBytes),
                files.pending > 0 ? files.cursor : nil,
                files.segments.map { (first: $0.first, path: files.path(of: $0)) }
            )
        }
        if report.oldestStoredAt == nil, let cursor {
            var reader = SpoolReader()
            report.oldestStoredAt =
                reader.read(from: cursor, end: cursor + 1, limit: 1, segments: segments).first?
                .storedAt
            reader.close()
        }
        return report
    }

    /// Takes the dead letters out (for a replay).
    func takeDeadLetters() -> [SpoolRecord] {
        state.withLock { state in
            let records = state.files.readDead()
            _ = state.files.clearDead()
            return records
        }
    }

    /// Stores records again (a replay), as new events at the tail: their wait for the subscriber
    /// (`max_age`) starts again now.
    /// What could not be stored again goes back to the dead letters.
    func restore(_ records: [SpoolRecord]) throws(StoreError) {
        let now = unixTime()
        for (index, record) in records.enumerated() {
            let item = self.item(from: record)
            do throws(StoreError) {
                try store(item.event, notification: record.notification, storedAt: now)
            } catch {
                let rest = Array(records[index...])
                state.withLock { state in try? state.files.appendDead(rest) }
                throw error
            }
        }
    }

    /// Drops what is stored and the dead letters; returns how many events went.
    func purge() -> Int {
        let (count, freed, waiter) = state.withLock { state -> (Int, Int, CheckedContinuation<Void, Never>?) in
            let before = state.files.bytes
            let count = state.files.dropPending() + state.files.clearDead()
            state.window.removeAll()
            state.windowStart = 0
            state.windowBytes = 0
            state.retry = []
            state.readFrom = state.files.cursor
            state.caughtUp = true
            state.generation += 1
            state.retryAt = nil
            return (count, before - state.files.bytes, state.takeWaiter())
        }
        _ = spool.add(bytes: -freed)
        waiter?.resume()
        return count
    }

    /// A duplicate descriptor of the segment being written, if written since the last fsync.
    func descriptorToSync() -> Int32? {
        state.withLock { $0.files.descriptorToSync() }
    }

    /// Stops delivering (what is stored stays for the next run) and closes the files.
    func close(grace: Duration) async {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.closing = true
            return state.takeWaiter()
        }?.resume()
        _ = await finished.wait(timeout: grace + .seconds(1))
        let freed = state.withLock { state -> Int in
            let bytes = state.files.bytes
            state.files.close()
            return bytes
        }
        _ = spool.add(bytes: -freed)
    }
}
