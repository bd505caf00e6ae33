import EventInterface
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A real TCP JSON-RPC peer on 127.0.0.1 for testing the tcp transport, in one of the modes the
/// reference recordings used.
public final class JSONRPCTestServer: Sendable {
    public enum Mode: Sendable {
        /// Answers every request (a message with an id) with `"OK"`.
        case replyOK
        /// Answers every request with an error.
        case replyError
        /// Reads everything, answers nothing.
        case neverReply
        /// Reads the first message, then closes the connection.
        case closeAfterFirst
        /// Accepts, never reads.
        case neverRead
    }

    public let port: Int
    public let mode: Mode
    private let descriptor: Int32
    private let received = Mutex<[String]>([])
    private let connections = Mutex<[Int32]>([])
    private let stopped = Atomic<Bool>(false)

    /// Listens on 127.0.0.1:`port` (0: a free port).
    public init(mode: Mode, port: Int = 0) throws {
        self.mode = mode
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withIPv4Address("127.0.0.1", port: port) { bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw ReceiverError("tcp listen on \(port): errno \(errno)")
        }
        self.port = localPort(of: fd) ?? port
        descriptor = fd
        detachThread { [self] in acceptLoop() }
    }

    /// `tcp:127.0.0.1:PORT`.
    public var socket: String { "tcp:127.0.0.1:\(port)" }

    /// Every message received, in order.
    public var messages: [String] { received.withLock { $0 } }
    public var count: Int { received.withLock { $0.count } }

    @discardableResult
    public func waitFor(count: Int, timeout: Duration = .seconds(5)) async -> [String] {
        let deadline = ContinuousClock.now + timeout
        while self.count < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        return messages
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let connection = accept(descriptor, nil, nil)
            guard connection >= 0 else { return }
            connections.withLock { $0.append(connection) }
            if mode == .neverRead { continue }
            detachThread { [self] in serve(connection) }
        }
    }

    private func serve(_ connection: Int32) {
        var splitter = JSONStreamSplitter()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !stopped.load(ordering: .relaxed) {
            let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            for message in splitter.feed(buffer[0..<count]) {
                received.withLock { $0.append(String(decoding: message, as: UTF8.self)) }
                if mode == .closeAfterFirst {
                    shutdown(connection, Int32(SHUT_RDWR))
                    return
                }
                guard case .object(let fields)? = try? EventValue(jsonBytes: message),
                    let id = fields.first(where: { $0.name == "id" })?.value
                else { continue }
                var reply = JSONWriter()
                switch mode {
                case .replyOK:
                    reply.append(raw: "{\"jsonrpc\":\"2.0\",\"result\":\"OK\",\"id\":")
                case .replyError:
                    reply.append(
                        raw: "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":500,\"message\":\"Server error\"},\"id\":")
                default: continue
                }
                reply.append(id)
                reply.append(raw: "}")
                _ = reply.bytes.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
    }

    /// Stops listening and drops every connection (a subscriber that died).
    public func close() {
        stopped.store(true, ordering: .relaxed)
        shutdown(descriptor, Int32(SHUT_RDWR))
        Glibc.close(descriptor)
        for connection in connections.withLock({ $0 }) {
            shutdown(connection, Int32(SHUT_RDWR))
            Glibc.close(connection)
        }
    }
}
