import Synchronization

/// How a subscription's events are kept until delivered.
public enum DeliveryMode: String, Sendable, Hashable, CaseIterable {
    /// In the subscriber's bounded queue: fast, lost when the subscriber fails for good, the
    /// queue is full, or evi stops.
    case memory
    /// Written to a spool on disk before `raise` returns, and removed only once delivered:
    /// retried with backoff while the subscriber is down, kept across restarts and crashes,
    /// moved to dead letters past the spool's bounds, never dropped silently.
    case durable
}

/// One independent line of delivery of a durable subscription, with its own spool and cursor:
/// a plain socket has one; a PARALLEL virtual socket one per member (a dead member never holds
/// back the live ones); FAILOVER and ROUND-ROBIN one, whose deliverer routes among the members.
public struct DurableStream: Sendable {
    /// What it delivers to, printed (the member's socket, or the subscription's).
    public var name: String
    /// Names its spool among the subscription's streams, the same from one run to the next
    /// whatever order equal members come in: a member's identity and its occurrence.
    public var key: String
    /// The transport scheme counted in `evi_delivery_retries_total{transport}`.
    public var transport: String
    public var deliverer: any EventDeliverer

    public init(name: String, key: String, transport: String, deliverer: any EventDeliverer) {
        self.name = name
        self.key = key
        self.transport = transport
        self.deliverer = deliverer
    }
}

/// A subscriber whose events are stored before the raise returns (``DeliveryMode/durable``).
///
/// The hub calls ``store(_:)`` instead of `dispatch`: a failure to store refuses the raise
/// ("not stored"), so that nobody is told an event is safe when it is not.
public protocol DurableSubscriber: EventSubscriber {
    func store(_ event: RaisedEvent) throws(StoreError)
}

extension DurableSubscriber {
    public func dispatch(_ event: RaisedEvent) { _ = try? store(event) }
}

/// Why an event could not be stored (disk full, directory unwritable…).
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// What makes durable subscribers: the spool (module `EventSpool`), handed to the hub by whoever
/// composes it. Without one, durable subscriptions are refused.
public protocol DurableStore: Sendable {
    /// A durable subscriber for `socket`'s subscription to `context.event`, its spool opened (and
    /// what an earlier run left there queued for delivery).
    func makeSubscriber(socket: any EventSocket, streams: [DurableStream], context: SubscriberContext)
        throws(StoreError) -> any DurableSubscriber
}

extension EventSocket {
    /// The independent lines of delivery a durable subscription of this socket has. A socket that
    /// delivers itself has one; a composite socket (`virtual:`) says how its members share them.
    public func durableStreams(context: SubscriberContext) -> [DurableStream] {
        if let composite = self as? any DurableStreamSource { return composite.makeDurableStreams(context: context) }
        guard let delivering = self as? any DeliverySocket else { return [] }
        return [
            DurableStream(
                name: description, key: identity, transport: scheme,
                deliverer: delivering.makeDeliverer(context: context.delivererContext(for: delivering)))
        ]
    }
}

/// A composite socket's own answer to ``EventSocket/durableStreams(context:)``.
public protocol DurableStreamSource: EventSocket {
    func makeDurableStreams(context: SubscriberContext) -> [DurableStream]
}

extension EventParams {
    /// With `field` appended when given: to named parameters, or as the only one of none;
    /// positional parameters are returned unchanged (a name has no place among them).
    func adding(_ field: (String, EventValue)?) -> EventParams {
        guard let (name, value) = field else { return self }
        switch self {
        case .none: return .named([EventField(name, value)])
        case .named(let fields): return .named(fields + [EventField(name, value)])
        case .positional: return self
        }
    }
}

/// `id_param` values: a random prefix drawn at start, so that ids of two runs never meet, and a
/// counter (`3f9c0a1e5b7d2c48-17`).
final class RaiseIDs: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        let random = UInt64.random(in: 0...UInt64.max)
        let hex = String(random, radix: 16)
        prefix = String(repeating: "0", count: 16 - hex.count) + hex
    }

    func next() -> String {
        "\(prefix)-\(counter.add(1, ordering: .relaxed).newValue)"
    }
}
