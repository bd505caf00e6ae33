import EventInterface

/// How a virtual socket spreads events over its members.
public enum VirtualPolicy: String, Sendable, Hashable, CaseIterable {
    /// Every member gets every event.
    case parallel = "PARALLEL"
    /// Members in order until one succeeds; failed ones skipped for `failover_timeout`.
    case failover = "FAILOVER"
    /// Each event to the next member in turn, skipping failed ones.
    case roundRobin = "ROUND-ROBIN"
    /// `HASH(PARAM)`: each event to one member chosen by the value of one parameter, so that one
    /// key's events go to one member (rendezvous hashing: Docs/virtual.md).
    case hash = "HASH"
}

/// The decisions of a virtual subscriber, without any I/O: which member(s) get a new event,
/// where a failed event goes next, and how member health changes. Docs/virtual.md, exactly.
public struct VirtualPolicyState: Sendable, Hashable {
    public let policy: VirtualPolicy
    public let failoverTimeout: Double
    public private(set) var members: [MemberHealth]
    /// ROUND-ROBIN: the member whose turn it is.
    public private(set) var turn = 0
    /// HASH: each member's part of every key's score, from its canonical socket.
    public let memberSeeds: [UInt64]

    public init(policy: VirtualPolicy, memberCount: Int, failoverTimeout: Double) {
        self.init(policy: policy, members: (0..<memberCount).map { "member \($0)" }, failoverTimeout: failoverTimeout)
    }

    /// `members` are the members' canonical sockets: HASH ranks members by them, so that the
    /// ranking of a key does not depend on the members' order.
    public init(policy: VirtualPolicy, members: [String], failoverTimeout: Double) {
        self.policy = policy
        self.failoverTimeout = failoverTimeout
        self.members = Array(repeating: MemberHealth(), count: members.count)
        self.memberSeeds = members.map(RendezvousHash.hash)
    }

    /// The members a newly raised event is dispatched to; `key` is the event's HASH key (the
    /// other policies ignore it).
    public mutating func dispatchTargets(now: Double, key: String = "") -> MemberSet {
        switch policy {
        case .hash:
            // The key's first-ranked live member; with every member marked, its first-ranked one.
            let keyHash = RendezvousHash.hash(key)
            return MemberSet(
                best(keyHash, now: now, skipping: MemberSet(), live: true) ?? best(
                    keyHash, now: now, skipping: MemberSet(), live: false) ?? 0)
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
    /// PARALLEL never re-routes. The turn does not move. HASH goes down the key's ranking.
    public func reroute(tried: MemberSet, after member: Int, now: Double, key: String = "") -> Int? {
        guard policy != .parallel else { return nil }
        if policy == .hash {
            let keyHash = RendezvousHash.hash(key)
            return best(keyHash, now: now, skipping: tried, live: true)
                ?? best(keyHash, now: now, skipping: tried, live: false)
        }
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

    /// The members in the order HASH tries them for `key`: highest score first.
    public func ranking(key: String) -> [Int] {
        let keyHash = RendezvousHash.hash(key)
        return members.indices.sorted {
            let (left, right) = (
                RendezvousHash.score(keyHash, memberSeeds[$0]), RendezvousHash.score(keyHash, memberSeeds[$1])
            )
            return left != right ? left > right : $0 < $1
        }
    }

    /// The highest-scoring member for a key not in `skipping`, among the unmarked ones (`live`)
    /// or among the marked ones. No allocation: a raise calls it.
    private func best(_ keyHash: UInt64, now: Double, skipping: MemberSet, live: Bool) -> Int? {
        var chosen: Int?
        var top: UInt64 = 0
        for member in members.indices where !skipping.contains(member) && members[member].isMarked(now: now) != live {
            let score = RendezvousHash.score(keyHash, memberSeeds[member])
            if chosen == nil || score > top {
                chosen = member
                top = score
            }
        }
        return chosen
    }

    /// Records a delivery outcome of `member`; returns the health transition it caused.
    public mutating func record(_ outcome: DeliveryOutcome, member: Int, now: Double) -> MemberHealth.Transition? {
        switch outcome {
        case .delivered: members[member].recordSuccess()
        case .failed(let failure): members[member].recordFailure(failure, now: now, failoverTimeout: failoverTimeout)
        }
    }
}

/// Rendezvous (highest-random-weight) hashing: a key goes to the member with the highest
/// `score(key, member)`. Adding or removing a member moves only the keys whose top member it is;
/// reordering members moves none. The functions are not part of the interface (Docs/virtual.md).
public enum RendezvousHash {
    /// FNV-1a, 64 bits, over the UTF-8 bytes.
    public static func hash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }

    /// A well-mixed 64-bit score of one key and one member (the SplitMix64 finaliser over both).
    public static func score(_ key: UInt64, _ member: UInt64) -> UInt64 {
        var value = key ^ (member &* 0x9e37_79b9_7f4a_7c15)
        value = (value ^ (value >> 30)) &* 0xbf58_476d_1ce4_e5b9
        value = (value ^ (value >> 27)) &* 0x94d0_49bb_1331_11eb
        return value ^ (value >> 31)
    }
}
