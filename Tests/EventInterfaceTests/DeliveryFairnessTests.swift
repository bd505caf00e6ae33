import EventInterface
import EventInterfaceTestKit
import Foundation
import Logging
import Synchronization
import Testing

/// A deliverer that keeps its thread for a millisecond a chunk without suspending, as a
/// `sendmmsg` of a full chunk does, and logs which queue delivered.
struct BusyDeliverer: EventDeliverer {
    let queue: Int
    let log: SharedLog

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome { .delivered }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        let until = monotonicNanoseconds() + 1_000_000
        while monotonicNanoseconds() < until {}
        log.entries.withLock { $0.append(queue) }
        return events.map { _ in .delivered }
    }
}

final class SharedLog: Sendable {
    let entries = Mutex<[Int]>([])
}

@Suite struct DeliveryFairnessTests {
    /// More queues with a backlog than the cooperative pool has threads: every queue delivers its
    /// first chunk before any other delivers its last (a queue that kept its thread until empty
    /// left the last one waiting for a whole backlog).
    @Test func queuesWithBacklogsTakeTurns() async {
        let queues = ProcessInfo.processInfo.activeProcessorCount + 1
        let chunks = 8
        let log = SharedLog()
        let made = (0..<queues).map { index in
            let counters = Statistics().transport("test")
            let deliverer = BusyDeliverer(queue: index, log: log)
            return (
                DeliveryQueue(
                    deliverer: deliverer, socket: "test:\(index)", capacity: 100_000, counters: counters,
                    logger: Logger(label: "test")), counters
            )
        }
        let event = Event(name: "E_T", id: 0)
        let perQueue = 256 * chunks  // the queue hands its deliverer at most 256 events at once
        for _ in 0..<perQueue {
            for (queue, _) in made { _ = queue.enqueue(RaisedEvent(event: event, params: .none)) }
        }
        let total = perQueue * queues
        #expect(
            await eventually(timeout: .seconds(60)) {
                made.reduce(0) { $0 + $1.1.delivered.load(ordering: .relaxed) } == total
            })
        let entries = log.entries.withLock { $0 }
        for queue in 0..<queues {
            guard let first = entries.firstIndex(of: queue) else {
                Issue.record("queue \(queue) delivered nothing")
                continue
            }
            for other in 0..<queues where other != queue {
                let last = entries.lastIndex(of: other) ?? -1
                #expect(first < last, "queue \(queue) began after queue \(other) had finished: \(entries)")
            }
        }
        for (queue, _) in made { await queue.close(grace: .seconds(1)) }
    }
}
