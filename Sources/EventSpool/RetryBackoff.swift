/// When a durable stream whose delivery failed tries again: `minimum` seconds, doubling at each
/// further failure up to `maximum`, back to `minimum` after a success (`spool.retry_min`,
/// `spool.retry_max`). Pure.
public struct RetryBackoff: Sendable, Hashable {
    public let minimum: Double
    public let maximum: Double
    /// The wait the next failure gets.
    public private(set) var next: Double

    public init(minimum: Double, maximum: Double) {
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        next = minimum
    }

    /// A delivery failed: how long to wait before the retry.
    public mutating func failed() -> Double {
        let wait = next
        next = min(next * 2, maximum)
        return wait
    }

    public mutating func succeeded() {
        next = minimum
    }
}
