import EventInterface
import Synchronization

/// An in-memory transport for tests, registered exactly as the built-in ones are (the shape a
/// third-party transport takes): `SCHEME:NAME` records every event it is handed, as its JSON-RPC
/// text, under NAME. While ``gateOpen`` is false deliveries wait (a slow subscriber); a name in
/// ``failing`` fails its deliveries (a dead one, for the virtual policies).
public final class TestTransport: EventTransport {
    public let scheme: String
    /// Deliveries wait while this is false.
    public let gateOpen = Atomic<Bool>(true)
    private let delivered = Mutex<[String: [String]]>([:])
    private let failingNames = Mutex<Set<String>>([])

    public init(scheme: String = "test") {
        self.scheme = scheme
    }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        guard !address.isEmpty else { throw SocketError("\(scheme) socket needs a name") }
        return Socket(name: address, transport: self)
    }

    /// What `SCHEME:name` was handed, in order.
    public func messages(_ name: String) -> [String] { delivered.withLock { $0[name] ?? [] } }

    /// Names whose deliveries fail ("refused by the test") until removed.
    public var failing: Set<String> {
        get { failingNames.withLock { $0 } }
        set { failingNames.withLock { $0 = newValue } }
    }

    struct Socket: DeliverySocket {
        let name: String
        let transport: TestTransport
        var scheme: String { transport.scheme }
        var description: String { "\(transport.scheme):\(name)" }
        func matches(_ other: any EventSocket) -> Bool {
            (other as? Socket).map { $0.name == name && $0.transport === transport } ?? false
        }
        func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
            Deliverer(name: name, transport: transport)
        }
    }

    struct Deliverer: EventDeliverer {
        let name: String
        let transport: TestTransport
        func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
            while !transport.gateOpen.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(2)) }
            if transport.failing.contains(name) {
                return .failed(DeliveryFailure(.subscriberFailed, "refused by the test"))
            }
            let text = String(decoding: event.payload(.jsonRPC), as: UTF8.self)
            transport.delivered.withLock { $0[name, default: []].append(text) }
            return .delivered
        }
    }
}
