import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A clock that moves only when told, for testing expiry and member health without sleeping.
public final class ManualClock: EventClock {
    private let current: Mutex<Double>

    public init(_ start: Double = 1_000) { current = Mutex(start) }

    public func now() -> Double { current.withLock { $0 } }

    public func advance(by seconds: Double) { current.withLock { $0 += seconds } }
}

/// A fresh directory under /tmp; `remove()` deletes it and the files directly inside it.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "evi-test") {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let base = buffer.baseAddress, let result = mkdtemp(base) else { return nil }
            return String(cString: result)
        }
        if let created {
            path = created
        } else {
            path = "/tmp/\(prefix)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            mkdir(path, 0o700)
        }
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(directory)
        }
        rmdir(path)
    }
}

/// A real datagram receiver on loopback (UDP on 127.0.0.1 or a Unix datagram path) that records
/// every datagram it gets, read by a thread of its own.
public final class DatagramReceiver: Sendable {
    /// The socket string to subscribe (`udp:127.0.0.1:PORT` or `unix:/path`).
    public let socket: String
    public let port: Int
    private let descriptor: Int32
    private let received = Mutex<[[UInt8]]>([])
    private let stopped = Atomic<Bool>(false)
    private let finished = CompletionSignal()

    /// A UDP receiver on 127.0.0.1; port 0 picks a free one.
    public convenience init(udpPort: Int = 0) throws {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ReceiverError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(udpPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw ReceiverError("bind udp \(udpPort): errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        self.init(descriptor: fd, socket: "udp:127.0.0.1:\(port)", port: port)
    }

    /// A Unix datagram receiver bound at `path` (an existing file there is replaced).
    public convenience init(unixPath path: String) throws {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ReceiverError("socket: errno \(errno)") }
        unlink(path)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw ReceiverError("bind \(path): errno \(errno)")
        }
        self.init(descriptor: fd, socket: "unix:\(path)", port: 0)
    }

    private init(descriptor: Int32, socket: String, port: Int) {
        self.descriptor = descriptor
        self.socket = socket
        self.port = port
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var size: Int32 = 4 << 20
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        detachThread { [self] in readLoop() }
    }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        while !stopped.load(ordering: .relaxed) {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count >= 0 {
                let datagram = Array(buffer[0..<count])
                received.withLock { $0.append(datagram) }
            }
        }
        Glibc.close(descriptor)
        finished.signal()
    }

    /// Everything received so far, in arrival order.
    public var datagrams: [[UInt8]] { received.withLock { $0 } }
    /// Everything received so far, as text.
    public var messages: [String] { datagrams.map { String(decoding: $0, as: UTF8.self) } }
    public var count: Int { received.withLock { $0.count } }

    /// Waits until at least `count` datagrams arrived or `timeout` passed; returns what arrived.
    @discardableResult
    public func waitFor(count: Int, timeout: Duration = .seconds(5)) async -> [String] {
        let deadline = ContinuousClock.now + timeout
        while self.count < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return messages
    }

    /// Stops reading and closes the socket (a Unix path is left behind with nobody bound).
    public func close() async {
        stopped.store(true, ordering: .relaxed)
        _ = await finished.wait(timeout: .seconds(2))
    }
}

public struct ReceiverError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return await condition()
}
