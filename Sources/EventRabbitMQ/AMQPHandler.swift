import EventInterface
import EventNIOSupport
import NIOCore
import NIOPosix
import NIOSSL

/// One AMQP connection's protocol state, on its event loop: the handshake (start, tune, open,
/// channel 1), heartbeats, and one of two roles. A publisher selects confirms, publishes with
/// delivery tags and completes them on the broker's acks and nacks. A consumer sets its prefetch
/// (`basic.qos`), consumes one queue with manual acknowledgements, assembles each delivery from
/// its method, header and body frames, and acks or rejects it when the ingress says so.
final class AMQPHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    struct Settings: Sendable {
        var user: String
        var password: String
        var vhost: String
        /// Seconds; 0 disables.
        var heartbeat: UInt16
        var confirmTimeout: TimeAmount
        var role = Role.publisher
    }

    enum Role: Sendable {
        case publisher
        /// Consumes `queue`, at most `prefetch` messages unacknowledged; every message is handed
        /// to `deliver` on the event loop.
        case consumer(queue: String, prefetch: UInt16, deliver: @Sendable (AMQPDelivery) -> Void)
    }

    /// A message being assembled: its tag, the size its header announced, what arrived so far.
    private struct Incoming {
        var tag: UInt64
        var size: UInt64?
        var received: UInt64 = 0
        var body: [UInt8] = []
        /// Larger than an ingress reads: its frames are counted, not kept.
        var oversized = false
    }

    private enum Phase { case handshake, ready, closed }

    private let settings: Settings
    private let ready: EventLoopPromise<Void>
    private let onClose: @Sendable (any Channel) -> Void
    private var phase = Phase.handshake
    private var inbound: ByteBuffer?
    private var frameMax = 131_072
    private var nextTag: UInt64 = 1
    private var pending: [UInt64: EventLoopPromise<DeliveryOutcome>] = [:]
    private var timers: [UInt64: Scheduled<Void>] = [:]
    private var heartbeatTask: RepeatedTask?
    private var lastReceived = NIODeadline.now()
    private var closeReason = "connection closed"
    /// A `basic.return` whose content header has not arrived yet: its reply code and text.
    private var returning: (code: UInt16, text: String)?
    /// Delivery tags the broker returned as unroutable; their confirm fails the delivery.
    private var returned: [UInt64: String] = [:]
    /// Consumer: the message whose frames are arriving.
    private var incoming: Incoming?
    /// Consumer: the tag the broker gave the consumer (`basic.consume-ok`), to cancel it.
    private var consumerTag = ""
    /// Consumer: messages handed over and not yet acked or rejected.
    private(set) var unsettled = 0
    /// Acks written since the last flush: a burst of settlements costs one write to the socket.
    private var flushScheduled = false

    init(settings: Settings, ready: EventLoopPromise<Void>, onClose: @escaping @Sendable (any Channel) -> Void) {
        self.settings = settings
        self.ready = ready
        self.onClose = onClose
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            wrapOutboundOut(context.channel.allocator.buffer(bytes: AMQP.protocolHeader)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        lastReceived = .now()
        if inbound == nil { inbound = chunk } else { inbound?.writeBuffer(&chunk) }
        guard var buffer = inbound else { return }
        inbound = nil
        do {
            while let frame = try AMQP.readFrame(&buffer) { try handle(frame, context: context) }
        } catch {
            fail(context: context, reason: "\(error)")
            return
        }
        if buffer.readableBytes > 0 {
            buffer.discardReadBytes()
            inbound = buffer
        }
    }

    private func handle(_ frame: AMQP.Frame, context: ChannelHandlerContext) throws {
        if frame.type == AMQP.FrameType.header.rawValue, let reply = returning {
            returning = nil
            var header = frame.payload
            if let tag = AMQP.returnedDeliveryTag(header: &header) {
                returned[tag] = "unroutable: \(reply.code) \(reply.text)"
            }
            return
        }
        if frame.type == AMQP.FrameType.header.rawValue || frame.type == AMQP.FrameType.body.rawValue,
            incoming != nil
        {
            try assemble(frame, context: context)
            return
        }
        guard frame.type == AMQP.FrameType.method.rawValue else { return }  // heartbeats; returned bodies
        var payload = frame.payload
        guard let classID = payload.readInteger(as: UInt16.self), let methodID = payload.readInteger(as: UInt16.self)
        else { throw AMQPError("short method frame") }
        switch (classID, methodID) {
        case (10, 10):  // connection.start
            send(context) { buffer in
                AMQP.writeMethod(10, 11, channel: 0, into: &buffer) { arguments in
                    // A consumer asks to be told (basic.cancel) when its queue goes away.
                    let consumer = if case .consumer = self.settings.role { true } else { false }
                    arguments.writeTable(
                        [("product", "evi"), ("platform", "Swift")],
                        capabilities: consumer ? ["consumer_cancel_notify"] : [])
                    arguments.writeShortString("PLAIN")
                    arguments.writeLongString(
                        [0] + Array(self.settings.user.utf8) + [0] + Array(self.settings.password.utf8))
                    arguments.writeShortString("en_US")
                }
            }
        case (10, 30):  // connection.tune
            let channelMax = payload.readInteger(as: UInt16.self) ?? 0
            let serverFrameMax = payload.readInteger(as: UInt32.self) ?? 0
            let serverHeartbeat = payload.readInteger(as: UInt16.self) ?? 0
            if serverFrameMax > 0 { frameMax = Int(min(serverFrameMax, 131_072)) }
            let heartbeat =
                serverHeartbeat == 0
                ? settings.heartbeat
                : settings.heartbeat == 0 ? 0 : min(serverHeartbeat, settings.heartbeat)
            send(context) { buffer in
                AMQP.writeMethod(10, 31, channel: 0, into: &buffer) { arguments in
                    arguments.writeInteger(channelMax == 0 ? UInt16(1) : min(channelMax, 1))
                    arguments.writeInteger(UInt32(self.frameMax))
                    arguments.writeInteger(heartbeat)
                }
                AMQP.writeMethod(10, 40, channel: 0, into: &buffer) { arguments in
                    arguments.writeShortString(self.settings.vhost)
                    arguments.writeShortString("")
                    arguments.writeInteger(UInt8(0))
                }
            }
            if heartbeat > 0 { startHeartbeats(context: context, seconds: Int64(heartbeat)) }
        case (10, 41):  // connection.open-ok
            send(context) { buffer in
                AMQP.writeMethod(20, 10, channel: 1, into: &buffer) { $0.writeShortString("") }
            }
        case (20, 11):  // channel.open-ok
            switch settings.role {
            case .publisher:
                send(context) { buffer in
                    AMQP.writeMethod(85, 10, channel: 1, into: &buffer) { $0.writeInteger(UInt8(0)) }
                }
            case .consumer(_, let prefetch, _):
                send(context) { buffer in
                    AMQP.writeMethod(60, 10, channel: 1, into: &buffer) { arguments in
                        arguments.writeInteger(UInt32(0))  // prefetch-size: no limit in bytes
                        arguments.writeInteger(prefetch)
                        arguments.writeInteger(UInt8(0))  // global: per consumer
                    }
                }
            }
        case (85, 11):  // confirm.select-ok
            phase = .ready
            ready.succeed(())
        case (60, 11):  // basic.qos-ok
            guard case .consumer(let queue, _, _) = settings.role else { break }
            send(context) { buffer in
                AMQP.writeMethod(60, 20, channel: 1, into: &buffer) { arguments in
                    arguments.writeInteger(UInt16(0))
                    arguments.writeShortString(queue)
                    arguments.writeShortString("")  // consumer tag: the broker's choice
                    arguments.writeInteger(UInt8(0))  // no-local, no-ack, exclusive, no-wait: all off
                    arguments.writeInteger(UInt32(0))  // arguments: an empty table
                }
            }
        case (60, 21):  // basic.consume-ok
            consumerTag = payload.readShortString() ?? ""
            phase = .ready
            ready.succeed(())
        case (60, 60):  // basic.deliver: the header and body frames follow
            guard case .consumer = settings.role, payload.readShortString() != nil,
                let tag = payload.readInteger(as: UInt64.self)
            else { throw AMQPError("malformed basic.deliver") }
            incoming = Incoming(tag: tag)
        case (60, 30):  // basic.cancel: the broker ended the consumer (its queue was deleted)
            fail(context: context, reason: "broker cancelled the consumer (queue deleted?)")
        case (60, 80), (60, 120):  // basic.ack, basic.nack
            let tag = payload.readInteger(as: UInt64.self) ?? 0
            let multiple = (payload.readInteger(as: UInt8.self) ?? 0) & 1 == 1
            let tags = multiple ? pending.keys.filter { $0 <= tag } : [tag]
            for confirmed in tags {
                if let unroutable = returned.removeValue(forKey: confirmed) {
                    complete(confirmed, .failed(DeliveryFailure(.subscriberFailed, unroutable)))
                } else if methodID == 80 {
                    complete(confirmed, .delivered)
                } else {
                    complete(confirmed, .failed(DeliveryFailure(.subscriberFailed, "broker nacked the message")))
                }
            }
        case (60, 50):  // basic.return: the content header that follows names the message
            let code = payload.readInteger(as: UInt16.self) ?? 0
            returning = (code, payload.readShortString() ?? "")
        case (10, 50), (20, 40):  // connection.close, channel.close
            let code = payload.readInteger(as: UInt16.self) ?? 0
            let text = payload.readShortString() ?? ""
            closeReason = "broker closed the \(classID == 10 ? "connection" : "channel"): \(code) \(text)"
            if classID == 10 {
                send(context) { AMQP.writeMethod(10, 51, channel: 0, into: &$0) }
            } else {
                send(context) { AMQP.writeMethod(20, 41, channel: 1, into: &$0) }
            }
            fail(context: context, reason: closeReason)
        default:
            break  // nothing else concerns a publisher
        }
    }

    /// Publishes one message; the future completes on the broker's confirm, a nack, the confirm
    /// timeout, or the connection's loss.
    func publish(
        context: ChannelHandlerContext, exchange: String, routingKey: String, persistent: Bool, mandatory: Bool,
        body: [UInt8]
    ) -> EventLoopFuture<DeliveryOutcome> {
        let promise = context.eventLoop.makePromise(of: DeliveryOutcome.self)
        guard phase == .ready else {
            promise.succeed(.failed(DeliveryFailure(.subscriberFailed, closeReason)))
            return promise.futureResult
        }
        let tag = nextTag
        nextTag += 1
        pending[tag] = promise
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timers[tag] = context.eventLoop.scheduleTask(in: settings.confirmTimeout) {
            bound.value.complete(tag, .failed(DeliveryFailure(.subscriberFailed, "confirm timeout")))
        }
        var buffer = context.channel.allocator.buffer(capacity: body.count + 256)
        AMQP.writeMethod(60, 40, channel: 1, into: &buffer) { arguments in
            arguments.writeInteger(UInt16(0))
            arguments.writeShortString(exchange)
            arguments.writeShortString(routingKey)
            arguments.writeInteger(UInt8(mandatory ? 1 : 0))
        }
        AMQP.writeFrame(type: .header, channel: 1, into: &buffer) { header in
            header.writeInteger(UInt16(60))
            header.writeInteger(UInt16(0))
            header.writeInteger(UInt64(body.count))
            // content-type, delivery-mode, and for a mandatory publish the message-id that ties a
            // basic.return (which carries no delivery tag) to its publish.
            header.writeInteger(
                UInt16(0x8000 | (persistent ? 0x1000 : 0) | (mandatory ? AMQP.messageIDFlag : 0)))
            header.writeShortString("application/json")
            if persistent { header.writeInteger(UInt8(2)) }
            if mandatory { header.writeShortString(AMQP.messageID(tag)) }
        }
        let chunk = frameMax - 8
        var offset = 0
        while offset < body.count {
            let end = min(offset + chunk, body.count)
            AMQP.writeFrame(type: .body, channel: 1, into: &buffer) { $0.writeBytes(body[offset..<end]) }
            offset = end
        }
        context.write(wrapOutboundOut(buffer), promise: nil)
        return promise.futureResult
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
    }

    // MARK: Consumer

    /// A content header or body frame of the message in `incoming`; the last one hands it over.
    private func assemble(_ frame: AMQP.Frame, context: ChannelHandlerContext) throws {
        guard var message = incoming, case .consumer(_, _, let deliver) = settings.role else { return }
        var payload = frame.payload
        if frame.type == AMQP.FrameType.header.rawValue {
            guard message.size == nil, payload.readInteger(as: UInt16.self) == 60,
                payload.readInteger(as: UInt16.self) != nil, let size = payload.readInteger(as: UInt64.self)
            else { throw AMQPError("malformed content header") }
            message.size = size
            message.oversized = size > UInt64(AMQPDelivery.maximumBodySize)
            if !message.oversized { message.body.reserveCapacity(Int(size)) }
        } else {
            guard let size = message.size else { throw AMQPError("body frame before its content header") }
            message.received += UInt64(payload.readableBytes)
            guard message.received <= size else { throw AMQPError("body larger than its content header said") }
            if !message.oversized { message.body += payload.readableBytesView }
        }
        guard let size = message.size, message.received == size else {
            incoming = message
            return
        }
        incoming = nil
        unsettled += 1
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let tag = message.tag
        deliver(
            AMQPDelivery(body: message.oversized ? nil : message.body) { settlement in
                let loop = bound.eventLoop
                if settlement == .requeue {
                    loop.scheduleTask(in: .seconds(1)) {
                        bound.value.0.settle(tag, as: settlement, context: bound.value.1)
                    }
                } else if loop.inEventLoop {
                    bound.value.0.settle(tag, as: settlement, context: bound.value.1)
                } else {
                    loop.execute { bound.value.0.settle(tag, as: settlement, context: bound.value.1) }
                }
            })
    }

    /// Acks (`basic.ack`), rejects without requeueing (`basic.reject`, so that a dead-letter
    /// exchange takes it) or requeues one delivery. Nothing is sent once the connection is gone:
    /// the broker has put the message back already, and its tag means nothing on another connection.
    private func settle(_ tag: UInt64, as settlement: AMQPDelivery.Settlement, context: ChannelHandlerContext) {
        guard phase == .ready else { return }
        unsettled -= 1
        var buffer = context.channel.allocator.buffer(capacity: 21)
        AMQP.writeMethod(60, settlement == .ack ? 80 : 90, channel: 1, into: &buffer) { arguments in
            arguments.writeInteger(tag)
            // ack: not multiple; reject: requeue or not
            arguments.writeInteger(UInt8(settlement == .requeue ? 1 : 0))
        }
        context.write(wrapOutboundOut(buffer), promise: nil)
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.flushScheduled = false
            context.flush()
        }
    }

    /// Asks the broker to stop delivering (`basic.cancel`); what it sent already still arrives.
    func cancelConsumer(context: ChannelHandlerContext) {
        guard phase == .ready, !consumerTag.isEmpty else { return }
        send(context) { buffer in
            AMQP.writeMethod(60, 30, channel: 1, into: &buffer) { arguments in
                arguments.writeShortString(self.consumerTag)
                arguments.writeInteger(UInt8(0))
            }
        }
    }

    private func complete(_ tag: UInt64, _ outcome: DeliveryOutcome) {
        returned.removeValue(forKey: tag)
        timers.removeValue(forKey: tag)?.cancel()
        pending.removeValue(forKey: tag)?.succeed(outcome)
    }

    private func startHeartbeats(context: ChannelHandlerContext, seconds: Int64) {
        let interval = TimeAmount.milliseconds(seconds * 500)
        let limit = TimeAmount.seconds(seconds * 2)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = bound.value
            if NIODeadline.now() - handler.lastReceived > limit {
                handler.fail(context: context, reason: "missed heartbeats")
                return
            }
            handler.send(context) { AMQP.writeFrame(type: .heartbeat, channel: 0, into: &$0) { _ in } }
        }
    }

    private func send(_ context: ChannelHandlerContext, _ build: (inout ByteBuffer) -> Void) {
        var buffer = context.channel.allocator.buffer(capacity: 256)
        build(&buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func fail(context: ChannelHandlerContext, reason: String) {
        closeReason = reason
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if phase == .handshake {
            let reason =
                closeReason == "connection closed"
                ? "connection closed during the handshake (wrong credentials or vhost?)" : closeReason
            ready.fail(AMQPError(reason))
        }
        phase = .closed
        heartbeatTask?.cancel()
        for tag in Array(pending.keys) {
            complete(
                tag, .failed(DeliveryFailure(.subscriberFailed, "connection lost before the confirm (\(closeReason))")))
        }
        onClose(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, reason: "\(error)")
    }
}

extension AMQPHandler {
    /// Connects to `address` and completes the handshake within `timeout`: the channel is ready
    /// to publish or consuming when this succeeds. `onClose` is told when it closes.
    static func open(
        _ address: ResolvedAddress, settings: Settings, group: any EventLoopGroup, timeout: TimeAmount,
        tls: AMQPTLS? = nil, onClose: @escaping @Sendable (any Channel) -> Void
    ) async -> Result<any Channel, DeliveryFailure> {
        // The profile as of this connection (SIGHUP may have reloaded it).
        let profile: (context: NIOSSLContext, hostname: String?)?
        do throws(ConfigurationError) {
            profile = try tls.map { tls throws(ConfigurationError) in (try tls.source.current().client, tls.hostname) }
        } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "TLS: \(error)"))
        }
        let target: SocketAddress
        do { target = try address.socketAddress() } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "bad address"))
        }
        let loop = group.next()
        let ready = loop.makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // amqps: the AMQP handshake's first bytes wait for the TLS one; a TLS
                        // failure reaches the AMQP handler as an error and fails `ready` with it.
                        if let profile {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: profile.context, serverHostname: profile.hostname))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            AMQPHandler(settings: settings, ready: ready, onClose: onClose))
                    }
                }
                .connect(to: target).get()
        } catch {
            ready.fail(AMQPError("not connected"))
            return .failure(.connectFailure(error))
        }
        let handshake: Result<Void, any Error>? = await ready.futureResult.map { Result<Void, any Error>.success(()) }
            .recover { .failure($0) }.value(within: timeout)
        switch handshake {
        case .success?: return .success(channel)
        case .failure(let error)?:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "\(error)"))
        case nil:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "handshake timeout"))
        }
    }
}

/// amqps for one broker: the profile (its client side read at each connection) and the host name
/// to check (nil for an address literal).
struct AMQPTLS: Sendable {
    let source: ReloadableTLS
    let hostname: String?
}
