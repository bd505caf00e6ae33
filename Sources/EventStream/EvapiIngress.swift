import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Takes events in from Kamailio's `evapi` module: Kamailio is the TCP server and pushes what its
/// script passes to `evapi_relay(...)`; evi connects as a client — opened at start, re-opened by
/// the reconnect state machine's timer (backoff, fail-fast) after a loss or while Kamailio is
/// down — and raises each message: a JSON-RPC notification as itself, a plain JSON object as the
/// entry's `event` with the object as its parameters. Messages are netstrings (`LEN:DATA,`,
/// Kamailio's default) or JSON values back to back (`framing: json`).
public final class EvapiIngress: EventIngress {
    public let socket: String
    private let link = Mutex<ReconnectingChannel?>(nil)
    private let open = Atomic<Int>(0)

    public var connections: Int { open.load(ordering: .relaxed) }

    public init(settings: IngressSettings, sink: IngressSink, group: any EventLoopGroup, logger: Logger)
        async throws(SocketError)
    {
        let text = settings.socket
        let hostPort = try HostPort.parse(String(text.dropFirst("evapi:".count)), scheme: "evapi", socket: text)
        let address = try await hostPort.resolve(socketType: Int32(SOCK_STREAM.rawValue), socket: text)
        socket = "evapi:" + hostPort.description
        let framing = settings.framing
        let connection = ReconnectingChannel(name: socket, group: group, logger: logger) { [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await self.connect(to: address, group: group, framing: framing, sink: sink)
        }
        link.withLock { $0 = connection }
        // Connect now: a failure starts the timer, which keeps trying (Kamailio may start later).
        if case .failure(let failure) = await connection.channel() {
            logger.warning(
                "evapi not reachable yet", metadata: ["ingress": "\(socket)", "reason": "\(failure.reason)"])
        }
    }

    private func connect(
        to address: ResolvedAddress, group: any EventLoopGroup, framing: IngressSettings.Framing, sink: IngressSink
    ) async -> Result<any Channel, DeliveryFailure> {
        let target: SocketAddress
        do { target = try address.socketAddress() } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "bad address"))
        }
        let onClose: @Sendable (any Channel) -> Void = { [weak self] channel in
            self?.open.subtract(1, ordering: .relaxed)
            self?.link.withLock { $0 }?.lost(channel)
        }
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(2))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            EvapiHandler(sink: sink, framing: framing, onClose: onClose))
                    }
                }
                .connect(to: target).get()
            open.add(1, ordering: .relaxed)
            return .success(channel)
        } catch {
            return .failure(.connectFailure(error))
        }
    }

    public func close() async {
        await link.withLock { $0 }?.close()
    }
}

/// One evapi connection: frames split and handed to the sink, state on the event loop.
final class EvapiHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let sink: IngressSink
    private let framing: IngressSettings.Framing
    private let onClose: @Sendable (any Channel) -> Void
    private var netstrings = NetstringSplitter(maximumLength: IngressDecoder.maximumMessageSize)
    private var json = JSONStreamSplitter(maximumValueSize: IngressDecoder.maximumMessageSize)
    private var refused = 0

    init(sink: IngressSink, framing: IngressSettings.Framing, onClose: @escaping @Sendable (any Channel) -> Void) {
        self.sink = sink
        self.framing = framing
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data).readableBytesView
        let messages: [[UInt8]]
        switch framing {
        case .netstring:
            messages = netstrings.feed(bytes)
            while refused < netstrings.malformed {
                refused += 1
                sink.reject(.notJSON)
            }
        case .json:
            messages = json.feed(bytes)
            while refused < json.oversized {
                refused += 1
                sink.reject(.tooLarge)
            }
        }
        for message in messages { sink.accept(message) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
