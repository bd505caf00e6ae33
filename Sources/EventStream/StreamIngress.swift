import EventInterface
import EventNIOSupport
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Takes events in on `tcp:HOST:PORT`: the peer of OpenSIPS' event_stream. JSON objects back to
/// back on a connection; a notification is raised; a request (with `id`, OpenSIPS' reliable mode)
/// is answered `{"jsonrpc":"2.0","result":"OK","id":…}` — the id echoed exactly — once its event is
/// queued for every subscriber, or with a JSON-RPC error when it cannot be (unknown event, bad
/// params). Pipelined requests are answered in order (each is handled as it is read, on the
/// connection's event loop).
public final class StreamIngress: EventIngress {
    /// Connections per ingress at most; past it the one idle the longest is closed.
    public static let maximumConnections = 1_024
    /// How long a peer may stay in the middle of a message.
    public static let messageTimeout = TimeAmount.seconds(10)

    public let socket: String
    private let channel: any Channel
    private let table: ConnectionTable

    public var connections: Int { table.count }

    private init(socket: String, channel: any Channel, table: ConnectionTable) {
        self.socket = socket
        self.channel = channel
        self.table = table
    }

    /// Binds and starts taking connections.
    public static func start(
        settings: IngressSettings, sink: IngressSink, group: any EventLoopGroup, tls: ReloadableTLS? = nil
    ) async throws(SocketError) -> StreamIngress {
        let text = settings.socket
        let address = text.dropFirst(4)
        let scheme = tls == nil ? "tcp" : "tls"
        guard text.hasPrefix(scheme + ":"), let colon = address.lastIndex(of: ":"),
            let port = Int(address[address.index(after: colon)...]), (0...65_535).contains(port)
        else { throw SocketError("a stream ingress is \(scheme):HOST:PORT (port 0: any free one), not \(text)") }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let table = ConnectionTable(limit: maximumConnections)
        let allowed = settings.allowedSources.map { DestinationPolicy(allowed: $0) }
        let bound: any Channel
        do {
            bound = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Nearest the socket: replies a peer does not read pause its requests.
                        try channel.pipeline.syncOperations.addHandler(WriteBacklogHandler(listener: .ingress))
                        // With TLS, a client without a certificate from client_ca_file (when
                        // set) fails the handshake and never reaches the ingress.
                        if let tls {
                            // The profile as of this connection (SIGHUP may have reloaded it).
                            let context = try tls.server(clientCAFile: settings.clientCAFile, socket: text)
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            StreamIngressHandler(sink: sink, table: table, allowed: allowed))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw SocketError("cannot listen on \(text): \(error)")
        }
        let boundPort = bound.localAddress?.port ?? port
        return StreamIngress(
            socket: "\(scheme):" + HostPort(host: host, port: boundPort).description, channel: bound, table: table)
    }

    public func close() async {
        try? await channel.close()
        for connection in table.all { try? await connection.close() }
    }

    /// The open connections and when each last had a whole message, for the cap.
    final class ConnectionTable: Sendable {
        private let limit: Int
        private let entries = Mutex<[ObjectIdentifier: (channel: any Channel, lastMessage: UInt64)]>([:])

        init(limit: Int) { self.limit = limit }

        var count: Int { entries.withLock { $0.count } }
        var all: [any Channel] { entries.withLock { $0.values.map(\.channel) } }

        /// Adds a connection; returns the one to close to stay within the cap (idle the longest).
        func admit(_ channel: any Channel) -> (any Channel)? {
            entries.withLock { table in
                table[ObjectIdentifier(channel)] = (channel, monotonicNanoseconds())
                guard table.count > limit, let oldest = table.min(by: { $0.value.lastMessage < $1.value.lastMessage })
                else { return nil }
                table[oldest.key] = nil
                return oldest.value.channel
            }
        }

        func touched(_ channel: any Channel) {
            entries.withLock { $0[ObjectIdentifier(channel)]?.lastMessage = monotonicNanoseconds() }
        }

        func remove(_ channel: any Channel) {
            entries.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(channel)) }
        }
    }
}

/// One ingress connection, its state on its event loop.
final class StreamIngressHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let sink: IngressSink
    private let table: StreamIngress.ConnectionTable
    private let allowed: DestinationPolicy?
    private var splitter = JSONStreamSplitter(maximumValueSize: IngressDecoder.maximumMessageSize)
    private var oversized = 0
    private var stalled: Scheduled<Void>?

    init(sink: IngressSink, table: StreamIngress.ConnectionTable, allowed: DestinationPolicy?) {
        self.sink = sink
        self.table = table
        self.allowed = allowed
    }

    func channelActive(context: ChannelHandlerContext) {
        if let allowed, let remote = context.channel.remoteAddress, !Self.isAllowed(remote, by: allowed) {
            sink.reject(.sourceNotAllowed)
            context.close(promise: nil)
            return
        }
        if let evicted = table.admit(context.channel) {
            sink.reject(.tooManyConnections)
            evicted.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let messages = splitter.feed(buffer.readableBytesView)
        while oversized < splitter.oversized {
            oversized += 1
            sink.reject(.tooLarge)
        }
        if !messages.isEmpty { table.touched(context.channel) }
        var replies = context.channel.allocator.buffer(capacity: 0)
        for message in messages {
            switch sink.accept(message) {
            case .success(let accepted):
                if let id = accepted.id { Self.appendReply(to: &replies, id: id, error: nil) }
            case .failure(let reason):
                // A request gets its error; the id is read again (a refusal is the rare path).
                if case .object(let fields)? = try? EventValue(jsonBytes: message),
                    let id = fields.first(where: { $0.name == "id" })?.value
                {
                    Self.appendReply(to: &replies, id: id, error: reason)
                }
            }
        }
        if replies.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(replies), promise: nil) }
        // A message begun and not finished must be finished in time.
        stalled?.cancel()
        stalled = nil
        if splitter.hasPartialValue {
            let channel = context.channel
            let sink = self.sink
            stalled = context.eventLoop.scheduleTask(in: StreamIngress.messageTimeout) {
                sink.reject(.incomplete)
                channel.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stalled?.cancel()
        table.remove(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// `{"jsonrpc":"2.0","result":"OK","id":ID}` or `{"jsonrpc":"2.0","error":{"code":…,"message":…},"id":ID}`.
    static func appendReply(to buffer: inout ByteBuffer, id: EventValue, error: IngressDecoder.Rejection?) {
        var writer = JSONWriter(reservingCapacity: 96)
        if let error {
            let (code, message): (Int64, String) =
                switch error {
                case .unknownEvent: (404, "Event not published")
                case .notStored: (500, "Internal error")
                case .notJSON: (-32700, "Parse error")
                default: (-32600, "Invalid Request")
                }
            writer.append(raw: "{\"jsonrpc\":\"2.0\",\"error\":")
            writer.append(
                .object([
                    EventField("code", .int(code)), EventField("message", .string(message)),
                    EventField("data", .string(error.rawValue)),
                ]))
        } else {
            writer.append(raw: "{\"jsonrpc\":\"2.0\",\"result\":\"OK\"")
        }
        writer.append(raw: ",\"id\":")
        writer.append(id)
        writer.append(raw: "}")
        buffer.writeBytes(writer.bytes)
    }

    static func isAllowed(_ remote: SocketAddress, by policy: DestinationPolicy) -> Bool {
        switch remote {
        case .v4(let address):
            var raw = address.address
            return policy.allows(ResolvedAddress(family: AF_INET, storage: withUnsafeBytes(of: &raw) { Array($0) }))
        case .v6(let address):
            var raw = address.address
            return policy.allows(ResolvedAddress(family: AF_INET6, storage: withUnsafeBytes(of: &raw) { Array($0) }))
        default: return false
        }
    }
}
