#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 network in CIDR notation (`127.0.0.0/8`, `::1/128`).
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let family: Int32
    /// Network address bytes (4 or 16).
    public let address: [UInt8]
    public let prefixLength: Int

    public var description: String { text }
    private let text: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        let host = String(parts[0])
        var bytes: [UInt8]
        if host.contains(":") {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, host, &raw) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &raw) { Array($0) }
            family = AF_INET6
        } else {
            var raw = in_addr()
            guard inet_pton(AF_INET, host, &raw) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &raw) { Array($0) }
            family = AF_INET
        }
        let maximum = bytes.count * 8
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length) else { return nil }
            prefixLength = length
        } else {
            prefixLength = maximum
        }
        address = bytes
        self.text = text
    }

    /// Whether `bytes` (an address of the same family) lies inside this network.
    public func contains(family other: Int32, bytes: [UInt8]) -> Bool {
        guard other == family, bytes.count == address.count else { return false }
        var remaining = prefixLength
        for index in 0..<address.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if bytes[index] & mask != address[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

/// The optional `allowed_destinations` list: network transports refuse, at subscribe time, a
/// destination that resolves outside it.
public struct DestinationPolicy: Sendable, Hashable {
    public var allowed: [CIDR]?
    /// Where evi itself takes events in (its ingresses, its MI datagram port): never a
    /// destination, or an event would be delivered back to evi and raised again, forever.
    public var own = OwnAddresses()

    public init(allowed: [CIDR]? = nil, own: OwnAddresses = OwnAddresses()) {
        self.allowed = allowed
        self.own = own
    }

    /// evi's own receiving addresses: exact IP and port, ports bound on every address (then any
    /// loopback or unspecified destination with that port is evi too), and Unix paths.
    public struct OwnAddresses: Sendable, Hashable {
        public var exact: [ResolvedAddress] = []
        public var wildcardPorts: [Int] = []
        public var unixPaths: [String] = []
        public init() {}

        /// Whether `address` reaches one of them.
        public func contains(_ address: ResolvedAddress) -> Bool {
            guard let (ip, port) = address.ipAndPort else { return false }
            if exact.contains(where: { $0.ipAndPort.map { $0.0 == ip && $0.1 == port } ?? false }) { return true }
            guard wildcardPorts.contains(port) else { return false }
            let loopback = ip.count == 4 ? ip[0] == 127 : ip == [UInt8](repeating: 0, count: 15) + [1]
            return loopback || ip.allSatisfy { $0 == 0 }
        }
    }

    /// Whether `address` may be a destination.
    public func allows(_ address: ResolvedAddress) -> Bool {
        guard let allowed else { return true }
        let bytes: [UInt8]
        switch address.family {
        case AF_INET: bytes = Array(address.storage[4..<8])  // sockaddr_in.sin_addr
        case AF_INET6: bytes = Array(address.storage[8..<24])  // sockaddr_in6.sin6_addr
        default: return false
        }
        return allowed.contains { $0.contains(family: address.family, bytes: bytes) }
    }
}

extension SocketParsingContext {
    /// Resolves `hostPort` (bounded, as ``HostPort/resolve(socketType:socket:timeout:)``) and
    /// applies the destination policy.
    public func resolve(_ hostPort: HostPort, socketType: Int32, socket: String) async throws(SocketError)
        -> ResolvedAddress
    {
        let address = try await hostPort.resolve(socketType: socketType, socket: socket)
        let policy = registry.destinationPolicy
        guard policy.allows(address) else {
            let list = (policy.allowed ?? []).map(\.description).joined(separator: ", ")
            throw SocketError("destination \(hostPort.host) is outside allowed_destinations (\(list)): \(socket)")
        }
        guard !policy.own.contains(address) else {
            throw SocketError("destination is one of evi's own ingress or MI addresses (an event loop): \(socket)")
        }
        return address
    }
}
