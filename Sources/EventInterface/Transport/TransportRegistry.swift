import Synchronization

/// The transports an interface knows, by scheme. Built-in and third-party transports register
/// the same way.
public final class TransportRegistry: Sendable {
    private let transports = Mutex<[String: any EventTransport]>([:])
    private let policy: Mutex<DestinationPolicy>

    public init(destinationPolicy: DestinationPolicy = DestinationPolicy()) {
        policy = Mutex(destinationPolicy)
    }

    /// Where network transports may deliver (`allowed_destinations`, never evi's own addresses).
    public var destinationPolicy: DestinationPolicy { policy.withLock { $0 } }

    /// Adds evi's own receiving addresses once its ingresses are bound (their ports may have been
    /// chosen by the system), before anything is subscribed over them.
    public func addOwnAddresses(_ own: DestinationPolicy.OwnAddresses) {
        policy.withLock { policy in
            policy.own.exact += own.exact
            policy.own.wildcardPorts += own.wildcardPorts
            policy.own.unixPaths += own.unixPaths
        }
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
