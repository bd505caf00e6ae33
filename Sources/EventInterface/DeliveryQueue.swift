import Logging
import Synchronization

/// One subscriber's (or one member's) bounded queue and its delivery task.
///
/// Producers append under a short lock and never wait; the single consumer task takes everything
/// pending at once and hands it to the deliverer in chunks, so a busy subscriber costs one wake-up
/// per batch rather than per event. A full queue refuses the event at once ("queue full").
public final class DeliveryQueue: Sendable {
    public typealias Completion = @Sendable (DeliveryOutcome) -> Void

    struct Item: Sendable {
        let event: RaisedEvent
        let completion: Completion?
    }

    private struct State {
        var pending: [Item] = []
        /// Taken by the consumer, not yet delivered; counts toward the capacity.
        var inFlight = 0
        /// The consumer, parked until something arrives. Unsafe rather than checked: the checked
        /// kind's optional went through generic witnesses on every enqueue (scripts/profile).
        var waiter: UnsafeContinuation<Void, Never>?
        var closing = false
    }

    /// Largest chunk handed to the deliverer at once, so completions (and virtual re-routing)
    /// are not held back behind a long batch.
    static let chunkSize = 256

    public let socket: String
    public let capacity: Int
    private let state = Mutex(State())
    private let deliverer: any EventDeliverer
    private let counters: TransportCounters
    private let logger: Logger
    private let finished = CompletionSignal()
    /// Set when the grace ran out: what is left fails instead of being delivered.
    private let abandoned = Atomic<Bool>(false)

    public init(
        deliverer: any EventDeliverer, socket: String, capacity: Int, counters: TransportCounters, logger: Logger
    ) {
        self.deliverer = deliverer
        self.socket = socket
        self.capacity = max(1, capacity)
        self.counters = counters
        self.logger = logger
        Task { await self.run() }
    }

    /// Events waiting or being delivered.
    public var depth: Int { state.withLock { $0.pending.count + $0.inFlight } }

    /// Queues `event`; `completion` is called once with its outcome (at once when refused).
    /// Returns whether it was queued.
    @discardableResult
    public func enqueue(_ event: RaisedEvent, completion: Completion? = nil) -> Bool {
        deliverer.prepare(event)
        var refusal: DeliveryFailure?
        let waiter = state.withLock { state -> UnsafeContinuation<Void, Never>? in
            if state.closing {
                refusal = .shuttingDown
                return nil
            }
            if state.pending.count + state.inFlight >= capacity {
                refusal = .queueFull
                return nil
            }
            state.pending.append(Item(event: event, completion: completion))
            defer { state.waiter = nil }
            return state.waiter
        }
        guard let refusal else {
            counters.queued.add(1, ordering: .relaxed)
            waiter?.resume()
            return true
        }
        if refusal == .queueFull { counters.recordDropped() }
        completion?(.failed(refusal))
        return false
    }

    /// Stops taking events and lets the queue drain for at most `grace`; what is still queued
    /// then fails with "shutting down". Returns at the latest one second after `grace` even if
    /// a delivery is stuck: the delivery task closes the deliverer itself once it ends.
    public func close(grace: Duration) async {
        let waiter = state.withLock { state -> UnsafeContinuation<Void, Never>? in
            state.closing = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
        if await !finished.wait(timeout: grace) {
            abandoned.store(true, ordering: .relaxed)
            _ = await finished.wait(timeout: .seconds(1))
        }
    }

    private enum Step {
        case batch([Item])
        case finished
        case wait
    }

    private func nextBatch() async -> [Item]? {
        while true {
            let step = state.withLock { state -> Step in
                if !state.pending.isEmpty {
                    let batch = state.pending
                    state.pending = []
                    state.inFlight += batch.count
                    return .batch(batch)
                }
                return state.closing ? .finished : .wait
            }
            switch step {
            case .batch(let items): return items
            case .finished: return nil
            case .wait:
                await withUnsafeContinuation { continuation in
                    let ready = state.withLock { state -> Bool in
                        if !state.pending.isEmpty || state.closing { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
        }
    }

    private func run() async {
        var failing = false
        while let items = await nextBatch() {
            var start = 0
            while start < items.count {
                let chunk = items[start..<min(start + Self.chunkSize, items.count)]
                start = chunk.endIndex
                let outcomes: [DeliveryOutcome]
                if abandoned.load(ordering: .relaxed) {
                    outcomes = Array(repeating: .failed(.shuttingDown), count: chunk.count)
                } else {
                    let started = monotonicNanoseconds()
                    outcomes = await deliverer.deliver(batch: chunk.map { $0.event })
                    counters.recordDeliveryTime(nanoseconds: monotonicNanoseconds() &- started, count: chunk.count)
                }
                var delivered = 0
                state.withLock { $0.inFlight -= chunk.count }
                counters.queued.subtract(chunk.count, ordering: .relaxed)
                for (item, outcome) in zip(chunk, outcomes) {
                    switch outcome {
                    case .delivered:
                        delivered += 1
                        if failing {
                            failing = false
                            logger.info("subscriber delivers again", metadata: ["socket": "\(socket)"])
                        }
                    case .failed(let failure):
                        if !failing && failure.kind == .subscriberFailed {
                            failing = true
                            logger.warning(
                                "delivery failing", metadata: ["socket": "\(socket)", "reason": "\(failure.reason)"])
                        }
                    }
                    item.completion?(outcome)
                }
                counters.recordDelivered(count: delivered)
                counters.recordFailed(count: chunk.count - delivered)
            }
        }
        await deliverer.close()
        finished.signal()
    }
}
