/// What `subscribe` did.
public enum SubscribeResult: Sendable, Hashable {
    case subscribed
    /// A matching subscription existed; its expire was renewed in place.
    case refreshed
    /// Expire 0: the matching subscription, if there was one, was removed.
    case unsubscribed(found: Bool)
}

/// What `raise` did: the event, and how many live subscribers it was handed to.
public struct RaiseResult: Sendable, Hashable {
    public var event: Event
    public var subscribers: Int
}

/// One subscription as listings show it.
public struct SubscriberInfo: Sendable {
    public var socket: String
    public var expiry: Expiry
    /// Whole seconds left, `nil` for a never-expiring subscription.
    public var ttl: Int?
    /// What the subscriber reports about itself (``EventSubscriber/status()``), or nil.
    public var status: (any SubscriberStatus)?
    /// Its outcome counts, when it keeps them (``EventSubscriber/tally``).
    public var tally: SubscriberTally? = nil
    /// Its filter and field list, when it has them.
    public var attributes: SubscriptionAttributes = .none
}
