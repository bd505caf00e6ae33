import Logging
import NIOCore
import NIOPosix

/// MI over UDP: one JSON-RPC request per datagram, the reply sent back to the sender. Only valid,
/// authorised requests are answered (`ManagementInterface.DatagramDrop`): anything else is counted
/// and dropped, so spoofed packets can start no reply loop and reflect nothing.
public final class MIDatagramServer: MIListener {
    public let channel: any Channel
    public var localPort: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    public static func bind(
        host: String, port: Int, group: any EventLoopGroup, mi: ManagementInterface, logger: Logger,
        paused: Bool = false
    ) async throws -> MIDatagramServer {
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.autoRead, value: !paused)
            // Whole datagrams: NIO's default 2,048-byte buffer truncated larger requests (OpenSIPS
            // takes about 65 KB); this holds the largest UDP payload.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MIDatagramHandler(mi: mi, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        return MIDatagramServer(channel: channel)
    }
}

final class MIDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let mi: ManagementInterface
    private let logger: Logger

    init(mi: ManagementInterface, logger: Logger) {
        self.mi = mi
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let sender = envelope.remoteAddress
        switch mi.process(Array(envelope.data.readableBytesView), origin: .datagram) {
        case .done(let reply):
            if let reply { send(context, reply, to: sender) }
        case .pending(let work):
            let promise = context.eventLoop.makePromise(of: [UInt8]?.self)
            promise.completeWithTask { await work() }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { reply in
                guard let reply else { return }
                let (handler, context) = bound.value
                handler.send(context, reply, to: sender)
            }
        }
    }

    /// Largest reply one UDP datagram carries; a larger one (a long subscriber list) is answered
    /// with an error pointing at MI over HTTP instead of vanishing.
    static let maximumReply = 65_507

    private func send(_ context: ChannelHandlerContext, _ reply: [UInt8], to address: SocketAddress) {
        var reply = reply
        if reply.count > Self.maximumReply {
            reply = Array(
                #"{"jsonrpc":"2.0","error":{"code":500,"message":"Reply too large","data":"the reply does not fit in a UDP datagram; use MI over HTTP"},"id":null}"#
                    .utf8)
        }
        let buffer = context.channel.allocator.buffer(bytes: reply)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: address, data: buffer)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A send to a sender that went away (ICMP refusal) must not close the listener.
        logger.debug("MI datagram error", metadata: ["error": "\(error)"])
    }
}
