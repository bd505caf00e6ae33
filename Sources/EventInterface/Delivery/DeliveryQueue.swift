import Logging
import Synchronization

/// One subscriber's (or one member's) bounded queue and its delivery task.
///
/// Producers append under a short lock and never wait; the single consumer task takes everything
/// pending at once and hands it to the deliverer in chunks, so a busy subscriber costs one wake-up
/// per batch rather than per event. A full queue refuses the event at once ("queue full").
public final class DeliveryQueue: Sendable {
    /// How one queued event's delivery ended.
    public struct Completion: Sendable {
        public let event: RaisedEvent
        /// The producer's own value, queued with the event and handed back with its outcome: the
        /// queue does not look at it (a virtual subscriber keeps the members already tried there).
        public let context: UInt64
        public let outcome: DeliveryOutcome

        public init(event: RaisedEvent, context: UInt64, outcome: DeliveryOutcome) {
            self.event = event
            self.context = context
            self.outcome = outcome
        }
    }

    /// Told, one delivered chunk at a time and in order, how each event ended. One call per chunk
    /// rather than a closure per event: a virtual subscriber takes its lock once per chunk and
    /// raising allocates no completion (both showed in scripts/profile's failover-dead counts).
    public typealias Observer = @Sendable ([Completion]) -> Void

    struct Item: Sendable {
        let event: RaisedEvent
        let context: UInt64
    }

    private struct State {
        var pending: [Item] = []
        /// The consumer's emptied batch, handed back so that producers append into storage that
        /// has already grown instead of growing a new array every batch (scripts/profile showed
        /// the regrowth, and glibc consolidating for its larger sizes, on the raising thread).
        var spare: [Item] = []
        /// Taken by the consumer, not yet delivered; counts toward the capacity.
        var inFlight = 0
        /// Bytes of what is pending and in flight (``RaisedEvent/size``), toward `byteCapacity`.
        var bytes = 0
        /// The consumer, parked until something arrives. Unsafe rather than checked: the checked
        /// kind's optional went through generic witnesses on every enqueue (scripts/profile).
        var waiter: UnsafeContinuation<Void, Never>?
        var closing = false
        /// A raising thread is delivering (``ImmediateDeliverer``): the delivery task waits, and so
        /// does any other raiser, until it is done.
        var immediate = false
        /// The last delivery failed (logged once, until one succeeds again).
        var failing = false
        /// The subscriber said it wants no more events (told once).
        var gone = false
        /// What a shutdown found queued, and what became of it during the drain.
        var drain = DrainReport()

        /// Whether the delivery task may take what is pending.
        var deliverable: Bool { !pending.isEmpty && !immediate }
    }

    /// What closing a queue did with the events it held: delivered or failed during the grace,
    /// or abandoned when the grace ran out (logged, and counted in `evi_abandoned_total`).
    public struct DrainReport: Sendable, Hashable {
        public var queued = 0
        public var delivered = 0
        public var failed = 0
        public var abandoned: Int { queued - delivered - failed }
    }

    /// Largest chunk handed to the deliverer at once, so completions (and virtual re-routing)
    /// are not held back behind a long batch.
    static let chunkSize = 256

    public let socket: String
    /// This queue's own outcome counts.
    public let tally = SubscriberTally()
    public let capacity: Int
    /// Bytes the queued events may hold at most (`queue_bytes`): a count alone lets 10,000
    /// one-megabyte events take 10 GB.
    public let byteCapacity: Int
    private let state = Mutex(State())
    private let deliverer: any EventDeliverer
    /// The deliverer again when it can send on the raising thread (and the queue has no observer).
    private let immediateDeliverer: (any ImmediateDeliverer)?
    private let counters: TransportCounters
    private let logger: Logger
    private let finished = CompletionSignal()
    /// Set when the grace ran out: what is left fails instead of being delivered.
    private let abandoned = Atomic<Bool>(false)
    /// A constant, not a `Mutex<Observer?>`: reading a closure out of a `Mutex` once per chunk
    /// made virtual deliveries stall (parallel3 at 10,000 events/s: p50 from 50 µs to 250 µs,
    /// p99 from 150 µs to 400 ms; measured, not understood, and gone with the constant).
    private let observer: Observer?
    /// Told once when a delivery fails with `subscriberGone` (a plain subscription removes itself).
    private let onGone: (@Sendable (String) -> Void)?

    /// - Parameters:
    ///   - observer: told the outcome of every queued event, a chunk at a time.
    ///   - onGone: told, once, that the subscriber answered it wants no more events.
    public init(
        deliverer: any EventDeliverer, socket: String, capacity: Int, byteCapacity: Int = 16 << 20,
        counters: TransportCounters, logger: Logger, observer: Observer? = nil,
        onGone: (@Sendable (String) -> Void)? = nil
    ) {
        self.observer = observer
        self.onGone = onGone
        self.deliverer = deliverer
        // Not with an observer: a virtual subscriber queues on its members under its own lock,
        // which its observer takes too; called on the raising thread, it would take it twice.
        self.immediateDeliverer = observer == nil ? deliverer as? any ImmediateDeliverer : nil
        self.socket = socket
        self.capacity = max(1, capacity)
        self.byteCapacity = max(1, byteCapacity)
        self.counters = counters
        self.logger = logger
        Task { await self.run() }
    }

    /// Queues `event` with the producer's `context` for the observer. Returns `nil` when queued (the observer
    /// hears of it later), or the failure when refused at once ("queue full", "shutting down"),
    /// which the observer does not hear of.
    @discardableResult
    public func enqueue(_ event: RaisedEvent, context: UInt64 = 0) -> DeliveryFailure? {
        deliverer.prepare(event)
        let sendHere = event.inline && immediateDeliverer != nil
        var refusal: DeliveryFailure?
        var immediate = false
        let waiter = state.withLock { state -> UnsafeContinuation<Void, Never>? in
            if state.closing {
                refusal = .shuttingDown
                return nil
            }
            if state.pending.count + state.inFlight >= capacity || state.bytes + event.size > byteCapacity {
                refusal = .queueFull
                return nil
            }
            state.bytes += event.size
            if sendHere, state.pending.isEmpty, state.inFlight == 0, !state.immediate {
                state.immediate = true
                state.inFlight = 1
                immediate = true
                return nil
            }
            state.pending.append(Item(event: event, context: context))
            guard state.deliverable, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        guard let refusal else {
            event.settlement?.hold()
            counters.queued.add(1, ordering: .relaxed)
            if immediate, let immediateDeliverer {
                deliverNow(Item(event: event, context: context), with: immediateDeliverer)
            } else {
                waiter?.resume()
            }
            return nil
        }
        if refusal == .queueFull {
            counters.recordDropped()
            tally.dropped.add(1, ordering: .relaxed)
        }
        return refusal
    }

    /// Delivers on the raising thread what ``enqueue(_:context:)`` found the queue idle for, then
    /// what other raisers queued meanwhile (a few rounds at most, so this thread returns to its
    /// own work), and leaves the rest to the delivery task. Raisers on two event loops then rarely
    /// wake it.
    private func deliverNow(_ first: Item, with immediateDeliverer: any ImmediateDeliverer) {
        var items = [first]
        for round in 1...Self.immediateRounds {
            let started = monotonicNanoseconds()
            let outcomes = immediateDeliverer.deliverNow(batch: items.map(\.event))
            counters.recordDeliveryTime(nanoseconds: monotonicNanoseconds() &- started, count: items.count)
            settle(items, outcomes: outcomes, abandoned: false)
            let next = state.withLock { state -> (items: [Item]?, waiter: UnsafeContinuation<Void, Never>?) in
                if round < Self.immediateRounds, !state.pending.isEmpty, !state.closing {
                    var batch: [Item] = []
                    swap(&batch, &state.pending)
                    state.inFlight += batch.count
                    return (batch, nil)
                }
                state.immediate = false
                guard state.deliverable || state.closing, let waiter = state.waiter else { return (nil, nil) }
                state.waiter = nil
                return (nil, waiter)
            }
            guard let more = next.items else {
                next.waiter?.resume()
                return
            }
            items = more
        }
    }

    /// Rounds a raising thread delivers at most (its own event, then what queued behind it).
    static let immediateRounds = 4

    /// Stops taking events and lets the queue drain for at most `grace`; what is still queued
    /// then fails with "shutting down". Returns at the latest one second after `grace` even if
    /// a delivery is stuck: the delivery task closes the deliverer itself once it ends. What was
    /// queued and what became of it is logged (when anything was) and returned.
    @discardableResult
    public func close(grace: Duration) async -> DrainReport {
        let waiter = state.withLock { state -> UnsafeContinuation<Void, Never>? in
            if !state.closing { state.drain.queued = state.pending.count + state.inFlight }
            state.closing = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
        if await !finished.wait(timeout: grace) {
            abandoned.store(true, ordering: .relaxed)
            _ = await finished.wait(timeout: .seconds(1))
        }
        let report = state.withLock { $0.drain }
        if report.queued > 0 {
            counters.recordAbandoned(count: report.abandoned)
            logger.log(
                level: report.abandoned > 0 ? .warning : .info, "queue drained on close",
                metadata: [
                    "socket": "\(socket)", "queued": "\(report.queued)", "delivered": "\(report.delivered)",
                    "failed": "\(report.failed)", "abandoned": "\(report.abandoned)",
                ])
        }
        return report
    }

    private enum Step {
        case batch([Item])
        case finished
        case wait
    }

    private func nextBatch() async -> [Item]? {
        while true {
            let step = state.withLock { state -> Step in
                if state.deliverable {
                    var batch = state.spare
                    swap(&batch, &state.pending)
                    state.spare = []
                    state.inFlight += batch.count
                    return .batch(batch)
                }
                return state.closing && !state.immediate && state.pending.isEmpty ? .finished : .wait
            }
            switch step {
            case .batch(let items): return items
            case .finished: return nil
            case .wait:
                await withUnsafeContinuation { continuation in
                    let ready = state.withLock { state -> Bool in
                        if state.deliverable || (state.closing && !state.immediate) { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        }
    }

    private func run() async {
        while var items = await nextBatch() {
            defer {
                items.removeAll(keepingCapacity: true)
                state.withLock { $0.spare = items }
            }
            var start = 0
            while start < items.count {
                let chunk = items[start..<min(start + Self.chunkSize, items.count)]
                start = chunk.endIndex
                let outcomes: [DeliveryOutcome]
                let abandonedChunk = abandoned.load(ordering: .relaxed)
                if abandonedChunk {
                    outcomes = Array(repeating: .failed(.shuttingDown), count: chunk.count)
                } else {
                    let started = monotonicNanoseconds()
                    outcomes = await deliverer.deliver(batch: chunk.map { $0.event })
                    counters.recordDeliveryTime(nanoseconds: monotonicNanoseconds() &- started, count: chunk.count)
                }
                settle(chunk, outcomes: outcomes, abandoned: abandonedChunk)
                // A chunk to a udp or unix subscriber is one `sendmmsg` that never suspends, so a
                // queue with a backlog would keep its cooperative thread until it is empty: on two
                // cores, the third member of a ROUND-ROBIN got nothing until the first two had
                // drained (and MI commands and timers waited as long). Going to the back of the
                // line after each chunk lets every queue move; it also raised parallel3 from
                // ~122 % to ~143 % of the sendmmsg floor and roundrobin3 from ~100 % to ~113 %.
                await Task.yield()
            }
        }
        await deliverer.close()
        finished.signal()
    }

    /// What follows a delivery, on the delivery task or a raising thread: counts, the observer,
    /// the raisers' settlements, and the log lines and `onGone` of a change of state.
    private func settle(_ chunk: some Collection<Item>, outcomes: [DeliveryOutcome], abandoned abandonedChunk: Bool) {
        var delivered = 0
        for outcome in outcomes where outcome == .delivered { delivered += 1 }
        var bytes = 0
        for item in chunk { bytes += item.event.size }
        // Changes of state, in order, logged once the lock is released (usually none: no allocation).
        var changes: [DeliveryFailure?] = []
        var newlyGone: DeliveryFailure?
        state.withLock { state in
            state.inFlight -= chunk.count
            state.bytes -= bytes
            if state.closing && !abandonedChunk {
                state.drain.delivered += delivered
                state.drain.failed += chunk.count - delivered
            }
            for outcome in outcomes {
                switch outcome {
                case .delivered:
                    if state.failing {
                        state.failing = false
                        changes.append(nil)
                    }
                case .failed(let failure):
                    if failure.kind == .subscriberGone, !state.gone {
                        state.gone = true
                        newlyGone = failure
                    }
                    if !state.failing && (failure.kind == .subscriberFailed || failure.kind == .subscriberGone) {
                        state.failing = true
                        changes.append(failure)
                    }
                }
            }
        }
        counters.queued.subtract(chunk.count, ordering: .relaxed)
        // Counted before the observer hears of it: a virtual socket that moves a failed
        // event on must never be seen delivering it elsewhere before the failure counts.
        counters.recordDelivered(count: delivered)
        counters.recordFailed(count: chunk.count - delivered)
        tally.delivered.add(delivered, ordering: .relaxed)
        tally.failed.add(chunk.count - delivered, ordering: .relaxed)
        if let observer {
            observer(zip(chunk, outcomes).map { Completion(event: $0.event, context: $0.context, outcome: $1) })
        }
        // After the observer, which may have queued the event on another member already.
        for item in chunk { item.event.settlement?.release() }
        if let newlyGone { onGone?(newlyGone.reason) }
        for change in changes {
            if let failure = change {
                logger.warning("delivery failing", metadata: ["socket": "\(socket)", "reason": "\(failure.reason)"])
            } else {
                logger.info("subscriber delivers again", metadata: ["socket": "\(socket)"])
            }
        }
    }
}
