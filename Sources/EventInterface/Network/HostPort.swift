import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `HOST:PORT` as the network transports write it: an IPv4 address, `[IPv6]`, or a host name.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var isIPv6: Bool { host.contains(":") }

    /// The name a TLS peer's certificate must carry: the host when it is a name, nil for an
    /// address literal (its certificate is then checked by its chain only).
    public var nameToVerify: String? { Self.isIPv4Literal(host) || Self.isIPv6Literal(host) ? nil : host }

    /// Printed as given, IPv6 in brackets.
    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `HOST:PORT`; `socket` is the whole socket string, quoted in errors.
    public static func parse(_ text: String, scheme: String, socket: String) throws(SocketError) -> HostPort {
        let host: Substring
        let rest: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw SocketError("unterminated '[' in IPv6 address: \(socket)")
            }
            host = text[text.index(after: text.startIndex)..<close]
            rest = text[text.index(after: close)...]
            guard isIPv6Literal(String(host)) else { throw SocketError("bad IPv6 address '\(host)' in \(socket)") }
        } else {
            if let colon = text.firstIndex(of: ":") {
                host = text[..<colon]
                rest = text[colon...]
            } else {
                host = Substring(text)
                rest = ""
            }
        }
        guard !host.isEmpty else { throw SocketError("\(scheme) socket needs a host: \(socket)") }
        guard !host.contains(where: { $0.isWhitespace }) else {
            throw SocketError("whitespace in host of \(socket)")
        }
        guard rest.hasPrefix(":"), rest.count > 1 else { throw SocketError("\(scheme) socket needs a port: \(socket)") }
        let portText = rest.dropFirst()
        guard portText.allSatisfy(\.isASCII), let port = Int(portText), (1...65535).contains(port) else {
            throw SocketError("bad port '\(portText)' in \(socket) (expected 1-65535)")
        }
        return HostPort(host: String(host), port: port)
    }

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public static func isIPv6Literal(_ text: String) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, text, &address) == 1
    }

    public static func isIPv4Literal(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }
}

/// A resolved socket address, ready for `connect` or `sendto`.
public struct ResolvedAddress: Sendable, Hashable {
    public var family: Int32
    /// The raw `sockaddr_in` / `sockaddr_in6` bytes.
    public var storage: [UInt8]

    public init(family: Int32, storage: [UInt8]) {
        self.family = family
        self.storage = storage
    }

    /// The IPv4 or IPv6 address `recvfrom` or `accept` filled in, or nil for another family.
    public init?(storage source: sockaddr_storage, length: socklen_t) {
        let family = Int32(source.ss_family)
        guard family == AF_INET || family == AF_INET6 else { return nil }
        var copy = source
        let bytes = withUnsafeBytes(of: &copy) { Array($0.prefix(Int(length))) }
        self.init(family: family, storage: bytes)
    }

    /// The IP address bytes (4 or 16) and the port.
    public var ipAndPort: ([UInt8], Int)? {
        switch family {
        case AF_INET where storage.count >= 8:
            return (Array(storage[4..<8]), Int(storage[2]) << 8 | Int(storage[3]))
        case AF_INET6 where storage.count >= 24:
            return (Array(storage[8..<24]), Int(storage[2]) << 8 | Int(storage[3]))
        default: return nil
        }
    }

    /// Calls `body` with the address as a `sockaddr` pointer and its length.
    public func withSockAddr<T>(_ body: (UnsafePointer<sockaddr>?, socklen_t) -> T) -> T {
        withSocketAddress(storage, body)
    }
}

extension HostPort {
    /// Longest a host name lookup may take at subscribe time (Docs/sockets.md).
    public static let resolutionTimeout: Duration = .seconds(2)

    /// Resolves the host for datagram or stream use. Literals resolve without a lookup; names
    /// are looked up off the caller's thread and given up after `timeout`.
    public func resolve(
        socketType: Int32, socket: String, timeout: Duration = HostPort.resolutionTimeout
    ) async throws(SocketError) -> ResolvedAddress {
        let host = self.host
        let port = self.port
        if Self.isIPv4Literal(host) || Self.isIPv6Literal(host) {
            // No lookup: getaddrinfo answers a numeric host at once.
            if let address = Self.lookup(host: host, port: port, socketType: socketType) { return address }
            throw SocketError("bad address '\(host)' in \(socket)")
        }
        let found = await Resolver.lookUp(host: host, port: port, socketType: socketType, timeout: timeout)
        let outcome = found.map(Self.preferringIPv4)
        guard let outcome else { throw SocketError("cannot resolve host '\(host)' in \(socket)") }
        return outcome
    }

    private static func lookup(host: String, port: Int, socketType: Int32) -> ResolvedAddress? {
        let found = Resolver.addresses(host: host, port: port, socketType: socketType)
        return found.isEmpty ? nil : preferringIPv4(found)
    }

    /// The first IPv4 address when a name has both, as loopback receivers usually bind 127.0.0.1.
    private static func preferringIPv4(_ addresses: [ResolvedAddress]) -> ResolvedAddress {
        addresses.first { $0.family == AF_INET } ?? addresses[0]
    }

    /// Whether every address the host resolves to is a loopback one (127.0.0.0/8, ::1), decided
    /// on the addresses, not the name: `127.example.com` is not loopback, and a name that does
    /// not resolve is not either.
    public static func isLoopback(_ host: String) -> Bool {
        let found = Resolver.addresses(host: host, port: nil, socketType: Int32(SOCK_STREAM.rawValue))
        return !found.isEmpty
            && found.allSatisfy { address in
                guard let (ip, _) = address.ipAndPort else { return false }
                return ip.count == 4 ? ip[0] == 127 : ip == [UInt8](repeating: 0, count: 15) + [1]
            }
    }
}
