import CDatagramBatch
import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Largest payload udp and unix send (OpenSIPS's documented maximum, kept on purpose):
/// a larger event fails with "payload too large" instead of being truncated.
public let maximumDatagramPayload = 65_457

/// `udp:HOST:PORT`: one datagram per event, from a connected socket per subscriber.
///
/// Plain POSIX calls rather than SwiftNIO: each delivery is one non-blocking `send` made by the
/// subscriber's own delivery task, so its result (including a refusal the kernel learnt from an
/// ICMP "port unreachable" after the previous send) is known at once and drives the virtual
/// policies without a hop to an event loop. Measured on a 2-core machine before choosing (README,
/// "Design decisions"), a POSIX `send` per datagram runs at the speed of NIO's connected channel.
public struct UDPTransport: EventTransport {
    public init() {}
    public var scheme: String { "udp" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "udp:" + address
        let hostPort = try HostPort.parse(address, scheme: "udp", socket: text)
        let resolved = try await context.resolve(hostPort, socketType: Int32(SOCK_DGRAM.rawValue), socket: text)
        return UDPSocket(hostPort: hostPort, address: resolved)
    }
}

public struct UDPSocket: DeliverySocket, Hashable {
    public let hostPort: HostPort
    /// Resolved at subscribe time.
    public let address: ResolvedAddress

    public var scheme: String { "udp" }
    public var description: String { "udp:\(hostPort)" }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? UDPSocket)?.hostPort == hostPort
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        DatagramDeliverer(target: .connected(address), socket: description)
    }
}

/// `unix:/ABSOLUTE/PATH`: one datagram per event to a Unix datagram socket.
public struct UnixTransport: EventTransport {
    /// With `allowedDirs` (`modules.event_datagram.allowed_dirs`), only sockets in those
    /// directories, by the same rule as flatstore's files (``PathPolicy``).
    public let paths: PathPolicy

    public init(allowedDirs: [String]? = nil) {
        paths = PathPolicy(allowedDirs: allowedDirs)
    }

    public var scheme: String { "unix" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "unix:" + address
        guard !address.isEmpty else { throw SocketError("unix socket needs a path: \(text)") }
        guard address.hasPrefix("/") else { throw SocketError("unix socket path must be absolute: \(text)") }
        guard !address.contains(where: { $0.isWhitespace || $0 == "\0" }) else {
            throw SocketError("unix socket path contains whitespace: \(text)")
        }
        guard address.utf8.count <= maximumUnixPathLength else {
            throw SocketError("unix socket path longer than \(maximumUnixPathLength) bytes: \(text)")
        }
        if context.registry.destinationPolicy.own.unixPaths.contains(address) {
            throw SocketError("destination is one of evi's own ingress addresses (an event loop): \(text)")
        }
        if paths.allowedDirs != nil {
            let path = try paths.normalise(address, kind: "unix", socket: text)
            try paths.realDirectory(of: path, kind: "unix", socket: text)
            return UnixSocket(path: path)
        }
        return UnixSocket(path: address)
    }
}

public struct UnixSocket: DeliverySocket, Hashable {
    public let path: String

    public var scheme: String { "unix" }
    public var description: String { "unix:\(path)" }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? UnixSocket)?.path == path
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        DatagramDeliverer(target: .unix(path), socket: description)
    }
}

/// Sends JSON-RPC notifications as datagrams. Its descriptor is opened on first use and kept.
final class DatagramDeliverer: ImmediateDeliverer {
    enum Target: Sendable {
        /// A UDP peer: the socket is connected, so the kernel reports refusals on later sends.
        case connected(ResolvedAddress)
        /// A Unix path: sent with `sendto` each time, so a receiver that rebinds is found again.
        case unix(String)
    }

    private let target: Target
    private let socket: String
    private let descriptor = Mutex<Int32>(-1)
    private let unixAddress: [UInt8]

    init(target: Target, socket: String) {
        self.target = target
        self.socket = socket
        if case .unix(let path) = target {
            unixAddress = unixSocketAddress(path) ?? []  // the parser refused longer paths
        } else {
            unixAddress = []
        }
    }

    deinit {
        let fd = descriptor.withLock { $0 }
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(.jsonRPC)
    }

    /// A batch goes out with `sendmmsg`: one system call for up to 256 datagrams (measured here,
    /// that is what puts evi at or above a plain `send` loop when fanning out). The payloads are
    /// copied back to back into one buffer per call (at most 256 KiB), cheaper than pinning each.
    func deliverNow(batch events: [RaisedEvent]) -> [DeliveryOutcome] {
        guard events.count > 1 else { return events.map { send($0.payload(.jsonRPC)) } }
        let payloads = events.map { $0.payload(.jsonRPC) }
        var outcomes = [DeliveryOutcome](repeating: .delivered, count: payloads.count)
        let fd: Int32
        switch openDescriptor() {
        case .success(let opened): fd = opened
        case .failure(let failure): return Array(repeating: .failed(failure), count: payloads.count)
        }
        var sendable: [Int] = []
        sendable.reserveCapacity(payloads.count)
        for index in payloads.indices {
            if payloads[index].count > maximumDatagramPayload {
                outcomes[index] = .failed(.payloadTooLarge)
            } else {
                sendable.append(index)
            }
        }
        var packed: [UInt8] = []
        var lengths: [Int] = []
        lengths.reserveCapacity(min(sendable.count, Self.messagesPerCall))
        var next = 0
        while next < sendable.count {
            // One group: packed once, sent with as few calls as the kernel takes.
            packed.removeAll(keepingCapacity: true)
            lengths.removeAll(keepingCapacity: true)
            var end = next
            while end < sendable.count, end - next < Self.messagesPerCall {
                let payload = payloads[sendable[end]]
                if !packed.isEmpty && packed.count + payload.count > Self.bytesPerCall { break }
                packed.append(contentsOf: payload)
                lengths.append(payload.count)
                end += 1
            }
            var position = 0
            var offset = 0
            while position < lengths.count {
                var error: Int32 = 0
                let sent = sendPacked(
                    fd: fd, packed: packed, offset: offset, lengths: lengths, from: position, error: &error)
                if sent > 0 {
                    for _ in 0..<Int(sent) {
                        offset += lengths[position]
                        position += 1
                    }
                    continue
                }
                // The first datagram failed. A dead receiver (a unix path nobody binds) fails
                // every one at once, so go on one by one until one goes through rather than
                // setting up a whole batch per failure.
                outcomes[sendable[next + position]] = .failed(Self.failure(error, socket: socket))
                offset += lengths[position]
                position += 1
                while position < lengths.count {
                    let outcome = send(payloads[sendable[next + position]])
                    outcomes[sendable[next + position]] = outcome
                    offset += lengths[position]
                    position += 1
                    if outcome == .delivered { break }
                }
            }
            next = end
        }
        return outcomes
    }

    private static let messagesPerCall = 256
    private static let bytesPerCall = 256 * 1024

    private func sendPacked(
        fd: Int32, packed: [UInt8], offset: Int, lengths: [Int], from first: Int, error: inout Int32
    ) -> Int32 {
        packed.withUnsafeBufferPointer { data in
            lengths.withUnsafeBufferPointer { lengthBuffer in
                let start = data.baseAddress.map { $0 + offset }
                let sizes = lengthBuffer.baseAddress.map { $0 + first }
                let count = UInt32(lengths.count - first)
                switch target {
                case .connected:
                    return evi_send_datagrams(fd, start, sizes, count, nil, 0, &error)
                case .unix:
                    return withSocketAddress(unixAddress) { address, length in
                        evi_send_datagrams(fd, start, sizes, count, address, length, &error)
                    }
                }
            }
        }
    }

    func close() async {
        let fd = descriptor.withLock { fd -> Int32 in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    private func openDescriptor() -> Result<Int32, DeliveryFailure> {
        descriptor.withLock { fd -> Result<Int32, DeliveryFailure> in
            if fd >= 0 { return .success(fd) }
            let flags = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            switch target {
            case .connected(let address):
                let created = Glibc.socket(address.family, flags, 0)
                guard created >= 0 else { return .failure(Self.failure(errno, socket: socket)) }
                let status = address.withSockAddr { Glibc.connect(created, $0, $1) }
                guard status == 0 else {
                    let code = errno
                    _ = Glibc.close(created)
                    return .failure(Self.failure(code, socket: socket))
                }
                fd = created
            case .unix:
                let created = Glibc.socket(AF_UNIX, flags, 0)
                guard created >= 0 else { return .failure(Self.failure(errno, socket: socket)) }
                fd = created
            }
            return .success(fd)
        }
    }

    private func send(_ payload: [UInt8]) -> DeliveryOutcome {
        guard payload.count <= maximumDatagramPayload else { return .failed(.payloadTooLarge) }
        let fd: Int32
        switch openDescriptor() {
        case .success(let opened): fd = opened
        case .failure(let failure): return .failed(failure)
        }
        let sent: Int = payload.withUnsafeBytes { bytes in
            switch target {
            case .connected:
                return Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            case .unix:
                return withSocketAddress(unixAddress) { address, length in
                    Glibc.sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), address, length)
                }
            }
        }
        if sent == payload.count { return .delivered }
        if sent >= 0 { return .failed(DeliveryFailure(.subscriberFailed, "short datagram write")) }
        return .failed(Self.failure(errno, socket: socket))
    }

    static func failure(_ code: Int32, socket: String) -> DeliveryFailure {
        switch code {
        case EMSGSIZE: return .payloadTooLarge
        case ECONNREFUSED: return DeliveryFailure(.subscriberFailed, "connection refused")
        case ENOENT: return DeliveryFailure(.subscriberFailed, "no such socket file")
        case EAGAIN, EWOULDBLOCK, ENOBUFS: return DeliveryFailure(.subscriberFailed, "receiver buffer full")
        default:
            let text = strerror(code).map { String(cString: $0) } ?? "error \(code)"
            return DeliveryFailure(.subscriberFailed, text.lowercased())
        }
    }
}

/// `sendmmsg(2)` for callers outside this module (`evi bench`'s floor): up to `count` datagrams
/// packed back to back in `packed`, on a connected socket. Returns how many were sent, or -1
/// with `error` set.
public enum DatagramBatch {
    public static func send(fd: Int32, packed: [UInt8], lengths: [Int], count: Int, error: inout Int32) -> Int {
        Int(evi_send_datagrams(fd, packed, lengths, UInt32(count), nil, 0, &error))
    }
}
