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
/// ``RaisedEvent/payload(_:)`` and the first one to ask pays for the encoding.
public protocol PayloadFormat: Sendable {
    /// Identifies the format with its options; two formats with the same key must give the same bytes.
    var key: String { get }
    func encode(_ event: RaisedEvent) -> [UInt8]
}

/// The JSON-RPC notification of `transports.md`, as udp, unix and rabbitmq send it.
public struct JSONRPCNotificationFormat: PayloadFormat {
    public init() {}
    public var key: String { "jsonrpc" }
    public func encode(_ event: RaisedEvent) -> [UInt8] {
        JSONRPCNotification.encode(method: event.name, params: event.params)
    }
}

/// One raise of one event: what every subscriber is handed.
public final class RaisedEvent: Sendable {
    public let event: Event
    public let params: EventParams
    /// When it was raised, on the interface's clock (seconds).
    public let raisedAt: Double
    /// About how many bytes it holds in a queue (its name, parameters and the object itself).
    public let size: Int

    /// Encodings made so far. One lock and a short list rather than a dictionary: an event may sit
    /// in a stuck member's queue for long, and its footprint is what such a queue costs.
    private struct Encodings {
        var jsonRPC: [UInt8]?
        var others: [(key: String, bytes: [UInt8])] = []
    }
    private let encodings = Mutex(Encodings())

    public var name: String { event.name }

    public init(event: Event, params: EventParams, raisedAt: Double = 0) {
        self.event = event
        self.params = params
        self.raisedAt = raisedAt
        self.size = 96 + event.name.utf8.count + params.approximateSize
    }

    /// The JSON-RPC notification bytes, encoded on first use and shared afterwards.
    public var jsonRPC: [UInt8] {
        encodings.withLock { encodings in
            if let bytes = encodings.jsonRPC { return bytes }
            let bytes = JSONRPCNotification.encode(method: event.name, params: params)
            encodings.jsonRPC = bytes
            return bytes
        }
    }

    /// The bytes of `format`, encoded on first use and shared afterwards.
    public func payload(_ format: some PayloadFormat) -> [UInt8] {
        if format is JSONRPCNotificationFormat { return jsonRPC }
        let key = format.key
        if let bytes = encodings.withLock({ $0.others.first { $0.key == key }?.bytes }) { return bytes }
        let bytes = format.encode(self)
        encodings.withLock { encodings in
            if !encodings.others.contains(where: { $0.key == key }) { encodings.others.append((key, bytes)) }
        }
        return bytes
    }
}
