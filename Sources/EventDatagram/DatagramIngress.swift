import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Takes events in on `udp:HOST:PORT` or `unix:/PATH`: each datagram one JSON-RPC notification,
/// as OpenSIPS' event_datagram sends them. Read on a thread of its own; a datagram larger than
/// the buffer is refused as truncated (`MSG_TRUNC` tells its real size), one from a source outside
/// `allowed_sources` is refused before it is read further.
public final class DatagramIngress: EventIngress {
    /// Where it listens (`udp:127.0.0.1:PORT` with the port it got when 0 was asked).
    public let socket: String
    public let port: Int
    public var connections: Int { 0 }
    private let descriptor: Int32
    private let stopped = Atomic<Bool>(false)
    private let finished = CompletionSignal()

    public init(settings: IngressSettings, sink: IngressSink) throws(SocketError) {
        let text = settings.socket
        var port = 0
        var bound = text
        let fd: Int32
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { throw SocketError("unix ingress path must be absolute: \(text)") }
            guard let address = unixSocketAddress(path) else {
                throw SocketError("unix socket path longer than \(maximumUnixPathLength) bytes: \(text)")
            }
            fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            unlink(path)
            guard fd >= 0, withSocketAddress(address, { bind(fd, $0, $1) }) == 0 else {
                let reason = String(cString: strerror(errno))
                if fd >= 0 { Glibc.close(fd) }
                throw SocketError("cannot listen on \(text): \(reason)")
            }
        } else if text.hasPrefix("udp:") {
            // HOST:PORT, where port 0 asks the system for a free one.
            let address = text.dropFirst(4)
            guard let colon = address.lastIndex(of: ":"), let wanted = Int(address[address.index(after: colon)...]),
                (0...65_535).contains(wanted)
            else { throw SocketError("udp ingress needs HOST:PORT (port 0: any free one): \(text)") }
            var host = String(address[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let hostPort = HostPort(host: host, port: wanted)
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
            hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
            var list: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(hostPort.host, String(hostPort.port), &hints, &list) == 0, let entry = list else {
                throw SocketError("cannot resolve \(hostPort.host): \(text)")
            }
            defer { freeaddrinfo(list) }
            fd = Glibc.socket(entry.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0, bind(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0 else {
                let reason = String(cString: strerror(errno))
                if fd >= 0 { Glibc.close(fd) }
                throw SocketError("cannot listen on \(text): \(reason)")
            }
            port = localPort(of: fd) ?? hostPort.port
            bound = "udp:" + HostPort(host: hostPort.host, port: port).description
        } else {
            throw SocketError("a datagram ingress is udp:HOST:PORT or unix:/PATH, not \(text)")
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var size: Int32 = 16 << 20
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        descriptor = fd
        self.port = port
        socket = bound
        let allowed = settings.allowedSources.map { DestinationPolicy(allowed: $0) }
        detachThread { [self] in readLoop(sink: sink, allowed: allowed) }
    }

    private func readLoop(sink: IngressSink, allowed: DestinationPolicy?) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var source = sockaddr_storage()
        while !stopped.load(ordering: .relaxed) {
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let count = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &source) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(descriptor, raw.baseAddress, raw.count, Int32(MSG_TRUNC), $0, &length)
                    }
                }
            }
            guard count >= 0 else { continue }  // the receive timeout: look at `stopped` again
            if let allowed, let address = ResolvedAddress(storage: source, length: length), !allowed.allows(address) {
                sink.reject(.sourceNotAllowed)
                continue
            }
            guard count <= buffer.count else {
                sink.reject(.truncated)
                continue
            }
            sink.accept(buffer[0..<count])
        }
        Glibc.close(descriptor)
        finished.signal()
    }

    public func close() async {
        stopped.store(true, ordering: .relaxed)
        _ = await finished.wait(timeout: .seconds(2))
    }
}
