import Synchronization

/// Tells whoever raised an event when its fate is settled for every subscriber: delivered, or
/// finally failed and counted (a FAILOVER socket that tried every member, a full queue, a drain
/// that ran out of time). A broker-backed ingress acknowledges its message then, so that a
/// message is acknowledged only once evi is done with it (at-least-once end to end).
///
/// A count of holds rather than a list of subscribers: the raise holds the event while it hands it
/// out, each ``DeliveryQueue`` holds it from the moment it queues it until its observer has seen
/// the outcome (so a virtual socket moving a failed event to its next member takes its hold before
/// the previous one is let go), and the last release runs `onSettled`, once.
public final class RaiseSettlement: Sendable {
    private let holds = Atomic<Int>(1)
    private let onSettled: @Sendable () -> Void

    /// Starts with the raiser's own hold, released by ``release()`` when it has handed the event out.
    public init(onSettled: @escaping @Sendable () -> Void) {
        self.onSettled = onSettled
    }

    /// One more place holds the event.
    public func hold() {
        holds.add(1, ordering: .relaxed)
    }

    /// One place is done with it; the last one settles it.
    public func release() {
        if holds.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { onSettled() }
    }

    /// Holds not yet released (tests).
    public var pending: Int { holds.load(ordering: .relaxed) }
}
