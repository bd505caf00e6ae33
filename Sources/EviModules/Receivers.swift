import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `evi listen` and `evi demo` receive with: a bound socket that hands every message to a
/// callback until closed.
public protocol MessageReceiver: Sendable {
    /// The socket string a subscription reaches it by, with the port it got.
    var socket: String { get }
    func close() async
}

/// A TCP listener for `evi listen tcp:…`: every connection's stream is split into JSON messages;
/// requests carrying an `id` (reliable mode) get `{"jsonrpc":"2.0","result":"OK","id":…}`.
public final class TCPJSONListener: MessageReceiver {
    public let socket: String
    private let descriptor: Int32
    private let stopped = Atomic<Bool>(false)

    public init(socket text: String, onMessage: @escaping @Sendable ([UInt8]) -> Void) throws(SocketError) {
        let address = String(text.dropFirst(4))
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw SocketError("expected tcp:HOST:PORT, got \(text)")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        guard
            let address = Resolver.addresses(
                host: host, port: port, socketType: Int32(SOCK_STREAM.rawValue), passive: true
            ).first
        else {
            throw SocketError("cannot resolve \(host)")
        }
        let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard fd >= 0, address.withSockAddr({ bind(fd, $0, $1) }) == 0, listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            if fd >= 0 { Glibc.close(fd) }
            throw SocketError("cannot listen on \(text): \(reason)")
        }
        let boundPort = port == 0 ? (localPort(of: fd) ?? 0) : port
        descriptor = fd
        socket = "tcp:" + HostPort(host: host, port: boundPort).description
        detachThread { [self, fd] in
            while !stopped.load(ordering: .relaxed) {
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { continue }
                detachThread { Self.serve(connection, onMessage: onMessage) }
            }
        }
    }

    private static func serve(_ connection: Int32, onMessage: @Sendable ([UInt8]) -> Void) {
        defer { Glibc.close(connection) }
        var splitter = JSONStreamSplitter()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            for message in splitter.feed(buffer[0..<count]) {
                onMessage(message)
                if case .object(let fields)? = try? EventValue(jsonBytes: message),
                    let id = fields.first(where: { $0.name == "id" })?.value
                {
                    var reply = JSONWriter()
                    reply.append(raw: "{\"jsonrpc\":\"2.0\",\"result\":\"OK\",\"id\":")
                    reply.append(id)
                    reply.append(raw: "}")
                    _ = reply.bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
    }

    public func close() async {
        stopped.store(true, ordering: .relaxed)
        shutdown(descriptor, Int32(SHUT_RDWR))
        Glibc.close(descriptor)
    }
}
