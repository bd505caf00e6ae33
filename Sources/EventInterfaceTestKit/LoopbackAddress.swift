import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// Calls `body` with `127.0.0.1:port` as a `sockaddr` and its length, for the raw `bind`,
/// `connect` and `sendto` calls tests make on purpose (peers that misbehave, ports to probe).
public func withLoopbackAddress<T>(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    withoutActuallyEscaping(body) { body in withIPv4Address("127.0.0.1", port: port, body) }
}

/// A loopback TCP port nobody listens on now (bound, read, closed), for a server a test starts
/// that cannot be told to pick its own (moto_server, a broker).
public func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, let port = localPort(of: fd) else {
        throw ReceiverError("no free loopback port")
    }
    return port
}
