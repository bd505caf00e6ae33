/// A parsed, validated subscriber address.
public protocol EventSocket: Sendable, CustomStringConvertible {
    var scheme: String { get }
    /// Whether `other` addresses the same subscriber, so that subscribing it again refreshes the
    /// existing subscription instead of adding one.
    func matches(_ other: any EventSocket) -> Bool
    /// A key equal for two sockets exactly when they match: subscriptions are indexed by it (a
    /// subscribe among 100,000 is a lookup, not a scan) and durable state is keyed by it.
    /// Defaults to the printed form, which is canonical for every socket whose matching is
    /// equality of its parts.
    var identity: String { get }
    /// The sockets that deliver: itself, or for a composite socket (`virtual:`) its members.
    /// Rules about destinations (which module a socket belongs to, what it may point at) are
    /// applied to these.
    var components: [any EventSocket] { get }
    /// The secrets written in this socket's own text (a password, a token), each named for an
    /// operator ("the password in rabbitmq:ops@mq/pike"): a shared state store refuses to carry
    /// them over a connection that may be in clear. Empty for most sockets; a composite socket's
    /// members answer for themselves (through ``components``).
    var secrets: [String] { get }
    /// Builds what a subscription holds: it receives every raise of the subscribed event.
    func makeSubscriber(context: SubscriberContext) -> any EventSubscriber
}

extension EventSocket {
    public var identity: String { description }
    public var components: [any EventSocket] { [self] }
    public var secrets: [String] { [] }
}

/// A socket that delivers events itself (every transport but `virtual`): it gets a queue and
/// a delivery task of its own, as a plain subscriber or as one member of a virtual subscriber.
public protocol DeliverySocket: EventSocket {
    func makeDeliverer(context: DelivererContext) -> any EventDeliverer
}

extension DeliverySocket {
    public func makeSubscriber(context: SubscriberContext) -> any EventSubscriber {
        QueuedSubscriber(
            queue: context.makeQueue(
                for: self, onGone: { reason in context.removeSubscription(of: self, because: reason) }))
    }
}
