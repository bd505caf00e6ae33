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
