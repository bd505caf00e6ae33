import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// Calls `body` with `127.0.0.1:port` as a `sockaddr` and its length, for the raw `bind`,
/// `connect` and `sendto` calls tests make on purpose (peers that misbehave, ports to probe).
public func withLoopbackAddress<T>(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    withoutActuallyEscaping(body) { body in withIPv4Address("127.0.0.1", port: port, body) }
}
