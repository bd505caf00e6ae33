import EventInterface
import Synchronization

/// A durable virtual subscription. PARALLEL: one stream per member, each with its own spool, so a
/// dead member never holds back the live ones. FAILOVER and ROUND-ROBIN: one stream whose
/// deliverer routes each event among the members by the policy — live members first, a failed
/// member only when no member can take it — and fails an event only when every member did, so
/// that the spool keeps it and retries.
extension VirtualSocket: DurableStreamSource {
    public func makeDurableStreams(context: SubscriberContext) -> [DurableStream] {
        if policy == .parallel {
            var seen: [String: Int] = [:]
            return members.map { member in
                let occurrence = seen[member.identity, default: 0]
                seen[member.identity] = occurrence + 1
                return DurableStream(
                    name: member.description, key: "\(member.identity)#\(occurrence)", transport: member.scheme,
                    deliverer: member.makeDeliverer(context: context.delivererContext(for: member)))
            }
        }
        return [
            DurableStream(
                name: description, key: identity, transport: scheme,
                deliverer: VirtualRouter(socket: self, context: context))
        ]
    }
}

/// FAILOVER and ROUND-ROBIN over the members' own deliverers, for a durable stream: a batch is
/// split by the member the policy picks, failed events are moved on to the next member, and an
/// event fails only once every member was tried.
final class VirtualRouter: EventDeliverer {
    private let socket: VirtualSocket
    private let members: [any EventDeliverer]
    private let policy: Mutex<VirtualPolicyState>
    private let context: SubscriberContext

    init(socket: VirtualSocket, context: SubscriberContext) {
        self.socket = socket
        self.context = context
        members = socket.members.map { $0.makeDeliverer(context: context.delivererContext(for: $0)) }
        policy = Mutex(
            VirtualPolicyState(
                policy: socket.policy, members: socket.members.map(\.description),
                failoverTimeout: socket.failoverTimeout))
    }

    func prepare(_ event: RaisedEvent) {
        for member in members { member.prepare(event) }
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        await deliver(batch: [event])[0]
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        var outcomes = [DeliveryOutcome](
            repeating: .failed(DeliveryFailure(.subscriberFailed, "no member took it")), count: events.count)
        var tried = [MemberSet](repeating: MemberSet(), count: events.count)
        var lastMember = [Int](repeating: 0, count: events.count)
        var waiting = Array(events.indices)
        // Each pass tries every waiting event on one more member: at most one pass per member.
        while !waiting.isEmpty {
            let now = context.clock.now()
            var groups: [Int: [Int]] = [:]
            policy.withLock { policy in
                for index in waiting {
                    let key = socket.hashKey(of: events[index])
                    let target: Int? =
                        tried[index].bits == 0
                        ? policy.dispatchTargets(now: now, key: key).first(where: { _ in true })
                        : policy.reroute(tried: tried[index], after: lastMember[index], now: now, key: key)
                    guard let target else { continue }  // every member tried: it stays failed
                    tried[index].insert(target)
                    lastMember[index] = target
                    groups[target, default: []].append(index)
                }
            }
            waiting = []
            for member in groups.keys.sorted() {
                guard let indexes = groups[member] else { continue }
                let results = await members[member].deliver(batch: indexes.map { events[$0] })
                var transitions: [MemberHealth.Transition] = []
                policy.withLock { policy in
                    for (index, outcome) in zip(indexes, results) {
                        if let transition = policy.record(outcome, member: member, now: context.clock.now()) {
                            transitions.append(transition)
                        }
                        if outcome == .delivered {
                            outcomes[index] = .delivered
                        } else {
                            outcomes[index] = outcome
                            waiting.append(index)
                        }
                    }
                }
                for transition in transitions { announce(transition, member: member) }
            }
            waiting.sort()
        }
        return outcomes
    }

    private func announce(_ transition: MemberHealth.Transition, member: Int) {
        let memberSocket = socket.members[member].description
        switch transition {
        case .down(let reason):
            context.logger.warning(
                "virtual member down",
                metadata: ["socket": "\(socket)", "member": "\(memberSocket)", "reason": "\(reason)"])
        case .up:
            context.logger.info("virtual member up", metadata: ["socket": "\(socket)", "member": "\(memberSocket)"])
        }
    }

    func close() async {
        for member in members { await member.close() }
    }
}
