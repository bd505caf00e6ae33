import EventInterface
import NIOCore

/// One AMQP 0-9-1 connection's protocol logic without I/O, in the manner of postgres-nio's
/// `ConnectionStateMachine`: frames and calls in, actions out, time as nanoseconds. The handshake
/// (start, tune, open, channel 1), heartbeats, and one of two roles: a publisher selects confirms,
/// numbers its publishes and completes them on the broker's acks, nacks and returns; a consumer
/// sets its prefetch, consumes one queue, assembles each message from its method, header and body
/// frames and settles it. ``AMQPHandler`` carries the actions out on a channel.
struct AMQPConnectionStateMachine {
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
        /// Consumes `queue`, at most `prefetch` messages unacknowledged (the driver hands each
        /// message to the ingress).
        case consumer(queue: String, prefetch: UInt16)
    }

    enum Action: Equatable {
        /// Write these and flush.
        case send([AMQPOutgoing])
        /// The handshake is done: confirms are selected, or the consumer is consuming.
        case ready
        /// Heartbeats were agreed: call ``heartbeatTick(now:)`` every `interval` nanoseconds.
        case startHeartbeats(intervalNanoseconds: UInt64)
        /// A publish's outcome: the broker's confirm, a nack, a return, a timeout, the connection's loss.
        case complete(tag: UInt64, DeliveryOutcome)
        /// Consumer: a whole message for the ingress (body nil: larger than an ingress reads).
        case deliver(tag: UInt64, body: [UInt8]?)
        /// Close the connection (after sending what came before this action).
        case close
        /// The connection closed before the handshake completed, for this reason.
        case handshakeFailed(String)
    }

    /// What ``publish(exchange:routingKey:persistent:mandatory:body:)`` decided.
    enum PublishDecision: Equatable {
        /// Write it (unflushed); its confirm is awaited under `tag`, for at most the confirm timeout.
        case send(tag: UInt64, AMQPOutgoing)
        /// Not connected (any more): fail the delivery with the reason.
        case refuse(String)
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

    let settings: Settings
    private var phase = Phase.handshake
    /// The frame size agreed in `connection.tune` (a body is cut into frames of this size).
    private(set) var frameMax = 131_072
    private var nextTag: UInt64 = 1
    /// Publishes awaiting their confirm.
    private var pending: Set<UInt64> = []
    private var heartbeatLimit: UInt64 = 0
    private var lastReceived: UInt64 = 0
    private(set) var closeReason = "connection closed"
    /// A `basic.return` whose content header has not arrived yet: its reply code and text.
    private var returning: (code: UInt16, text: String)?
    /// Delivery tags the broker returned as unroutable; their confirm fails the delivery.
    private var returned: [UInt64: String] = [:]
    /// Consumer: the message whose frames are arriving.
    private var incoming: Incoming?
    /// Consumer: the tag the broker gave the consumer (`basic.consume-ok`), to cancel it.
    private var consumerTag = ""
    /// Consumer: messages handed over and not yet settled.
    private(set) var unsettled = 0

    init(settings: Settings) { self.settings = settings }

    var isReady: Bool { phase == .ready }
    var pendingConfirms: Int { pending.count }

    /// The connection is up: the protocol header opens the handshake.
    mutating func connected(now: UInt64) -> Action {
        lastReceived = now
        return .send([.protocolHeader])
    }

    /// Bytes arrived (whatever they were): the broker is alive.
    mutating func bytesReceived(now: UInt64) { lastReceived = now }

    /// One whole frame from the broker.
    mutating func received(_ frame: AMQP.Frame) -> [Action] {
        do throws(AMQPError) { return try handle(frame) } catch { return failed(error.description) }
    }

    /// Something below AMQP failed (a bad frame, TLS): close with that reason.
    mutating func failed(_ reason: String) -> [Action] {
        closeReason = reason
        return [.close]
    }

    private mutating func handle(_ frame: AMQP.Frame) throws(AMQPError) -> [Action] {
        if frame.type == AMQP.FrameType.header.rawValue, let reply = returning {
            returning = nil
            var header = frame.payload
            if let tag = AMQP.returnedDeliveryTag(header: &header) {
                returned[tag] = "unroutable: \(reply.code) \(reply.text)"
            }
            return []
        }
        if frame.type == AMQP.FrameType.header.rawValue || frame.type == AMQP.FrameType.body.rawValue,
            incoming != nil
        {
            return try assemble(frame)
        }
        guard frame.type == AMQP.FrameType.method.rawValue else { return [] }  // heartbeats; returned bodies
        var payload = frame.payload
        guard let classID = payload.readInteger(as: UInt16.self), let methodID = payload.readInteger(as: UInt16.self)
        else { throw AMQPError("short method frame") }
        switch AMQPMethod(classID: classID, methodID: methodID) {
        case .connectionStart:
            let consumer = if case .consumer = settings.role { true } else { false }
            return [
                .send([.startOk(user: settings.user, password: settings.password, consumerCancelNotify: consumer)])
            ]
        case .connectionTune:
            let channelMax = payload.readInteger(as: UInt16.self) ?? 0
            let serverFrameMax = payload.readInteger(as: UInt32.self) ?? 0
            let serverHeartbeat = payload.readInteger(as: UInt16.self) ?? 0
            if serverFrameMax > 0 { frameMax = Int(min(serverFrameMax, 131_072)) }
            let heartbeat =
                serverHeartbeat == 0
                ? settings.heartbeat
                : settings.heartbeat == 0 ? 0 : min(serverHeartbeat, settings.heartbeat)
            var actions: [Action] = [
                .send([
                    .tuneOk(
                        channelMax: channelMax == 0 ? 1 : min(channelMax, 1), frameMax: UInt32(frameMax),
                        heartbeat: heartbeat),
                    .connectionOpen(vhost: settings.vhost),
                ])
            ]
            if heartbeat > 0 {
                heartbeatLimit = UInt64(heartbeat) * 2_000_000_000
                actions.append(.startHeartbeats(intervalNanoseconds: UInt64(heartbeat) * 500_000_000))
            }
            return actions
        case .connectionOpenOk:
            return [.send([.channelOpen])]
        case .channelOpenOk:
            switch settings.role {
            case .publisher: return [.send([.confirmSelect])]
            case .consumer(_, let prefetch): return [.send([.qos(prefetch: prefetch)])]
            }
        case .confirmSelectOk:
            phase = .ready
            return [.ready]
        case .basicQosOk:
            guard case .consumer(let queue, _) = settings.role else { return [] }
            return [.send([.consume(queue: queue)])]
        case .basicConsumeOk:
            consumerTag = payload.readShortString() ?? ""
            phase = .ready
            return [.ready]
        case .basicDeliver:
            guard case .consumer = settings.role, payload.readShortString() != nil,
                let tag = payload.readInteger(as: UInt64.self)
            else { throw AMQPError("malformed basic.deliver") }
            incoming = Incoming(tag: tag)
            return []
        case .basicCancel:
            return failed("broker cancelled the consumer (queue deleted?)")
        case .basicAck, .basicNack:
            let tag = payload.readInteger(as: UInt64.self) ?? 0
            let multiple = (payload.readInteger(as: UInt8.self) ?? 0) & 1 == 1
            let tags = multiple ? pending.filter { $0 <= tag }.sorted() : [tag]
            return tags.compactMap { confirmed in
                if let unroutable = returned.removeValue(forKey: confirmed) {
                    return complete(confirmed, .failed(DeliveryFailure(.subscriberFailed, unroutable)))
                } else if methodID == AMQPMethod.basicAck.methodID {
                    return complete(confirmed, .delivered)
                } else {
                    return complete(
                        confirmed, .failed(DeliveryFailure(.subscriberFailed, "broker nacked the message")))
                }
            }
        case .basicReturn:
            let code = payload.readInteger(as: UInt16.self) ?? 0
            returning = (code, payload.readShortString() ?? "")
            return []
        case .connectionClose, .channelClose:
            let code = payload.readInteger(as: UInt16.self) ?? 0
            let text = payload.readShortString() ?? ""
            let connection = classID == AMQPMethod.connectionClose.classID
            closeReason = "broker closed the \(connection ? "connection" : "channel"): \(code) \(text)"
            return [.send([connection ? .connectionCloseOk : .channelCloseOk]), .close]
        case nil:
            return []  // nothing else concerns evi
        }
    }

    /// Numbers one publish; its confirm is awaited until ``confirmTimedOut(tag:)``.
    mutating func publish(exchange: String, routingKey: String, persistent: Bool, mandatory: Bool, body: [UInt8])
        -> PublishDecision
    {
        guard phase == .ready else { return .refuse(closeReason) }
        let tag = nextTag
        nextTag += 1
        pending.insert(tag)
        return .send(
            tag: tag,
            .publish(
                AMQPOutgoing.Publish(
                    exchange: exchange, routingKey: routingKey, persistent: persistent, mandatory: mandatory,
                    tag: tag, body: body)))
    }

    /// The confirm timeout of `tag` passed: fails it, unless the broker answered first.
    mutating func confirmTimedOut(tag: UInt64) -> Action? {
        complete(tag, .failed(DeliveryFailure(.subscriberFailed, "confirm timeout")))
    }

    private mutating func complete(_ tag: UInt64, _ outcome: DeliveryOutcome) -> Action? {
        returned.removeValue(forKey: tag)
        guard pending.remove(tag) != nil else { return nil }
        return .complete(tag: tag, outcome)
    }

    /// A heartbeat interval passed: one is sent, or the connection closes when the broker has
    /// been silent for two heartbeats.
    mutating func heartbeatTick(now: UInt64) -> [Action] {
        if now &- lastReceived > heartbeatLimit { return failed("missed heartbeats") }
        return [.send([.heartbeat])]
    }

    // MARK: Consumer

    /// A content header or body frame of the message in `incoming`; the last one hands it over.
    private mutating func assemble(_ frame: AMQP.Frame) throws(AMQPError) -> [Action] {
        guard var message = incoming, case .consumer = settings.role else { return [] }
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
            return []
        }
        incoming = nil
        unsettled += 1
        return [.deliver(tag: message.tag, body: message.oversized ? nil : message.body)]
    }

    /// Acks (`basic.ack`), rejects without requeueing (`basic.reject`, so that a dead-letter
    /// exchange takes it) or requeues one delivery. Nothing once the connection is gone: the
    /// broker has put the message back already, and its tag means nothing on another connection.
    mutating func settle(tag: UInt64, as settlement: AMQPDelivery.Settlement) -> AMQPOutgoing? {
        guard phase == .ready else { return nil }
        unsettled -= 1
        return settlement == .ack ? .ack(tag: tag) : .reject(tag: tag, requeue: settlement == .requeue)
    }

    /// Asks the broker to stop delivering (`basic.cancel`); what it sent already still arrives.
    func cancelConsumer() -> AMQPOutgoing? {
        guard phase == .ready, !consumerTag.isEmpty else { return nil }
        return .cancel(consumerTag: consumerTag)
    }

    /// The connection closed: a handshake in progress fails, and every publish awaiting its
    /// confirm fails with the reason.
    mutating func closed() -> [Action] {
        var actions: [Action] = []
        if phase == .handshake {
            let reason =
                closeReason == "connection closed"
                ? "connection closed during the handshake (wrong credentials or vhost?)" : closeReason
            actions.append(.handshakeFailed(reason))
        }
        phase = .closed
        for tag in pending.sorted() {
            if let action = complete(
                tag,
                .failed(DeliveryFailure(.subscriberFailed, "connection lost before the confirm (\(closeReason))")))
            {
                actions.append(action)
            }
        }
        return actions
    }
}

/// The methods evi reads, by AMQP class and method id.
enum AMQPMethod: CaseIterable {
    case connectionStart, connectionTune, connectionOpenOk, connectionClose
    case channelOpenOk, channelClose
    case confirmSelectOk
    case basicQosOk, basicConsumeOk, basicCancel, basicDeliver, basicReturn, basicAck, basicNack

    var classID: UInt16 {
        switch self {
        case .connectionStart, .connectionTune, .connectionOpenOk, .connectionClose: 10
        case .channelOpenOk, .channelClose: 20
        case .confirmSelectOk: 85
        case .basicQosOk, .basicConsumeOk, .basicCancel, .basicDeliver, .basicReturn, .basicAck, .basicNack: 60
        }
    }

    var methodID: UInt16 {
        switch self {
        case .connectionStart: 10
        case .connectionTune: 30
        case .connectionOpenOk: 41
        case .connectionClose: 50
        case .channelOpenOk: 11
        case .channelClose: 40
        case .confirmSelectOk: 11
        case .basicQosOk: 11
        case .basicConsumeOk: 21
        case .basicCancel: 30
        case .basicDeliver: 60
        case .basicReturn: 50
        case .basicAck: 80
        case .basicNack: 120
        }
    }

    init?(classID: UInt16, methodID: UInt16) {
        guard let method = Self.allCases.first(where: { $0.classID == classID && $0.methodID == methodID })
        else { return nil }
        self = method
    }
}

/// What evi sends, encoded by ``write(into:frameMax:)``.
enum AMQPOutgoing: Equatable {
    struct Publish: Equatable {
        var exchange: String
        var routingKey: String
        var persistent: Bool
        var mandatory: Bool
        var tag: UInt64
        var body: [UInt8]
    }

    case protocolHeader
    case startOk(user: String, password: String, consumerCancelNotify: Bool)
    case tuneOk(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16)
    case connectionOpen(vhost: String)
    case channelOpen
    case confirmSelect
    case qos(prefetch: UInt16)
    case consume(queue: String)
    case connectionCloseOk
    case channelCloseOk
    case publish(Publish)
    case ack(tag: UInt64)
    case reject(tag: UInt64, requeue: Bool)
    case cancel(consumerTag: String)
    case heartbeat

    func write(into buffer: inout ByteBuffer, frameMax: Int) {
        switch self {
        case .protocolHeader:
            buffer.writeBytes(AMQP.protocolHeader)
        case .startOk(let user, let password, let consumerCancelNotify):
            AMQP.writeMethod(10, 11, channel: 0, into: &buffer) { arguments in
                // A consumer asks to be told (basic.cancel) when its queue goes away.
                arguments.writeTable(
                    [("product", "evi"), ("platform", "Swift")],
                    capabilities: consumerCancelNotify ? ["consumer_cancel_notify"] : [])
                arguments.writeShortString("PLAIN")
                arguments.writeLongString([0] + Array(user.utf8) + [0] + Array(password.utf8))
                arguments.writeShortString("en_US")
            }
        case .tuneOk(let channelMax, let frameMax, let heartbeat):
            AMQP.writeMethod(10, 31, channel: 0, into: &buffer) { arguments in
                arguments.writeInteger(channelMax)
                arguments.writeInteger(frameMax)
                arguments.writeInteger(heartbeat)
            }
        case .connectionOpen(let vhost):
            AMQP.writeMethod(10, 40, channel: 0, into: &buffer) { arguments in
                arguments.writeShortString(vhost)
                arguments.writeShortString("")
                arguments.writeInteger(UInt8(0))
            }
        case .channelOpen:
            AMQP.writeMethod(20, 10, channel: 1, into: &buffer) { $0.writeShortString("") }
        case .confirmSelect:
            AMQP.writeMethod(85, 10, channel: 1, into: &buffer) { $0.writeInteger(UInt8(0)) }
        case .qos(let prefetch):
            AMQP.writeMethod(60, 10, channel: 1, into: &buffer) { arguments in
                arguments.writeInteger(UInt32(0))  // prefetch-size: no limit in bytes
                arguments.writeInteger(prefetch)
                arguments.writeInteger(UInt8(0))  // global: per consumer
            }
        case .consume(let queue):
            AMQP.writeMethod(60, 20, channel: 1, into: &buffer) { arguments in
                arguments.writeInteger(UInt16(0))
                arguments.writeShortString(queue)
                arguments.writeShortString("")  // consumer tag: the broker's choice
                arguments.writeInteger(UInt8(0))  // no-local, no-ack, exclusive, no-wait: all off
                arguments.writeInteger(UInt32(0))  // arguments: an empty table
            }
        case .connectionCloseOk:
            AMQP.writeMethod(10, 51, channel: 0, into: &buffer)
        case .channelCloseOk:
            AMQP.writeMethod(20, 41, channel: 1, into: &buffer)
        case .publish(let publish):
            publish.write(into: &buffer, frameMax: frameMax)
        case .ack(let tag):
            AMQP.writeMethod(60, 80, channel: 1, into: &buffer) { arguments in
                arguments.writeInteger(tag)
                arguments.writeInteger(UInt8(0))  // not multiple
            }
        case .reject(let tag, let requeue):
            AMQP.writeMethod(60, 90, channel: 1, into: &buffer) { arguments in
                arguments.writeInteger(tag)
                arguments.writeInteger(UInt8(requeue ? 1 : 0))
            }
        case .cancel(let consumerTag):
            AMQP.writeMethod(60, 30, channel: 1, into: &buffer) { arguments in
                arguments.writeShortString(consumerTag)
                arguments.writeInteger(UInt8(0))
            }
        case .heartbeat:
            AMQP.writeFrame(type: .heartbeat, channel: 0, into: &buffer) { _ in }
        }
    }
}

extension AMQPOutgoing.Publish {
    /// `basic.publish`, its content header, and the body in frames of at most `frameMax`.
    func write(into buffer: inout ByteBuffer, frameMax: Int) {
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
            header.writeInteger(UInt16(0x8000 | (persistent ? 0x1000 : 0) | (mandatory ? AMQP.messageIDFlag : 0)))
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
    }
}
