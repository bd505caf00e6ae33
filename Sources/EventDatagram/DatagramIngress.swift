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
        let bound = try DatagramListener.bind(settings.socket)
        let fd = bound.descriptor
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var size: Int32 = 16 << 20
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        descriptor = fd
        port = bound.port
        socket = bound.socket
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
