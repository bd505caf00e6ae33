#if canImport(Glibc)
    import Glibc
#endif

/// Which `Host` a request to the MI HTTP listener may name: the listener's own address (every
/// local address when it is bound to `0.0.0.0` or `::`, and always the one the connection came in
/// on), `localhost`, `[::1]`, and the names in `mi.allowed_hosts`, with or without a port, in any
/// case.
///
/// Why: a page on another site can make the operator's browser send requests to a name it
/// controls whose address it then points at 127.0.0.1 (DNS rebinding). The browser believes it
/// talks to the page's own site, so `Origin` matches `Host` and no CORS rule applies; only the
/// `Host` it sends — the attacker's name — gives it away.
public struct MIHostPolicy: Sendable {
    private let allowed: Set<String>

    /// - Parameters:
    ///   - boundHost: the address the listener is bound to.
    ///   - allowedHosts: `mi.allowed_hosts`.
    ///   - localAddresses: this machine's addresses, for a listener bound to every one.
    public init(boundHost: String, allowedHosts: [String], localAddresses: () -> [String] = MIHostPolicy.localAddresses)
    {
        var allowed: Set<String> = ["localhost", "::1"]
        let bound = Self.name(boundHost)
        if bound == "0.0.0.0" || bound == "::" {
            allowed.formUnion(localAddresses().map(Self.name))
            allowed.insert("127.0.0.1")
        } else {
            allowed.insert(bound)
        }
        allowed.formUnion(allowedHosts.map(Self.name))
        self.allowed = allowed
    }

    /// Whether a request carrying `host` (its `Host` header, nil when it has none) on a
    /// connection that arrived at local address `local` is answered.
    public func allows(_ host: String?, arrivedAt local: String? = nil) -> Bool {
        guard let host, !host.isEmpty else { return false }
        let name = Self.name(Self.withoutPort(host))
        return allowed.contains(name) || (local.map { Self.name($0) == name } ?? false)
    }

    /// `[::1]:8888` → `[::1]`, `127.0.0.1:8888` → `127.0.0.1`; a bare IPv6 address stays whole.
    static func withoutPort(_ host: String) -> String {
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") { return String(host[...close]) }
        let colons = host.count { $0 == ":" }
        guard colons == 1, let colon = host.firstIndex(of: ":") else { return host }
        return String(host[..<colon])
    }

    /// Lower case, without brackets or a trailing dot: the form names are compared in.
    static func name(_ host: String) -> String {
        var name = host.lowercased()
        if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }

    /// Every IPv4 and IPv6 address of this machine's interfaces, as literals.
    public static func localAddresses() -> [String] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        var entry: UnsafeMutablePointer<ifaddrs>? = first
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard let address = current.pointee.ifa_addr else { continue }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                var raw = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                guard inet_ntop(AF_INET, &raw, &text, socklen_t(text.count)) != nil else { continue }
            case AF_INET6:
                var raw = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                guard inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count)) != nil else { continue }
            default: continue
            }
            addresses.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return addresses
    }
}
