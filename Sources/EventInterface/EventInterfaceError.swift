/// Errors of the library API; each says what was wrong.
public enum EventInterfaceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Raising or subscribing an event nobody published.
    case eventNotPublished(String)
    case invalidEventName(String)
    case badSocket(SocketError)
    case negativeExpire(Int)
    case expireTooLarge(Int)
    /// `max_events` reached.
    case tooManyEvents(limit: Int)
    /// `max_subscriptions` reached.
    case tooManySubscriptions(limit: Int)
    /// A durable subscriber could not store the event (disk full, spool unwritable): the raise
    /// is refused, nothing was acknowledged.
    case notStored(String)
    /// A durable subscription asked of a hub without a spool.
    case durableUnavailable

    public var description: String {
        switch self {
        case .eventNotPublished(let name): "event not published: \(name)"
        case .invalidEventName(let name): "invalid event name '\(name)' (non-empty, no whitespace)"
        case .badSocket(let error): error.message
        case .negativeExpire(let value): "negative expire value: \(value)"
        case .expireTooLarge: "expire too large (max \(Expiry.maximumSeconds))"
        case .tooManyEvents(let limit): "too many events (max_events \(limit))"
        case .tooManySubscriptions(let limit): "too many subscriptions (max_subscriptions \(limit))"
        case .notStored(let reason): "not stored: \(reason)"
        case .durableUnavailable: "durable delivery needs a spool (spool.dir)"
        }
    }
}
