import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// A loopback TCP port that completes connections (the kernel's backlog) and never reads or
/// answers: the peer that says nothing, for the bounds on waiting for one.
public final class SilentListener: Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0,
            let port = localPort(of: fd)
        else {
            Glibc.close(fd)
            throw ReceiverError("cannot listen on loopback")
        }
        self.fd = fd
        self.port = port
    }

    public func close() { Glibc.close(fd) }
}
