import EventInterface
import Synchronization

/// A clock that moves only when told, for testing expiry and member health without sleeping.
public final class ManualClock: EventClock {
    private let current: Mutex<Double>

    public init(_ start: Double = 1_000) { current = Mutex(start) }

    public func now() -> Double { current.withLock { $0 } }

    public func advance(by seconds: Double) { current.withLock { $0 += seconds } }
}
