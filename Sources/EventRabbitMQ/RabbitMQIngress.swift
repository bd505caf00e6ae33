import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Takes events in from a RabbitMQ queue: `rabbitmq:[USER[:PASSWORD]@]HOST[:PORT]/[vhost=NAME?]QUEUE`.
///
/// Consumes with `basic.qos` prefetch and manual acknowledgements, and acknowledges a message only
/// once its event is settled — every subscriber delivered it or finally failed it (counted) — so
/// that a message whose event evi had not finished with when it stopped or died is redelivered by
/// the broker (at-least-once end to end). A message that can never be accepted (not JSON, an
/// unknown event, over 1 MiB) is rejected without requeue, for a dead-letter exchange to catch.
/// Several daemons consuming one queue share its messages (competing consumers). The connection
/// is re-opened by the reconnect state machine after a loss, or while the broker is down.
public final class RabbitMQIngress: EventIngress {
    public let socket: String
    private let link = Mutex<ReconnectingChannel?>(nil)

    /// How long closing waits for the events already taken to settle before it drops the
    /// connection (the broker then redelivers what was not acknowledged).
    static let closeGrace = Duration.seconds(5)

    /// 1 while consuming (connected, the consumer registered), else 0.
    public var connections: Int { link.withLock { $0 }?.current == nil ? 0 : 1 }

    public init(
        settings: IngressSettings, sink: IngressSink, options: RabbitMQOptions,
        tlsProfiles: [String: ReloadableTLS] = [:],
        group: any EventLoopGroup, logger: Logger
    ) async throws(SocketError) {
        let text = settings.socket
        guard text.hasPrefix("rabbitmq:") else { throw SocketError("not a rabbitmq socket: \(text)") }
        let parsed = try RabbitMQAddress.parse(String(text.dropFirst("rabbitmq:".count)), targetName: "queue")
        guard parsed.exchange.isEmpty, !parsed.persistent else {
            throw SocketError("a rabbitmq ingress takes only vhost=NAME and tls before its queue: \(parsed.redacted)")
        }
        var profile: AMQPTLS?
        if let name = parsed.tls {
            guard let domain = tlsProfiles[name] else {
                throw SocketError("no TLS domain '\(name)' for \(parsed.redacted)")
            }
            profile = AMQPTLS(source: domain, hostname: parsed.hostPort.nameToVerify)
        }
        let tls = profile
        guard (1...Int(UInt16.max)).contains(settings.prefetch) else {
            throw SocketError("prefetch must be 1 to 65535, got \(settings.prefetch): \(parsed.redacted)")
        }
        let address = try await parsed.hostPort.resolve(
            socketType: Int32(SOCK_STREAM.rawValue), socket: parsed.redacted)
        socket = parsed.description
        let handlerSettings = AMQPHandler.Settings(
            user: parsed.user, password: parsed.password, vhost: parsed.vhost, heartbeat: options.heartbeat,
            confirmTimeout: TimeAmount(options.timeout),
            role: .consumer(queue: parsed.target, prefetch: UInt16(settings.prefetch)))
        let deliver: @Sendable (AMQPDelivery) -> Void = { delivery in Self.received(delivery, sink: sink) }
        let timeout = TimeAmount(options.timeout)
        let connection = ReconnectingChannel(name: socket, group: group, logger: logger) { [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await AMQPHandler.open(
                address, settings: handlerSettings, deliver: deliver, group: group, timeout: timeout, tls: tls,
                onClose: { [weak self] channel in self?.link.withLock { $0 }?.lost(channel) })
        }
        link.withLock { $0 = connection }
        // Connect now: a failure starts the timer, which keeps trying (the broker may start later).
        if case .failure(let failure) = await connection.channel() {
            logger.warning(
                "rabbitmq ingress not consuming yet", metadata: ["ingress": "\(socket)", "reason": "\(failure.reason)"])
        }
    }

    /// One message, on the connection's event loop: raised with its acknowledgement tied to the
    /// event's settlement, or rejected.
    private static func received(_ delivery: AMQPDelivery, sink: IngressSink) {
        guard let body = delivery.body else {
            sink.reject(.tooLarge)
            delivery.settle(false)
            return
        }
        switch sink.accept(body, onSettled: { delivery.settle(true) }) {
        case .success: break
        case .failure(.notStored):
            // Not stored (the spool's disk is full): the broker keeps it and hands it over again.
            delivery.requeue()
        case .failure: delivery.settle(false)
        }
    }

    /// Cancels the consumer, gives the events already taken up to ``closeGrace`` to settle (and
    /// their messages to be acknowledged), then closes the connection.
    public func close() async {
        guard let connection = link.withLock({ $0 }) else { return }
        if let channel = connection.current {
            let handler = try? await channel.eventLoop.submit {
                let context = try channel.pipeline.syncOperations.context(handlerType: AMQPHandler.self)
                guard let handler = context.handler as? AMQPHandler else { throw AMQPError("no handler") }
                handler.cancelConsumer(context: context)
                return NIOLoopBound(handler, eventLoop: channel.eventLoop)
            }.get()
            let deadline = ContinuousClock.now + Self.closeGrace
            while let handler, ContinuousClock.now < deadline, channel.isActive,
                (try? await channel.eventLoop.submit { handler.value.unsettled }.get()) ?? 0 > 0
            {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        await connection.close()
    }
}
