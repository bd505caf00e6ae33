import EventInterface

/// The health of one member of a virtual subscriber: a pure state machine over an injected time.
///
/// `up` → (a failure that is the member's fault) → `failed` until `now + failover_timeout`; a later
/// failure while failed renews the mark; a success in any state makes it `up`. A full queue or an
/// event the member cannot take ("payload too large") counts as a failed delivery but does not
/// mark the member: slow is not dead, and the event is not the member's fault.
public struct MemberHealth: Sendable, Hashable {
    public enum State: Sendable, Hashable {
        case up
        /// Marked failed; skipped by FAILOVER and ROUND-ROBIN until `until` (clock seconds).
        case failed(until: Double)
    }

    /// A change worth telling the world about (`E_VIRTUAL_MEMBER_DOWN` / `_UP`).
    public enum Transition: Sendable, Hashable {
        case down(reason: String)
        case up
    }

    public private(set) var state: State = .up
    public private(set) var delivered = 0
    public private(set) var failed = 0

    public init() {}

    public mutating func recordSuccess() -> Transition? {
        delivered += 1
        guard case .failed = state else { return nil }
        state = .up
        return .up
    }

    public mutating func recordFailure(_ failure: DeliveryFailure, now: Double, failoverTimeout: Double) -> Transition?
    {
        failed += 1
        guard failure.kind == .subscriberFailed || failure.kind == .subscriberGone else { return nil }
        let wasUp = state == .up
        state = .failed(until: now + failoverTimeout)
        return wasUp ? .down(reason: failure.reason) : nil
    }

    /// Whether the member is to be skipped at `now` (its mark has not run out).
    public func isMarked(now: Double) -> Bool {
        if case .failed(let until) = state { return now < until }
        return false
    }

    /// Whole seconds until the mark runs out, 0 once it has; `nil` when up.
    public func retryIn(now: Double) -> Int? {
        guard case .failed(let until) = state else { return nil }
        return wholeSecondsUntil(until, now: now)
    }
}

/// A set of member positions (a virtual socket has at most 64 members).
public struct MemberSet: Sendable, Hashable {
    public private(set) var bits: UInt64 = 0

    public init() {}
    public init(_ member: Int) { insert(member) }
    public init(bits: UInt64) { self.bits = bits }

    public func contains(_ member: Int) -> Bool { bits & (1 << UInt64(member)) != 0 }
    public mutating func insert(_ member: Int) { bits |= 1 << UInt64(member) }

    /// Members `0..<count`.
    public static func all(_ count: Int) -> MemberSet {
        var set = MemberSet()
        set.bits = count >= 64 ? .max : (1 << UInt64(count)) - 1
        return set
    }
}

/// Members in ascending order; a set is what dispatching returns, so raising allocates no array.
extension MemberSet: Sequence, ExpressibleByArrayLiteral {
    public init(arrayLiteral members: Int...) {
        for member in members { insert(member) }
    }

    public struct Iterator: IteratorProtocol {
        var rest: UInt64
        public mutating func next() -> Int? {
            guard rest != 0 else { return nil }
            let member = rest.trailingZeroBitCount
            rest &= rest - 1
            return member
        }
    }

    public func makeIterator() -> Iterator { Iterator(rest: bits) }
}
