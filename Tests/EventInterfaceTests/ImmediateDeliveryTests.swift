import EventInterface
import EventInterfaceTestKit
import Glibc
import Logging
import Synchronization
import Testing

/// A deliverer that records which thread delivered each event, and counts deliveries that ever
/// overlap (the queue promises one at a time, raising thread or delivery task).
final class ThreadRecordingDeliverer: ImmediateDeliverer {
    struct Record: Sendable {
        let name: String
        let onRaisingThread: Bool
    }

    let records = Mutex<[Record]>([])
    let busy = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
    /// The thread the test raises on.
    let raiser = Mutex<pthread_t?>(nil)
    /// While set, a delivery waits inside the deliverer (at most 5 s), so a test can raise during one.
    let held = Atomic<Bool>(false)
    let outcome: DeliveryOutcome

    init(outcome: DeliveryOutcome = .delivered) { self.outcome = outcome }

    func deliverNow(batch events: [RaisedEvent]) -> [DeliveryOutcome] {
        if busy.add(1, ordering: .acquiringAndReleasing).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
        defer { busy.subtract(1, ordering: .acquiringAndReleasing) }
        let here = raiser.withLock { $0 == pthread_self() }
        for _ in 0..<5_000 where held.load(ordering: .acquiring) { usleep(1_000) }
        records.withLock { $0 += events.map { Record(name: $0.name, onRaisingThread: here) } }
        return events.map { _ in outcome }
    }

    func markRaiser() { raiser.withLock { $0 = pthread_self() } }
}

@Suite struct ImmediateDeliveryTests {
    let event = Event(name: "E_T", id: 0)

    func makeQueue(_ deliverer: ThreadRecordingDeliverer, capacity: Int = 100) -> (DeliveryQueue, TransportCounters) {
        let counters = Statistics().transport("test")
        let queue = DeliveryQueue(
            deliverer: deliverer, socket: "test:1", capacity: capacity, counters: counters,
            logger: Logger(label: "test"))
        return (queue, counters)
    }

    func raised(_ inline: Bool) -> RaisedEvent { RaisedEvent(event: event, params: .none, inline: inline) }

    @Test func anInlineEventOnAnIdleQueueIsDeliveredBeforeEnqueueReturns() async {
        let deliverer = ThreadRecordingDeliverer()
        let (queue, counters) = makeQueue(deliverer)
        deliverer.markRaiser()
        #expect(queue.enqueue(raised(true)) == nil)
        // Already delivered, on this thread, counted.
        #expect(deliverer.records.withLock { $0.map(\.onRaisingThread) } == [true])
        #expect(counters.delivered.load(ordering: .relaxed) == 1)
        #expect(counters.queued.load(ordering: .relaxed) == 0)
        #expect(queue.tally.delivered.load(ordering: .relaxed) == 1)
        await queue.close(grace: .seconds(1))
    }

    @Test func anEventThatDoesNotAskIsLeftToTheDeliveryTask() async {
        let deliverer = ThreadRecordingDeliverer()
        let (queue, counters) = makeQueue(deliverer)
        // Raised on a thread of its own, which no delivery task runs on.
        let raised = raised(false)
        let returned = CompletionSignal()
        detachThread {
            deliverer.markRaiser()
            _ = queue.enqueue(raised)
            returned.signal()
        }
        #expect(await returned.wait(timeout: .seconds(5)))
        #expect(await eventually { counters.delivered.load(ordering: .relaxed) == 1 })
        #expect(deliverer.records.withLock { $0.map(\.onRaisingThread) } == [false])
        await queue.close(grace: .seconds(1))
    }

    @Test func whatQueuesDuringAnInlineDeliveryFollowsInOrderAndNothingOverlaps() async {
        let deliverer = ThreadRecordingDeliverer()
        let (queue, counters) = makeQueue(deliverer)
        deliverer.held.store(true, ordering: .releasing)
        let first = CompletionSignal()
        // The first raise delivers inline and is held inside the deliverer.
        detachThread {
            _ = queue.enqueue(RaisedEvent(event: Event(name: "E_1", id: 0), params: .none, inline: true))
            first.signal()
        }
        #expect(await eventually { deliverer.busy.load(ordering: .relaxed) == 1 })
        // Meanwhile: one more inline, one not. Neither may be delivered before E_1 ends.
        #expect(queue.enqueue(RaisedEvent(event: Event(name: "E_2", id: 0), params: .none, inline: true)) == nil)
        #expect(queue.enqueue(RaisedEvent(event: Event(name: "E_3", id: 0), params: .none, inline: false)) == nil)
        #expect(deliverer.records.withLock { $0.isEmpty })
        deliverer.held.store(false, ordering: .releasing)
        #expect(await first.wait(timeout: .seconds(5)))
        #expect(await eventually { counters.delivered.load(ordering: .relaxed) == 3 })
        #expect(deliverer.records.withLock { $0.map(\.name) } == ["E_1", "E_2", "E_3"])
        #expect(deliverer.overlaps.load(ordering: .relaxed) == 0)
        await queue.close(grace: .seconds(1))
    }

    @Test func raisersOnManyThreadsNeverOverlapAndLoseNothing() async {
        let deliverer = ThreadRecordingDeliverer()
        let (queue, counters) = makeQueue(deliverer, capacity: 100_000)
        let done = (0..<4).map { _ in CompletionSignal() }
        for (thread, signal) in done.enumerated() {
            detachThread {
                for index in 0..<2_000 {
                    _ = queue.enqueue(
                        RaisedEvent(event: Event(name: "E_T", id: 0), params: .none, inline: index % 3 != thread % 3))
                }
                signal.signal()
            }
        }
        for signal in done { #expect(await signal.wait(timeout: .seconds(30))) }
        #expect(await eventually(timeout: .seconds(10)) { counters.delivered.load(ordering: .relaxed) == 8_000 })
        #expect(deliverer.overlaps.load(ordering: .relaxed) == 0)
        #expect(counters.queued.load(ordering: .relaxed) == 0)
        await queue.close(grace: .seconds(1))
    }

    @Test func aFailedInlineDeliveryIsCountedAndTheQueueRefusesAfterClose() async {
        let deliverer = ThreadRecordingDeliverer(outcome: .failed(DeliveryFailure(.subscriberFailed, "refused")))
        let (queue, counters) = makeQueue(deliverer)
        #expect(queue.enqueue(raised(true)) == nil)
        #expect(counters.failed.load(ordering: .relaxed) == 1)
        #expect(queue.tally.failed.load(ordering: .relaxed) == 1)
        let report = await queue.close(grace: .seconds(1))
        #expect(report.abandoned == 0)
        #expect(queue.enqueue(raised(true)) == .shuttingDown)
        #expect(deliverer.records.withLock { $0.count } == 1)
    }
}

extension ImmediateDeliveryTests {
    /// A virtual socket's member queues report to an observer that takes the virtual's lock,
    /// under which it queues: those deliver on their task, never on the raising thread.
    @Test func aQueueWithAnObserverNeverDeliversOnTheRaisingThread() async {
        let deliverer = ThreadRecordingDeliverer()
        let counters = Statistics().transport("test")
        let told = Atomic<Int>(0)
        let queue = DeliveryQueue(
            deliverer: deliverer, socket: "test:1", capacity: 10, counters: counters, logger: Logger(label: "test"),
            observer: { told.add($0.count, ordering: .relaxed) })
        let returned = CompletionSignal()
        detachThread {
            deliverer.markRaiser()
            _ = queue.enqueue(RaisedEvent(event: Event(name: "E_T", id: 0), params: .none, inline: true))
            returned.signal()
        }
        #expect(await returned.wait(timeout: .seconds(5)))
        #expect(await eventually { told.load(ordering: .relaxed) == 1 })
        #expect(deliverer.records.withLock { $0.map(\.onRaisingThread) } == [false])
        await queue.close(grace: .seconds(1))
    }
}
