import EventDatagram
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
/// every datagram it gets.
public final class DatagramReceiver: Sendable {
    private final class Inbox: Sendable {
        let datagrams = Mutex<[[UInt8]]>([])
    }
    private let listener: DatagramListener
    private let inbox = Inbox()

    /// The socket string to subscribe (`udp:127.0.0.1:PORT` or `unix:/path`).
    public var socket: String { listener.socket }
    public var port: Int { listener.port }

    /// A UDP receiver on 127.0.0.1; port 0 picks a free one.
    public convenience init(udpPort: Int = 0) throws {
        try self.init(socket: "udp:127.0.0.1:\(udpPort)")
    }

    /// A Unix datagram receiver bound at `path` (an existing file there is replaced).
    public convenience init(unixPath path: String) throws {
        try self.init(socket: "unix:" + path)
    }

    private init(socket: String) throws {
        let inbox = self.inbox
        do {
            listener = try DatagramListener(socket: socket) { datagram in inbox.datagrams.withLock { $0.append(datagram) } }
        } catch {
            throw ReceiverError(error.message)
        }
    }

    /// Everything received so far, in arrival order.
    public var datagrams: [[UInt8]] { inbox.datagrams.withLock { $0 } }
    /// Everything received so far, as text.
    public var messages: [String] { datagrams.map { String(decoding: $0, as: UTF8.self) } }
    public var count: Int { inbox.datagrams.withLock { $0.count } }

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
        await listener.close()
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
