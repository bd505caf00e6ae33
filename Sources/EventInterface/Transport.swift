import Logging

/// Why a socket string was refused; `message` names the problem and the offending text
/// (`udp socket needs a port: udp:127.0.0.1`), and is what MI replies carry as `data`.
public struct SocketError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    /// The message with any `SCHEME:USER:PASSWORD@` credentials taken out (``redactingCredentials(_:)``):
    /// errors quote the socket they refuse, and end up in MI replies, logs and start-up messages.
    public init(_ message: String) { self.message = redactingCredentials(message) }
    public var description: String { message }
}

/// `text` with the password of every `SCHEME:USER:PASSWORD@HOST` taken out
/// (`rabbitmq:guest:s3cret@h/k` → `rabbitmq:guest@h/k`), wherever it stands in the text: whole
/// virtual sockets are quoted in member errors. The password runs to the last `@` before the
/// next space, as the socket parsers read it.
public func redactingCredentials(_ text: String) -> String {
    guard text.contains("@") else { return text }
    return text.split(separator: " ", omittingEmptySubsequences: false).map { word -> Substring in
        guard let at = word.lastIndex(of: "@"), let schemeEnd = word.firstIndex(of: ":"), schemeEnd < at else {
            return word
        }
        let credentials = word[word.index(after: schemeEnd)..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return word }
        return word[..<colon] + word[at...]
    }.joined(separator: " ")
}

/// Why one delivery failed, and what the failure says about the subscriber.
public struct DeliveryFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The subscriber is unreachable, refused, timed out or answered with an error:
        /// a virtual socket marks the member failed.
        case subscriberFailed
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

    public var isDelivered: Bool { self == .delivered }
}

/// A transport knows one scheme (`udp`, `tcp`, `virtual`, …): it turns socket strings of that
/// scheme into sockets. Register one with ``TransportRegistry``, built-in or third-party alike.
public protocol EventTransport: Sendable {
    /// The scheme, lower case, without the colon.
    var scheme: String { get }
    /// Events this transport raises itself, published when it is registered.
    var publishedEvents: [String] { get }
    /// Parses and validates what follows `scheme:`. Never connects to the subscriber; may
    /// resolve host names (bounded). Throws a ``SocketError`` that names the problem.
    func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError) -> any EventSocket
    /// Called once when registered with `hub`, for transports that raise events of their own
    /// outside any delivery (flatstore's rotations). Keep the hub weakly.
    func attach(to hub: EventHub)
}

extension EventTransport {
    public var publishedEvents: [String] { [] }
    public func attach(to hub: EventHub) {}
}

/// What a transport may use while parsing: the registry, to parse members of composite sockets.
public struct SocketParsingContext: Sendable {
    public let registry: TransportRegistry

    /// Parses a whole socket string (`scheme:address`) with whichever transport owns the scheme.
    public func parseSocket(_ text: String) async throws(SocketError) -> any EventSocket {
        try await registry.parseSocket(text)
    }
}

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
    /// Builds what a subscription holds: it receives every raise of the subscribed event.
    func makeSubscriber(context: SubscriberContext) -> any EventSubscriber
}

extension EventSocket {
    public var identity: String { description }
    public var components: [any EventSocket] { [self] }
}

/// A socket that delivers events itself (every transport but `virtual`): it gets a queue and
/// a delivery task of its own, as a plain subscriber or as one member of a virtual subscriber.
public protocol DeliverySocket: EventSocket {
    func makeDeliverer(context: DelivererContext) -> any EventDeliverer
}

extension DeliverySocket {
    public func makeSubscriber(context: SubscriberContext) -> any EventSubscriber {
        QueuedSubscriber(queue: context.makeQueue(for: self))
    }
}

/// What a deliverer may use: who it delivers for, a logger and the clock.
public struct DelivererContext: Sendable {
    public let event: Event
    public let socket: String
    public let logger: Logger
    public let clock: any EventClock

    public init(event: Event, socket: String, logger: Logger, clock: any EventClock) {
        self.event = event
        self.socket = socket
        self.logger = logger
        self.clock = clock
    }
}

/// The per-subscriber (or per-member) delivery state: a connected socket, a TCP connection…
///
/// Called from one delivery task at a time, events in raise order.
public protocol EventDeliverer: Sendable {
    /// Delivers one event.
    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome
    /// Delivers several events, in order; a transport that can pipeline or batch overrides it.
    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome]
    /// Releases what the deliverer holds; no delivery follows.
    func close() async
    /// Called on the raising thread as the event is queued, before the delivery task sees it.
    ///
    /// A deliverer whose task does little but I/O (udp, unix, rabbitmq) encodes its payload here:
    /// there is one delivery task per subscriber but many raising threads, so work done here is
    /// spread over the producers instead of queueing behind the subscriber's single task. The
    /// encoding is cached on the event, so subscribers of the same format share it.
    func prepare(_ event: RaisedEvent)
}

extension EventDeliverer {
    public func prepare(_ event: RaisedEvent) {}
    public func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        var outcomes: [DeliveryOutcome] = []
        outcomes.reserveCapacity(events.count)
        for event in events { outcomes.append(await deliver(event)) }
        return outcomes
    }
    public func close() async {}
}

/// What a subscription holds: it is handed every raise of its event.
public protocol EventSubscriber: Sendable {
    /// Hands one event over. Never blocks and never waits for delivery.
    func dispatch(_ event: RaisedEvent)
    /// What this kind of subscriber has to say about itself beyond its socket and expiry (a
    /// virtual subscriber: its members' health), or nil.
    func status() -> (any SubscriberStatus)?
    /// Stops taking events, delivers what is queued for at most `grace`, releases resources.
    func close(grace: Duration) async
}

extension EventSubscriber {
    public func status() -> (any SubscriberStatus)? { nil }
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

    public func close(grace: Duration) async {
        await queue.close(grace: grace)
    }
}
