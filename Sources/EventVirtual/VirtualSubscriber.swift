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
        self.members = socket.members.map { context.makeQueue(for: $0) }
        self.state = Mutex(
            State(
                policy: VirtualPolicyState(
                    policy: socket.policy, memberCount: socket.members.count, failoverTimeout: socket.failoverTimeout),
                lastNotice: Array(repeating: -.infinity, count: socket.members.count)))
        for (member, queue) in members.enumerated() {
            queue.observe { [weak self] completions in self?.completed(completions, member: member) }
        }
    }

    func dispatch(_ event: RaisedEvent) {
        let now = clock.now()
        let targets = state.withLock { $0.policy.dispatchTargets(now: now) }
        for member in targets { send(event, to: member, tried: MemberSet(member)) }
    }

    /// Queues `event` on `member`, tagged with the members it has been tried on; a refusal
    /// ("queue full") is an outcome like any other, handled here at once.
    private func send(_ event: RaisedEvent, to member: Int, tried: MemberSet) {
        if let refusal = members[member].enqueue(event, tag: tried.bits) {
            completed([DeliveryQueue.Completion(event: event, tag: tried.bits, outcome: .failed(refusal))], member: member)
        }
    }

    /// Outcomes of `member`, a chunk at a time: health is recorded under one lock, then failed
    /// events move on (not PARALLEL) and health changes are announced.
    private func completed(_ completions: [DeliveryQueue.Completion], member: Int) {
        let now = clock.now()
        let parallel = socket.policy == .parallel
        var transitions: [(MemberHealth.Transition, notify: Bool)] = []
        var reroutes: [(event: RaisedEvent, member: Int, tried: MemberSet)] = []
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
                let tried = MemberSet(bits: completion.tag)
                if let next = state.policy.reroute(tried: tried, after: member, now: now) {
                    var moved = tried
                    moved.insert(next)
                    reroutes.append((completion.event, next, moved))
                } else {
                    dropped.append((completion.event, failure.reason))
                }
            }
        }
        for (transition, notify) in transitions { announce(transition, member: member, notify: notify) }
        for reroute in reroutes { send(reroute.event, to: reroute.member, tried: reroute.tried) }
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

    func memberStatus() -> [MemberStatus]? {
        let now = clock.now()
        let health = state.withLock { $0.policy.members }
        return zip(socket.members, health).map { member, health in
            MemberStatus(
                socket: member.description, state: health.retryIn(now: now) == nil ? .up : .failed,
                retryIn: health.retryIn(now: now), delivered: health.delivered, failed: health.failed)
        }
    }

    func close(grace: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            for member in members { group.addTask { await member.close(grace: grace) } }
        }
    }
}
