/// What a subscription holds: it is handed every raise of its event.
public protocol EventSubscriber: Sendable {
    /// Hands one event over. Never blocks and never waits for delivery.
    func dispatch(_ event: RaisedEvent)
    /// What this kind of subscriber has to say about itself beyond its socket and expiry (a
    /// virtual subscriber: its members' health), or nil.
    func status() -> (any SubscriberStatus)?
    /// Stops taking events, delivers what is queued for at most `grace`, releases resources.
    func close(grace: Duration) async
    /// Its delivered / failed / dropped counts, when it keeps them (for the status page).
    var tally: SubscriberTally? { get }
}

extension EventSubscriber {
    public func status() -> (any SubscriberStatus)? { nil }
    public var tally: SubscriberTally? { nil }
}

/// A subscriber's own report (``EventSubscriber/status()``). The core and the MI know nothing of
/// what it holds: the MI adds its `fields` to the subscriber's entry of `evi:subscribers`, and the
/// module that made it offers a typed view (`EventVirtual`'s `members`).
public protocol SubscriberStatus: Sendable {
    var fields: [EventField] { get }
}

/// A plain subscriber: one queue and one delivery task.
public struct QueuedSubscriber: EventSubscriber {
    public let queue: DeliveryQueue

    public init(queue: DeliveryQueue) { self.queue = queue }

    public func dispatch(_ event: RaisedEvent) {
        _ = queue.enqueue(event)
    }

    public var tally: SubscriberTally? { queue.tally }

    public func close(grace: Duration) async {
        await queue.close(grace: grace)
    }
}
