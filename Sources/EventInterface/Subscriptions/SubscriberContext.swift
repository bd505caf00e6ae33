import Logging

/// What a subscriber is built with: the subscription it serves and the interface's services.
public struct SubscriberContext: Sendable {
    public let event: Event
    /// The whole socket, printed form.
    public let socket: String
    private let hub: WeakHub

    init(event: Event, socket: String, hub: EventHub) {
        self.event = event
        self.socket = socket
        self.hub = WeakHub(hub)
    }

    public var logger: Logger { hub.hub?.logger ?? Logger(label: "evi") }
    public var clock: any EventClock { hub.hub?.clock ?? SystemEventClock() }
    public var queueCapacity: Int { hub.hub?.configuration.queueSize ?? 10_000 }
    public var queueByteCapacity: Int { hub.hub?.configuration.queueBytes ?? (16 << 20) }
    public var statistics: Statistics { hub.hub?.statistics ?? Statistics() }

    /// Counters of the subscribed event (virtual subscribers count undelivered events there).
    public var eventCounters: EventCounters { statistics.event(event.name) }

    /// What a deliverer for `member` (the subscription's socket, or one member of it) is given.
    public func delivererContext(for member: any DeliverySocket) -> DelivererContext {
        DelivererContext(event: event, socket: member.description, logger: logger, clock: clock)
    }

    /// A queue and delivery task for one delivering socket: the plain subscriber's own, or one
    /// member's of a virtual subscriber.
    public func makeQueue(
        for member: any DeliverySocket, observer: DeliveryQueue.Observer? = nil,
        onGone: (@Sendable (String) -> Void)? = nil
    ) -> DeliveryQueue {
        let logger = self.logger
        let deliverer = member.makeDeliverer(context: delivererContext(for: member))
        return DeliveryQueue(
            deliverer: deliverer, socket: member.description, capacity: queueCapacity,
            byteCapacity: hub.hub?.configuration.queueBytes ?? (16 << 20),
            counters: statistics.transport(member.scheme),
            logger: logger, observer: observer, onGone: onGone)
    }

    /// Removes this subscription (of `socket`) because its subscriber said it wants no more
    /// events (a webhook's `410 Gone`); logged.
    public func removeSubscription(of socket: any EventSocket, because reason: String) {
        let hub = self.hub
        let event = self.event
        Task {
            guard let hub = hub.hub, await hub.unsubscribe(event: event.name, parsed: socket) else { return }
            hub.logger.warning(
                "subscriber gone: subscription removed",
                metadata: ["event": "\(event.name)", "socket": "\(socket)", "reason": "\(reason)"])
        }
    }

    /// Raises one of the interface's own events (`E_VIRTUAL_MEMBER_DOWN`, …); failures to raise
    /// (nobody subscribed, not published) are ignored.
    public func raise(_ name: String, _ params: EventParams) {
        _ = try? hub.hub?.raise(name, params)
    }
}

/// Subscribers and transports point back at their interface without keeping it alive.
public final class WeakHub: Sendable {
    public weak let hub: EventHub?
    public init(_ hub: EventHub) { self.hub = hub }
}
