import EventInterface

/// How a virtual socket spreads events over its members.
public enum VirtualPolicy: String, Sendable, Hashable, CaseIterable {
    /// Every member gets every event.
    case parallel = "PARALLEL"
    /// Members in order until one succeeds; failed ones skipped for `failover_timeout`.
    case failover = "FAILOVER"
    /// Each event to the next member in turn, skipping failed ones.
    case roundRobin = "ROUND-ROBIN"
}

/// The decisions of a virtual subscriber, without any I/O: which member(s) get a new event,
/// where a failed event goes next, and how member health changes. Docs/virtual.md, exactly.
public struct VirtualPolicyState: Sendable, Hashable {
    public let policy: VirtualPolicy
    public let failoverTimeout: Double
    public private(set) var members: [MemberHealth]
    /// ROUND-ROBIN: the member whose turn it is.
    public private(set) var turn = 0

    public init(policy: VirtualPolicy, memberCount: Int, failoverTimeout: Double) {
        self.policy = policy
        self.failoverTimeout = failoverTimeout
        self.members = Array(repeating: MemberHealth(), count: memberCount)
    }

    /// The members a newly raised event is dispatched to.
    public mutating func dispatchTargets(now: Double) -> MemberSet {
        switch policy {
        case .parallel:
            return .all(members.count)
        case .failover:
            return reroute(tried: MemberSet(), after: members.count - 1, now: now).map { MemberSet($0) } ?? MemberSet()
        case .roundRobin:
            let count = members.count
            var chosen = turn
            for step in 0..<count {
                let candidate = (turn + step) % count
                if !members[candidate].isMarked(now: now) {
                    chosen = candidate
                    break
                }
            }
            // Every member marked: the turn's member is the last try (a member that came back is
            // better than a lost event).
            turn = (chosen + 1) % count
            return MemberSet(chosen)
        }
    }

    /// Where an event goes after failing on `member`, having been tried on `tried`: the next
    /// unmarked member not yet tried, else a marked one as a last try, else nowhere.
    /// FAILOVER looks from the first member, ROUND-ROBIN from the member after the failed one;
    /// PARALLEL never re-routes. The turn does not move.
    public func reroute(tried: MemberSet, after member: Int, now: Double) -> Int? {
        guard policy != .parallel else { return nil }
        let count = members.count
        let start = policy == .failover ? 0 : (member + 1) % count
        var lastTry: Int?
        for step in 0..<count {
            let candidate = (start + step) % count
            guard !tried.contains(candidate) else { continue }
            if !members[candidate].isMarked(now: now) { return candidate }
            if lastTry == nil { lastTry = candidate }
        }
        return lastTry
    }

    /// Records a delivery outcome of `member`; returns the health transition it caused.
    public mutating func record(_ outcome: DeliveryOutcome, member: Int, now: Double) -> MemberHealth.Transition? {
        switch outcome {
        case .delivered: members[member].recordSuccess()
        case .failed(let failure): members[member].recordFailure(failure, now: now, failoverTimeout: failoverTimeout)
        }
    }
}
