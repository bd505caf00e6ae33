import ArgumentParser
import EventDatagram
import EventInterface
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive events on a udp, unix or tcp socket and print each as one JSON line.",
        discussion: """
            With --subscribe the listener subscribes itself through the MI, refreshes the subscription \
            before it expires, and unsubscribes when stopped (SIGINT or SIGTERM). A tcp listener answers \
            reliable-mode requests (messages with an id) with "OK".
            """)

    @Argument(help: "udp:HOST:PORT, unix:/PATH or tcp:HOST:PORT (port 0 picks a free one).")
    var socket: String

    @Option(name: .long, help: "Subscribe this listener to EVENT.")
    var subscribe: String?

    @Option(name: .long, help: "Subscription expire in seconds, refreshed at half of it.")
    var expire = 120

    @OptionGroup var options: MIOptions

    func validate() throws {
        guard expire >= 2 else { throw ValidationError("--expire must be at least 2 seconds") }
    }

    func run() async throws {
        let print: @Sendable ([UInt8]) -> Void = { message in
            var line = message.filter { $0 != UInt8(ascii: "\n") }
            line.append(UInt8(ascii: "\n"))
            line.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
        }
        let bound: String
        var closer: @Sendable () async -> Void
        if socket.hasPrefix("tcp:") {
            let listener: TCPJSONListener
            do { listener = try TCPJSONListener(socket: socket, onMessage: print) } catch {
                printError("evi: \(error)")
                throw ExitCode(1)
            }
            bound = listener.socket
            closer = { listener.close() }
        } else {
            let listener: DatagramListener
            do { listener = try DatagramListener(socket: socket, onDatagram: print) } catch {
                printError("evi: \(error.message)")
                throw ExitCode(1)
            }
            bound = listener.socket
            closer = { await listener.close() }
        }
        printError("evi: listening on \(bound)")
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        var refresher: Task<Void, Never>?
        if let event = subscribe {
            try subscribeSelf(event: event, socket: bound, expire: expire)
            let expire = self.expire
            let options = self.options
            refresher = Task {
                await Listen.keepSubscribed(options, event: event, socket: bound, expire: expire)
            }
        }
        for await _ in signals { break }
        refresher?.cancel()
        await closer()
        if let event = subscribe {
            do {
                let client = try MIClient(url: options.mi, token: options.resolvedToken)
                _ = try client.call(
                    "evi:unsubscribe", [EventField("event", .string(event)), EventField("socket", .string(bound))])
                printError("evi: unsubscribed \(bound) from \(event)")
            } catch {
                printError("evi: cannot unsubscribe \(bound) from \(event): \(error)")
                throw ExitCode(1)
            }
        }
    }

    /// Refreshes the subscription at half its expire. A failed refresh is printed and retried
    /// (1 s, doubling, at most a quarter of the expire) until one succeeds: a listener must not
    /// silently stop receiving.
    static func keepSubscribed(_ options: MIOptions, event: String, socket: String, expire: Int) async {
        var delay = Double(expire) / 2
        var retry = 1.0
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(delay))
            if Task.isCancelled { return }
            do {
                try call(options, event: event, socket: socket, expire: expire)
                if retry > 1 { printError("evi: subscription of \(socket) to \(event) refreshed again") }
                delay = Double(expire) / 2
                retry = 1
            } catch {
                printError(
                    "evi: cannot refresh the subscription of \(socket) to \(event): \(error); retrying in \(Int(retry)) s"
                )
                delay = retry
                retry = min(retry * 2, max(1, Double(expire) / 4))
            }
        }
    }

    private func subscribeSelf(event: String, socket: String, expire: Int) throws {
        do {
            try Self.call(options, event: event, socket: socket, expire: expire)
            printError("evi: subscribed \(socket) to \(event) for \(expire) s")
        } catch {
            printError("evi: cannot subscribe: \(error)")
            throw ExitCode(1)
        }
    }

    static func call(_ options: MIOptions, event: String, socket: String, expire: Int) throws {
        let client = try MIClient(url: options.mi, token: options.resolvedToken)
        _ = try client.call(
            "evi:subscribe",
            [
                EventField("event", .string(event)), EventField("socket", .string(socket)),
                EventField("expire", .int(Int64(expire))),
            ])
    }
}

/// A TCP listener for `evi listen tcp:…`: every connection's stream is split into JSON messages;
/// requests carrying an `id` (reliable mode) get `{"jsonrpc":"2.0","result":"OK","id":…}`.
final class TCPJSONListener: Sendable {
    let socket: String
    private let descriptor: Int32
    private let stopped = Atomic<Bool>(false)

    init(socket text: String, onMessage: @escaping @Sendable ([UInt8]) -> Void) throws {
        let address = String(text.dropFirst(4))
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw ListenError(description: "expected tcp:HOST:PORT, got \(text)")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let entry = list else {
            throw ListenError(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(list) }
        let fd = Glibc.socket(entry.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard fd >= 0, bind(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0, listen(fd, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            if fd >= 0 { Glibc.close(fd) }
            throw ListenError(description: "cannot listen on \(text): \(reason)")
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

    func close() {
        stopped.store(true, ordering: .relaxed)
        shutdown(descriptor, Int32(SHUT_RDWR))
        Glibc.close(descriptor)
    }
}

struct ListenError: Error, CustomStringConvertible {
    var description: String
}
