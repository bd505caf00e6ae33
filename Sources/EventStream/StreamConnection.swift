import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// One subscriber's TCP connection: opened on first use, re-opened by a timer after a loss
/// (100 ms, doubling, at most 5 s, reset on success) whatever the traffic; while it is down,
/// deliveries fail at once without a connect attempt each.
final class StreamConnection: Sendable {
    let address: ResolvedAddress
    let socket: String
    let timeout: TimeAmount
    let group: any EventLoopGroup
    let logger: Logger
    private let nextID = Mutex<Int64>(1)
    /// Reliable-mode requests waiting for their reply, by id.
    let pending = Mutex<[Int64: EventLoopPromise<DeliveryOutcome>]>([:])
    private let link = Mutex<ReconnectingChannel?>(nil)
    /// `tls:`: the profile (its client side as of each connect) and the host name to check (nil
    /// for an address literal).
    let tls: (source: ReloadableTLS, hostname: String?)?

    init(
        address: ResolvedAddress, socket: String, options: StreamOptions, group: any EventLoopGroup, logger: Logger,
        tls: (source: ReloadableTLS, hostname: String?)? = nil
    ) {
        self.tls = tls
        self.address = address
        self.socket = socket
        self.timeout = TimeAmount(options.timeout)
        self.group = group
        self.logger = logger
        let reconnecting = ReconnectingChannel(name: socket, group: group, logger: logger) { [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await self.connect()
        }
        link.withLock { $0 = reconnecting }
    }

    private var reconnecting: ReconnectingChannel? { link.withLock { $0 } }

    private func usableChannel() async -> Result<any Channel, DeliveryFailure> {
        await reconnecting?.channel() ?? .failure(DeliveryFailure(.subscriberFailed, "shutting down"))
    }

    // MARK: Delivering

    /// Notifications: success once the bytes are written.
    func notify(_ payloads: [[UInt8]]) async -> [DeliveryOutcome] {
        let channel: any Channel
        switch await usableChannel() {
        case .success(let usable): channel = usable
        case .failure(let failure): return Array(repeating: .failed(failure), count: payloads.count)
        }
        let writes = payloads.map { channel.write(channel.allocator.buffer(bytes: $0)) }
        channel.flush()
        let all = EventLoopFuture.whenAllComplete(writes, on: channel.eventLoop)
        guard let results = await all.value(within: timeout) else {
            channel.close(promise: nil)
            return Array(repeating: .failed(DeliveryFailure(.subscriberFailed, "write timeout")), count: payloads.count)
        }
        return results.map { result in
            switch result {
            case .success: .delivered
            case .failure(let error): .failed(DeliveryFailure(.subscriberFailed, "write failed: \(error)"))
            }
        }
    }

    /// Requests with ids `{"id":N,…}`: success on a reply with that id and no `error`.
    func request(_ payloads: [[UInt8]]) async -> [DeliveryOutcome] {
        let channel: any Channel
        switch await usableChannel() {
        case .success(let usable): channel = usable
        case .failure(let failure): return Array(repeating: .failed(failure), count: payloads.count)
        }
        let loop = channel.eventLoop
        var replies: [EventLoopFuture<DeliveryOutcome>] = []
        for payload in payloads {
            let id = nextID.withLock { next -> Int64 in
                defer { next += 1 }
                return next
            }
            let promise = loop.makePromise(of: DeliveryOutcome.self)
            pending.withLock { $0[id] = promise }
            loop.scheduleTask(in: timeout) { [self] in
                pending.withLock { $0.removeValue(forKey: id) }?
                    .succeed(.failed(DeliveryFailure(.subscriberFailed, "reply timeout")))
            }
            var bytes = Array("{\"id\":\(id),".utf8)
            bytes += payload.dropFirst()
            channel.write(channel.allocator.buffer(bytes: bytes)).whenFailure { [self] error in
                pending.withLock { $0.removeValue(forKey: id) }?
                    .succeed(.failed(DeliveryFailure(.subscriberFailed, "write failed: \(error)")))
            }
            replies.append(promise.futureResult)
        }
        channel.flush()
        var outcomes: [DeliveryOutcome] = []
        for reply in replies {
            outcomes.append((try? await reply.get()) ?? .failed(DeliveryFailure(.subscriberFailed, "no reply")))
        }
        return outcomes
    }

    /// A reply arrived: complete its request.
    func replied(id: Int64, error: String?) {
        let outcome: DeliveryOutcome =
            error.map { .failed(DeliveryFailure(.subscriberFailed, "error reply: \($0)")) } ?? .delivered
        pending.withLock { $0.removeValue(forKey: id) }?.succeed(outcome)
    }

    // MARK: Connecting

    private func connect() async -> Result<any Channel, DeliveryFailure> {
        let target: SocketAddress
        do { target = try address.socketAddress() } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "bad address"))
        }
        let tls: (context: NIOSSLContext, hostname: String?)?
        do throws(ConfigurationError) {
            tls = try self.tls.map { tls throws(ConfigurationError) in (try tls.source.current().client, tls.hostname) }
        } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "TLS: \(error)"))
        }
        // A TLS connection is usable once its handshake is done: watched from the start.
        let handshake = Mutex<EventLoopFuture<Void>?>(nil)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [weak self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        let done = channel.eventLoop.makePromise(of: Void.self)
                        handshake.withLock { $0 = done.futureResult }
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: tls.hostname))
                        try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: done))
                    }
                    try channel.pipeline.syncOperations.addHandler(ReplyHandler(connection: self))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(to: target).get()
        } catch {
            return .failure(.connectFailure(error))
        }
        guard let done = handshake.withLock({ $0 }) else { return .success(channel) }
        switch await done.map({ Result<Void, any Error>.success(()) }).recover({ .failure($0) }).value(within: timeout)
        {
        case .success?: return .success(channel)
        case .failure(let error)?:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "TLS: \(error)"))
        case nil:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "TLS handshake timeout"))
        }
    }

    /// The connection is gone: requests waiting for replies fail, and the timer starts.
    func lost(_ channel: any Channel) {
        let outstanding = pending.withLock { table -> [EventLoopPromise<DeliveryOutcome>] in
            defer { table.removeAll() }
            return Array(table.values)
        }
        for promise in outstanding {
            promise.succeed(.failed(DeliveryFailure(.subscriberFailed, "connection closed with requests outstanding")))
        }
        reconnecting?.lost(channel)
    }

    func close() async {
        await reconnecting?.close()
    }
}

/// Reads replies (reliable mode) and notices the connection closing. Its state (the stream
/// splitter) lives on the channel's event loop.
final class ReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private weak let connection: StreamConnection?
    private var splitter = JSONStreamSplitter(maximumValueSize: 1 << 20)

    init(connection: StreamConnection?) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let messages = splitter.feed(buffer.readableBytesView)
        for message in messages {
            guard case .object(let fields)? = try? EventValue(jsonBytes: message),
                case .int(let id)? = fields.first(where: { $0.name == "id" })?.value
            else { continue }
            let error = fields.first { $0.name == "error" }.map { field -> String in
                if case .object(let parts) = field.value,
                    case .string(let text)? = parts.first(where: { $0.name == "message" })?.value
                {
                    return text
                }
                return field.value.jsonText
            }
            connection?.replied(id: id, error: error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection?.lost(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Completes `done` when the TLS handshake finishes, fails it when it fails or the channel closes.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<Void>
    private var settled = false

    init(done: EventLoopPromise<Void>) { self.done = done }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            finish(.success(()))
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(ChannelError.ioOnClosedChannel))
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<Void, any Error>) {
        guard !settled else { return }
        settled = true
        done.completeWith(result)
    }
}
