import EventInterface
import Logging
import Synchronization

/// A virtual subscription at work: no queue of its own; its policy picks member queues at raise
/// time, and each member's outcome (reported asynchronously by the member's delivery task) may
/// re-route the event to another member.
final class VirtualSubscriber: EventSubscriber {
    private struct State {
        var policy: VirtualPolicyState
        /// When each member last raised a DOWN/UP event, to keep those at most one per second.
        var lastNotice: [Double]
    }

    /// Least time between two DOWN/UP events of one member, so that subscribing them through the
    /// very sockets they report on cannot loop.
    static let noticeInterval = 1.0

    private let socket: VirtualSocket
    private let members: [DeliveryQueue]
    private let context: SubscriberContext
    private let clock: any EventClock
    private let logger: Logger
    private let undelivered: EventCounters
    private let state: Mutex<State>

    init(socket: VirtualSocket, context: SubscriberContext) {
        self.socket = socket
        self.context = context
        self.clock = context.clock
        self.logger = context.logger
        self.undelivered = context.eventCounters
        // The queues report to the subscriber through a relay: they are made before `self` exists.
        let relay = CompletionRelay()
        self.members = socket.members.enumerated().map { member, memberSocket in
            context.makeQueue(for: memberSocket) { completions in
                relay.subscriber?.completed(completions, member: member)
            }
        }
        self.state = Mutex(
            State(
                policy: VirtualPolicyState(
                    policy: socket.policy, members: socket.members.map(\.description),
                    failoverTimeout: socket.failoverTimeout),
                lastNotice: Array(repeating: -.infinity, count: socket.members.count)))
        relay.subscriber = self
    }

    /// Picks the member(s) and queues the event there under the subscriber's lock, the same lock
    /// under which failed events are moved on, so events reach each member in a consistent order.
    func dispatch(_ event: RaisedEvent) {
        let now = clock.now()
        let key = socket.hashKey(of: event)
        var refused: [(member: Int, completion: DeliveryQueue.Completion)] = []
        state.withLock { state in
            for member in state.policy.dispatchTargets(now: now, key: key) {
                let tried = MemberSet(member).bits
                if let refusal = members[member].enqueue(event, context: tried) {
                    refused.append(
                        (member, DeliveryQueue.Completion(event: event, context: tried, outcome: .failed(refusal))))
                }
            }
        }
        // A refusal ("queue full") is an outcome like any other.
        for (member, completion) in refused { completed([completion], member: member) }
    }

    /// Outcomes of `member`, a chunk at a time: health is recorded and failed events are moved on
    /// (not PARALLEL) under one lock, so that an event raised meanwhile cannot overtake them on the
    /// next member; health changes are announced afterwards.
    fileprivate func completed(_ completions: [DeliveryQueue.Completion], member: Int) {
        let now = clock.now()
        let parallel = socket.policy == .parallel
        var transitions: [(MemberHealth.Transition, notify: Bool)] = []
        var refused: [(member: Int, completion: DeliveryQueue.Completion)] = []
        var dropped: [(event: RaisedEvent, reason: String)] = []
        state.withLock { state in
            for completion in completions {
                if let transition = state.policy.record(completion.outcome, member: member, now: now) {
                    var notify = false
                    if now - state.lastNotice[member] >= Self.noticeInterval {
                        state.lastNotice[member] = now
                        notify = true
                    }
                    transitions.append((transition, notify))
                }
                guard case .failed(let failure) = completion.outcome, !parallel else { continue }
                let tried = MemberSet(bits: completion.context)
                guard
                    let next = state.policy.reroute(
                        tried: tried, after: member, now: now, key: socket.hashKey(of: completion.event))
                else {
                    dropped.append((completion.event, failure.reason))
                    continue
                }
                var moved = tried
                moved.insert(next)
                // A queue's lock is only ever taken after this one, never before it.
                if let refusal = members[next].enqueue(completion.event, context: moved.bits) {
                    refused.append(
                        (
                            next,
                            DeliveryQueue.Completion(
                                event: completion.event, context: moved.bits, outcome: .failed(refusal))
                        ))
                }
            }
        }
        for (transition, notify) in transitions { announce(transition, member: member, notify: notify) }
        for (next, completion) in refused { completed([completion], member: next) }
        for (event, reason) in dropped {
            undelivered.recordUndelivered()
            logger.error(
                "no member of the virtual socket took the event",
                metadata: ["event": "\(event.name)", "socket": "\(socket)", "last_reason": "\(reason)"])
        }
    }

    private func announce(_ transition: MemberHealth.Transition, member: Int, notify: Bool) {
        let memberSocket = socket.members[member].description
        var params: [EventField] = [
            EventField("event", .string(context.event.name)),
            EventField("socket", .string(socket.description)),
            EventField("member", .string(memberSocket)),
        ]
        switch transition {
        case .down(let reason):
            logger.warning(
                "virtual member down",
                metadata: ["socket": "\(socket)", "member": "\(memberSocket)", "reason": "\(reason)"])
            params.append(EventField("reason", .string(reason)))
            if notify { context.raise(VirtualTransport.memberDownEvent, .named(params)) }
        case .up:
            logger.info("virtual member up", metadata: ["socket": "\(socket)", "member": "\(memberSocket)"])
            if notify { context.raise(VirtualTransport.memberUpEvent, .named(params)) }
        }
    }

    func status() -> (any SubscriberStatus)? {
        let now = clock.now()
        let health = state.withLock { $0.policy.members }
        return VirtualStatus(
            members: zip(socket.members, health).map { member, health in
                MemberStatus(
                    socket: member.description, state: health.retryIn(now: now) == nil ? .up : .failed,
                    retryIn: health.retryIn(now: now), delivered: health.delivered, failed: health.failed)
            })
    }

    func close(grace: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            for member in members { group.addTask { await member.close(grace: grace) } }
        }
    }
}

/// Points the member queues back at their virtual subscriber without keeping it alive. Set once,
/// in the subscriber's `init`, before any event can be queued; Swift's weak references are safe to
/// read from the delivery tasks.
private final class CompletionRelay: @unchecked Sendable {
    weak var subscriber: VirtualSubscriber?
}
