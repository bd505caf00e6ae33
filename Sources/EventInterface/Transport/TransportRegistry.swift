import Synchronization

/// The transports an interface knows, by scheme. Built-in and third-party transports register
/// the same way.
public final class TransportRegistry: Sendable {
    private let transports = Mutex<[String: any EventTransport]>([:])
    /// Where network transports may deliver (`allowed_destinations`).
    public let destinationPolicy: DestinationPolicy

    public init(destinationPolicy: DestinationPolicy = DestinationPolicy()) {
        self.destinationPolicy = destinationPolicy
    }

    /// Adds a transport. Returns `false`, changing nothing, when its scheme is already taken.
    @discardableResult
    public func register(_ transport: any EventTransport) -> Bool {
        transports.withLock { table in
            guard table[transport.scheme] == nil else { return false }
            table[transport.scheme] = transport
            return true
        }
    }

    public func transport(for scheme: String) -> (any EventTransport)? {
        transports.withLock { $0[scheme] }
    }

    /// Registered schemes, sorted.
    public var schemes: [String] { transports.withLock { $0.keys.sorted() } }

    /// Parses `scheme:address` with the transport that owns the scheme.
    public func parseSocket(_ text: String) async throws(SocketError) -> any EventSocket {
        guard !text.isEmpty else { throw SocketError("empty socket") }
        guard let colon = text.firstIndex(of: ":") else {
            throw SocketError("socket has no transport: \(text) (expected SCHEME:ADDRESS, e.g. udp:127.0.0.1:9000)")
        }
        let scheme = String(text[..<colon])
        guard let transport = transport(for: scheme) else {
            throw SocketError(
                "unknown transport '\(scheme)' in socket \(text) (known: \(schemes.joined(separator: ", ")))")
        }
        return try await transport.parseSocket(
            String(text[text.index(after: colon)...]), context: SocketParsingContext(registry: self))
    }
}
