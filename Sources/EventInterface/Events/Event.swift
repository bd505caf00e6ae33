import Synchronization

/// A published event: its name and the id it got, in publish order from 0.
public struct Event: Sendable, Hashable {
    public let name: String
    public let id: Int

    public init(name: String, id: Int) {
        self.name = name
        self.id = id
    }

    /// Whether `name` can name an event: non-empty, no whitespace or control characters.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && !name.unicodeScalars.contains { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }
    }
}

/// A way of turning an event into bytes, shared by every subscriber that uses it.
///
/// The raise path encodes each event once per format, not once per subscriber: subscribers ask
/// ``RaisedEvent/payload(_:)`` and the first one to ask pays for the encoding. Two formats that
/// are equal must give the same bytes (a format holds exactly the options its bytes depend on).
public protocol PayloadFormat: Sendable, Hashable {
    func encode(_ event: RaisedEvent) -> [UInt8]
}

/// The JSON-RPC notification, as udp, unix, tcp and rabbitmq send it:
/// `{"jsonrpc":"2.0","method":"E_X","params":{…}}`.
public struct JSONRPCNotificationFormat: PayloadFormat {
    public init() {}
    public func encode(_ event: RaisedEvent) -> [UInt8] {
        JSONRPCNotification.encode(method: event.name, params: event.params)
    }
}

extension PayloadFormat where Self == JSONRPCNotificationFormat {
    /// `event.payload(.jsonRPC)`.
    public static var jsonRPC: JSONRPCNotificationFormat { JSONRPCNotificationFormat() }
}

/// One raise of one event: what every subscriber is handed.
public final class RaisedEvent: Sendable {
    public let event: Event
    public let params: EventParams
    /// When it was raised, on the interface's clock (seconds).
    public let raisedAt: Double
    /// About how many bytes it holds in a queue (its name, parameters and the object itself).
    public let size: Int
    /// Told when every subscriber is done with it, for a raiser that waits for that (an ingress
    /// that acknowledges its broker); nil for the others, who pay nothing for it.
    public let settlement: RaiseSettlement?
    /// The raiser would rather an idle subscriber's transport send the event on the raising thread
    /// (``ImmediateDeliverer``) than hand it to the delivery task. Set by request/response
    /// producers — the MI raises one event per request and its thread goes back to I/O anyway,
    /// where the hand-over cost a thread wake-up per event (a fifth of an MI raise, measured with
    /// perf). Bulk producers leave it off: their events batch into one system call.
    public let inline: Bool

    /// Encodings made so far. One lock and a short list rather than a dictionary: an event may sit
    /// in a stuck member's queue for long, and its footprint is what such a queue costs. The
    /// JSON-RPC notification, which most subscribers use, has a slot of its own.
    private struct Encodings {
        var jsonRPC: [UInt8]?
        var others: [(format: any PayloadFormat, bytes: [UInt8])] = []
    }
    private let encodings = Mutex(Encodings())

    public var name: String { event.name }

    public init(
        event: Event, params: EventParams, raisedAt: Double = 0, settlement: RaiseSettlement? = nil,
        inline: Bool = false
    ) {
        self.event = event
        self.params = params
        self.raisedAt = raisedAt
        self.settlement = settlement
        self.inline = inline
        self.size = 96 + event.name.utf8.count + params.approximateSize
    }

    /// An event read back from storage, its JSON-RPC notification already known (the spool keeps
    /// those bytes): subscribers that send them do not encode it again.
    public convenience init(
        event: Event, params: EventParams, raisedAt: Double, jsonRPC: [UInt8], settlement: RaiseSettlement? = nil
    ) {
        self.init(event: event, params: params, raisedAt: raisedAt, settlement: settlement)
        encodings.withLock { $0.jsonRPC = jsonRPC }
    }

    /// The bytes of `format`, encoded on first use and shared afterwards: the one way to get an
    /// event's bytes.
    public func payload<Format: PayloadFormat>(_ format: Format) -> [UInt8] {
        if let json = format as? JSONRPCNotificationFormat { return payload(json) }
        if let bytes = encodings.withLock({ $0.others.first { ($0.format as? Format) == format }?.bytes }) {
            return bytes
        }
        let bytes = format.encode(self)
        encodings.withLock { encodings in
            if !encodings.others.contains(where: { ($0.format as? Format) == format }) {
                encodings.others.append((format, bytes))
            }
        }
        return bytes
    }

    /// The JSON-RPC notification's bytes (the same call; this overload is what callers that
    /// name `.jsonRPC` get, without a type check on the hot path).
    public func payload(_ format: JSONRPCNotificationFormat) -> [UInt8] {
        encodings.withLock { encodings in
            if let bytes = encodings.jsonRPC { return bytes }
            let bytes = JSONRPCNotification.encode(method: event.name, params: params)
            encodings.jsonRPC = bytes
            return bytes
        }
    }
}
