#if canImport(Glibc)
    import Glibc
#endif

/// The `sockaddr` plumbing the POSIX calls need (`bind`, `connect`, `sendto`), written once:
/// transports, listeners, the bench and the tests call these instead of filling structures.

/// Calls `body` with the numeric IPv4 address `host` and `port` as a `sockaddr` and its length.
public func withIPv4Address<T>(_ host: String, port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
    address.sin_addr.s_addr = inet_addr(host)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// The longest Unix socket path (`sun_path` less its terminating zero).
public let maximumUnixPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

/// The bytes of a `sockaddr_un` for `path`, or nil when the path is too long for one.
public func unixSocketAddress(_ path: String) -> [UInt8]? {
    guard path.utf8.count <= maximumUnixPathLength else { return nil }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
    }
    return withUnsafeBytes(of: &address) { Array($0) }
}

/// Calls `body` with the bytes of a `sockaddr_un` (``unixSocketAddress(_:)``) as a `sockaddr`
/// (what `bind`, `connect` and `sendto` take).
public func withSocketAddress<T>(_ bytes: [UInt8], _ body: (UnsafePointer<sockaddr>?, socklen_t) -> T) -> T {
    bytes.withUnsafeBytes { raw in
        body(raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
    }
}

/// The port a bound IPv4 or IPv6 socket got (`getsockname`), e.g. after binding port 0.
public func localPort(of descriptor: Int32) -> Int? {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let found = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    guard found == 0 else { return nil }
    switch Int32(storage.ss_family) {
    case AF_INET:
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    case AF_INET6:
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
        }
    default: return nil
    }
}
