import EventInterface
import EventNIOSupport
import NIOCore
import NIOPosix
import NIOSSL

/// Drives one ``AMQPConnectionStateMachine`` on a channel: frames in, the machine's actions carried
/// out — writes, the handshake promise, heartbeat and confirm timers, publishes' promises, messages
/// handed to a consumer's ingress. The protocol's decisions are the machine's (tested without
/// sockets); this handler is tested with `EmbeddedChannel`.
final class AMQPHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    typealias Settings = AMQPConnectionStateMachine.Settings

    private var machine: AMQPConnectionStateMachine
    private let confirmTimeout: TimeAmount
    private let deliver: (@Sendable (AMQPDelivery) -> Void)?
    private let ready: EventLoopPromise<Void>
    private let onClose: @Sendable (any Channel) -> Void
    private var inbound: ByteBuffer?
    private var pending: [UInt64: EventLoopPromise<DeliveryOutcome>] = [:]
    private var timers: [UInt64: Scheduled<Void>] = [:]
    private var heartbeatTask: RepeatedTask?
    /// Acks written since the last flush: a burst of settlements costs one write to the socket.
    private var flushScheduled = false

    /// Consumer: messages handed over and not yet acked or rejected.
    var unsettled: Int { machine.unsettled }

    /// `deliver`, for a consumer: every message is handed to it on the event loop.
    init(
        settings: Settings, deliver: (@Sendable (AMQPDelivery) -> Void)? = nil, ready: EventLoopPromise<Void>,
        onClose: @escaping @Sendable (any Channel) -> Void
    ) {
        machine = AMQPConnectionStateMachine(settings: settings)
        self.deliver = deliver
        confirmTimeout = settings.confirmTimeout
        self.ready = ready
        self.onClose = onClose
    }

    private static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    func channelActive(context: ChannelHandlerContext) {
        run([machine.connected(now: Self.now())], context: context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        machine.bytesReceived(now: Self.now())
        if inbound == nil { inbound = chunk } else { inbound?.writeBuffer(&chunk) }
        guard var buffer = inbound else { return }
        inbound = nil
        do {
            while let frame = try AMQP.readFrame(&buffer) { run(machine.received(frame), context: context) }
        } catch {
            run(machine.failed("\(error)"), context: context)
            return
        }
        if buffer.readableBytes > 0 {
            buffer.discardReadBytes()
            inbound = buffer
        }
    }

    /// Carries out the machine's actions, in order.
    private func run(_ actions: [AMQPConnectionStateMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let frames):
                var buffer = context.channel.allocator.buffer(capacity: 256)
                for frame in frames { frame.write(into: &buffer, frameMax: machine.frameMax) }
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            case .ready:
                ready.succeed(())
            case .startHeartbeats(let interval):
                startHeartbeats(context: context, interval: .nanoseconds(Int64(interval)))
            case .complete(let tag, let outcome):
                timers.removeValue(forKey: tag)?.cancel()
                pending.removeValue(forKey: tag)?.succeed(outcome)
            case .deliver(let tag, let body):
                handOver(tag: tag, body: body, context: context)
            case .close:
                context.close(promise: nil)
            case .handshakeFailed(let reason):
                ready.fail(AMQPError(reason))
            }
        }
    }

    /// Publishes one message; the future completes on the broker's confirm, a nack, the confirm
    /// timeout, or the connection's loss.
    func publish(
        context: ChannelHandlerContext, exchange: String, routingKey: String, persistent: Bool, mandatory: Bool,
        body: [UInt8]
    ) -> EventLoopFuture<DeliveryOutcome> {
        let promise = context.eventLoop.makePromise(of: DeliveryOutcome.self)
        switch machine.publish(
            exchange: exchange, routingKey: routingKey, persistent: persistent, mandatory: mandatory, body: body)
        {
        case .refuse(let reason):
            promise.succeed(.failed(DeliveryFailure(.subscriberFailed, reason)))
        case .send(let tag, let frame):
            pending[tag] = promise
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            timers[tag] = context.eventLoop.scheduleTask(in: confirmTimeout) {
                let (handler, context) = bound.value
                if let action = handler.machine.confirmTimedOut(tag: tag) { handler.run([action], context: context) }
            }
            var buffer = context.channel.allocator.buffer(capacity: body.count + 256)
            frame.write(into: &buffer, frameMax: machine.frameMax)
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        return promise.futureResult
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
    }

    // MARK: Consumer

    /// Hands a whole message to the ingress with a way to settle it, from any thread.
    private func handOver(tag: UInt64, body: [UInt8]?, context: ChannelHandlerContext) {
        guard let deliver else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deliver(
            AMQPDelivery(body: body) { settlement in
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

    private func settle(_ tag: UInt64, as settlement: AMQPDelivery.Settlement, context: ChannelHandlerContext) {
        guard let frame = machine.settle(tag: tag, as: settlement) else { return }
        var buffer = context.channel.allocator.buffer(capacity: 21)
        frame.write(into: &buffer, frameMax: machine.frameMax)
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
        guard let frame = machine.cancelConsumer() else { return }
        run([.send([frame])], context: context)
    }

    private func startHeartbeats(context: ChannelHandlerContext, interval: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = bound.value
            handler.run(handler.machine.heartbeatTick(now: Self.now()), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        heartbeatTask?.cancel()
        run(machine.closed(), context: context)
        onClose(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        run(machine.failed("\(error)"), context: context)
    }
}

extension AMQPHandler {
    /// Connects to `address` and completes the handshake within `timeout`: the channel is ready
    /// to publish or consuming when this succeeds. `onClose` is told when it closes.
    static func open(
        _ address: ResolvedAddress, settings: Settings, deliver: (@Sendable (AMQPDelivery) -> Void)? = nil,
        group: any EventLoopGroup, timeout: TimeAmount, tls: AMQPTLS? = nil,
        onClose: @escaping @Sendable (any Channel) -> Void
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
                            AMQPHandler(settings: settings, deliver: deliver, ready: ready, onClose: onClose))
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
