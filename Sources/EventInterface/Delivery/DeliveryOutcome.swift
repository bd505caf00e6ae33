/// Why one delivery failed, and what the failure says about the subscriber.
public struct DeliveryFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The subscriber is unreachable, refused, timed out or answered with an error:
        /// a virtual socket marks the member failed.
        case subscriberFailed
        /// The subscriber said it wants no more events (a webhook's `410 Gone`): a plain
        /// subscription is removed; a virtual socket marks the member failed, as for
        /// `subscriberFailed`.
        case subscriberGone
        /// The event itself cannot go there ("payload too large"): it moves on, nobody is marked.
        case eventRejected
        /// The subscriber's queue was full: slow is not dead, nobody is marked.
        case queueFull
    }

    public var kind: Kind
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public static let queueFull = DeliveryFailure(.queueFull, "queue full")
    public static let payloadTooLarge = DeliveryFailure(.eventRejected, "payload too large")
    public static let shuttingDown = DeliveryFailure(.subscriberFailed, "shutting down")

    public var description: String { reason }
}

/// How one delivery ended.
public enum DeliveryOutcome: Sendable, Hashable {
    case delivered
    case failed(DeliveryFailure)

}
