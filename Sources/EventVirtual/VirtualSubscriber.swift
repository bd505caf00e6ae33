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
    }

    func dispatch(_ event: RaisedEvent) {
        let now = clock.now()
        let targets = state.withLock { $0.policy.dispatchTargets(now: now) }
        for member in targets { send(event, to: member, tried: MemberSet(member)) }
    }

    private func send(_ event: RaisedEvent, to member: Int, tried: MemberSet) {
        members[member].enqueue(event) { [self] outcome in
            completed(event, member: member, tried: tried, outcome: outcome)
        }
    }

    private func completed(_ event: RaisedEvent, member: Int, tried: MemberSet, outcome: DeliveryOutcome) {
        let now = clock.now()
        let (transition, next, notify) = state.withLock { state -> (MemberHealth.Transition?, Int?, Bool) in
            let transition = state.policy.record(outcome, member: member, now: now)
            var notify = false
            if transition != nil, now - state.lastNotice[member] >= Self.noticeInterval {
                state.lastNotice[member] = now
                notify = true
            }
            let next = outcome.isDelivered ? nil : state.policy.reroute(tried: tried, after: member, now: now)
            return (transition, next, notify)
        }
        if let transition { announce(transition, member: member, notify: notify) }
        guard case .failed(let failure) = outcome, socket.policy != .parallel else { return }
        if let next {
            var tried = tried
            tried.insert(next)
            send(event, to: next, tried: tried)
        } else {
            undelivered.recordUndelivered()
            logger.error(
                "no member of the virtual socket took the event",
                metadata: ["event": "\(event.name)", "socket": "\(socket)", "last_reason": "\(failure.reason)"])
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
