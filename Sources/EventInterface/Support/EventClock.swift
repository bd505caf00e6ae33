#if canImport(Glibc)
    import Glibc
#endif

/// Monotonic time in seconds, injectable so that expiry and member health are tested without
/// sleeping (the test kit has a manual clock).
public protocol EventClock: Sendable {
    func now() -> Double
}

/// The machine's monotonic clock.
public struct SystemEventClock: EventClock {
    public init() {}

    public func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

/// Wall-clock Unix time in seconds (for timestamps that leave the process).
public func unixTime() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

/// Monotonic nanoseconds, for measuring durations.
public func monotonicNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}
