import EventDatagram
import Foundation
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
    public init(_ description: String) { self.description = description }
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

/// A minimal HTTP/1.1 client over a plain socket, for asserting exact statuses and headers.
public enum RawHTTP {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    /// Sends one request with `Connection: close` and reads the whole reply.
    public static func request(
        port: Int, method: String, path: String, body: [UInt8] = [], headers: [(String, String)] = [],
        host: String = "127.0.0.1"
    ) throws -> Response {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ReceiverError("socket: errno \(errno)") }
        defer { Glibc.close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw ReceiverError("connect \(port): errno \(errno)") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n"
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        let request = Array(head.utf8) + body
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { break }  // the server may answer (413) and close before reading it all
            sent += count
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        return try parse(response)
    }

    static func parse(_ response: [UInt8]) throws -> Response {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let split = response.firstRange(of: separator) else {
            throw ReceiverError("no HTTP head in \(String(decoding: response, as: UTF8.self))")
        }
        let lines = String(decoding: response[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let status = lines.first.flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? 0
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Response(status: status, headers: headers, body: Array(response[split.upperBound...]))
    }
}

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
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw ReceiverError("tcp listen on \(port): errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: address.sin_port))
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
                    reply.append(raw: "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":500,\"message\":\"Server error\"},\"id\":")
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

/// A child process started with a clean signal mask and default signal actions.
///
/// Foundation's `Process` passes on the test runner's blocked signals, so a child started with
/// it never sees SIGTERM; `posix_spawn` with an empty mask starts it as a shell would. Output
/// goes to files, read at any time.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let outputPath: String
    public let errorPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    public init(executable: String, arguments: [String], directory: String, outputPath: String, errorPath: String) throws {
        self.outputPath = outputPath
        self.errorPath = errorPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        // The shell changes to `directory`, then becomes the program.
        let shellArguments = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory, executable] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = shellArguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, "/bin/sh", &actions, &attributes, argv, environ)
        guard result == 0 else { throw ReceiverError("cannot start \(executable): error \(result)") }
        pid = child
    }

    /// The exit status once it has ended (a signal death counts as 128 + signal).
    public var status: Int32? {
        lock.withLock {
            if let exitStatus { return exitStatus }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            let signal = raw & 0x7F
            exitStatus = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
            return exitStatus
        }
    }

    public var isRunning: Bool { status == nil }

    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return status
    }

    public func signal(_ number: Int32) { kill(pid, number) }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    public var errors: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
}

