/// How long a subscription lasts.
public enum Expiry: Sendable, Hashable {
    /// Seconds from now, at most ``maximumSeconds``; `0` removes the subscription.
    case seconds(Int)
    /// Never expires (subscriptions from the configuration file made without an expire).
    case never

    /// The default of `evi:subscribe`: one hour.
    public static let `default` = Expiry.seconds(3600)

    /// The largest expire accepted (OpenSIPS' is a 32-bit int; past it, durations stop being
    /// representable in every unit a client or the clock uses).
    public static let maximumSeconds = 2_147_483_647
}

/// Whole seconds from `now` until `time`, rounded up, never negative, and total: any Double
/// (NaN, infinities, far futures) gives an Int instead of a trap.
public func wholeSecondsUntil(_ time: Double, now: Double) -> Int {
    let seconds = (time - now).rounded(.up)
    guard seconds.isFinite else { return seconds > 0 ? Int.max : 0 }
    if seconds <= 0 { return 0 }
    return seconds >= Double(Int.max) ? Int.max : Int(seconds)
}
