import EventInterface
import NIOCore

/// One AMQP connection's protocol state, on its event loop: the handshake (start, tune, open,
/// channel 1, confirm.select), heartbeats, publishes with their delivery tags, and the broker's
/// acks and nacks completing them.
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
        guard frame.type == AMQP.FrameType.method.rawValue else { return }  // heartbeats; returned bodies
        var payload = frame.payload
        guard let classID = payload.readInteger(as: UInt16.self), let methodID = payload.readInteger(as: UInt16.self)
        else { throw AMQPError("short method frame") }
        switch (classID, methodID) {
        case (10, 10):  // connection.start
            send(context) { buffer in
                AMQP.writeMethod(10, 11, channel: 0, into: &buffer) { arguments in
                    arguments.writeTable([("product", "evi"), ("platform", "Swift")])
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
            send(context) { buffer in
                AMQP.writeMethod(85, 10, channel: 1, into: &buffer) { $0.writeInteger(UInt8(0)) }
            }
        case (85, 11):  // confirm.select-ok
            phase = .ready
            ready.succeed(())
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
