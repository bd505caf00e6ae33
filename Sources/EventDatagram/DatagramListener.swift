import CDatagramBatch
import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The receiving side of udp and unix: binds a datagram socket and hands every datagram to a
/// callback, from a thread of its own. Used by `evi listen`, `evi demo` and the tests.
public final class DatagramListener: Sendable {
    /// The socket string subscribers use to reach it (`udp:127.0.0.1:PORT`, `unix:/path`).
    public let socket: String
    /// The bound UDP port (0 for unix).
    public let port: Int
    private let descriptor: Int32
    private let stopped = Atomic<Bool>(false)
    private let finished = CompletionSignal()

    /// Binds `udp:HOST:PORT` (port 0 picks a free one) or `unix:/PATH` (an existing file there is
    /// replaced) and starts calling `onDatagram`.
    public convenience init(socket text: String, onDatagram: @escaping @Sendable ([UInt8]) -> Void) throws(SocketError)
    {
        let bound = try Self.bind(text)
        self.init(descriptor: bound.descriptor, socket: bound.socket, port: bound.port, onDatagram: onDatagram)
    }

    /// A datagram socket bound at `udp:HOST:PORT` (port 0: any free one) or `unix:/PATH` (an
    /// existing file there is replaced): its descriptor, its socket string with the port it got,
    /// and that port (0 for unix). The listener and the datagram ingress both bind with this.
    static func bind(_ text: String) throws(SocketError) -> (descriptor: Int32, socket: String, port: Int) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { throw SocketError("unix socket path must be absolute: \(text)") }
            guard let address = unixSocketAddress(path) else {
                throw SocketError("unix socket path longer than \(maximumUnixPathLength) bytes: \(text)")
            }
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SocketError("cannot create a socket: \(Self.errorText())") }
            unlink(path)
            guard withSocketAddress(address, { Glibc.bind(fd, $0, $1) }) == 0 else {
                let reason = Self.errorText()
                Glibc.close(fd)
                throw SocketError("cannot bind \(text): \(reason)")
            }
            return (fd, text, 0)
        }
        guard text.hasPrefix("udp:") else {
            throw SocketError("can only listen on udp:HOST:PORT or unix:/PATH, not \(text)")
        }
        let hostPort: HostPort
        if text.hasSuffix(":0") {
            hostPort = HostPort(host: String(text.dropFirst(4).dropLast(2)).trimmingBrackets(), port: 0)
        } else {
            hostPort = try HostPort.parse(String(text.dropFirst(4)), scheme: "udp", socket: text)
        }
        guard
            let address = Resolver.addresses(
                host: hostPort.host, port: hostPort.port, socketType: Int32(SOCK_DGRAM.rawValue), passive: true
            ).first
        else {
            throw SocketError("cannot resolve host '\(hostPort.host)' in \(text)")
        }
        let fd = Glibc.socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("cannot create a socket: \(Self.errorText())") }
        guard address.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
            let reason = Self.errorText()
            Glibc.close(fd)
            throw SocketError("cannot bind \(text): \(reason)")
        }
        let port = localPort(of: fd) ?? hostPort.port
        return (fd, "udp:" + HostPort(host: hostPort.host, port: port).description, port)
    }

    private init(descriptor: Int32, socket: String, port: Int, onDatagram: @escaping @Sendable ([UInt8]) -> Void) {
        self.descriptor = descriptor
        self.socket = socket
        self.port = port
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // A deep buffer, so that a reader kept off the cores for a while loses nothing:
        // SO_RCVBUFFORCE passes net.core.rmem_max where allowed (root), SO_RCVBUF otherwise.
        var size: Int32 = 64 << 20
        if setsockopt(descriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        detachThread { [self] in readLoop(onDatagram) }
    }

    private func readLoop(_ onDatagram: @Sendable ([UInt8]) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        while !stopped.load(ordering: .relaxed) {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count >= 0 { onDatagram(Array(buffer[0..<count])) }
        }
        Glibc.close(descriptor)
        finished.signal()
    }

    /// Stops reading and closes the socket (a unix path is left behind with nobody bound).
    public func close() async {
        stopped.store(true, ordering: .relaxed)
        _ = await finished.wait(timeout: .seconds(2))
    }

    private static func errorText() -> String {
        strerror(errno).map { String(cString: $0) } ?? "error \(errno)"
    }
}

extension String {
    fileprivate func trimmingBrackets() -> String {
        hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self
    }
}

/// Receives as many datagrams as are waiting, up to `lengths.count` (at most 256), with one
/// `recvmmsg`: the i-th into `buffer[i * slot ..< (i + 1) * slot]`, its length into `lengths[i]`.
/// Waits for the first as the socket's receive timeout allows. Returns how many arrived (0 when
/// none did). For receivers that must keep up with evi on the same cores (`evi bench`).
public func receiveDatagrams(descriptor: Int32, into buffer: inout [UInt8], slot: Int, lengths: inout [Int]) -> Int {
    let capacity = min(lengths.count, buffer.count / max(1, slot))
    let received = buffer.withUnsafeMutableBufferPointer { data in
        lengths.withUnsafeMutableBufferPointer { sizes in
            evi_receive_datagrams(descriptor, data.baseAddress, slot, sizes.baseAddress, UInt32(capacity))
        }
    }
    return max(0, Int(received))
}
