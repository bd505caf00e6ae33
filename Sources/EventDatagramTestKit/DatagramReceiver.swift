import EventDatagram
import EventInterface
import EventInterfaceTestKit
import Synchronization

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
            listener = try DatagramListener(socket: socket) { datagram in
                inbox.datagrams.withLock { $0.append(datagram) }
            }
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
