import EventInterface
import EventInterfaceTestKit
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import EventRabbitMQ

/// The AMQP driver on an `EmbeddedChannel`: frames in, bytes out, timers on the embedded loop's
/// clock. The decisions are the state machine's (its own tests); these check they are carried out.
@Suite struct AMQPHandlerTests {
    typealias Frames = AMQPConnectionStateMachineTests

    struct Harness {
        let channel: EmbeddedChannel
        let handler: AMQPHandler
        let ready: EventLoopPromise<Void>
        let closed: Counter

        init(
            _ role: AMQPConnectionStateMachine.Role = .publisher, deliver: (@Sendable (AMQPDelivery) -> Void)? = nil
        ) throws {
            channel = EmbeddedChannel()
            ready = channel.eventLoop.makePromise()
            let closed = Counter()
            self.closed = closed
            handler = AMQPHandler(
                settings: AMQPHandler.Settings(
                    user: "guest", password: "pw", vhost: "/", heartbeat: 10, confirmTimeout: .seconds(5), role: role),
                deliver: deliver, ready: ready, onClose: { _ in closed.add() })
            try channel.pipeline.syncOperations.addHandler(handler)
        }

        var context: ChannelHandlerContext {
            get throws { try channel.pipeline.syncOperations.context(handlerType: AMQPHandler.self) }
        }

        func receive(_ frames: AMQP.Frame...) throws {
            var buffer = ByteBuffer()
            for frame in frames {
                buffer.writeInteger(frame.type)
                buffer.writeInteger(frame.channel)
                buffer.writeInteger(UInt32(frame.payload.readableBytes))
                buffer.writeImmutableBuffer(frame.payload)
                buffer.writeInteger(AMQP.frameEnd)
            }
            try channel.writeInbound(buffer)
        }

        /// Every frame written so far, as (type, class, method) of method frames or the type alone.
        func written() throws -> [String] {
            var names: [String] = []
            while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
                if buffer.readableBytesView.starts(with: AMQP.protocolHeader) {
                    names.append("header")
                    buffer.moveReaderIndex(forwardBy: AMQP.protocolHeader.count)
                }
                while var frame = try AMQP.readFrame(&buffer) {
                    if frame.type == 1, let c = frame.payload.readInteger(as: UInt16.self),
                        let m = frame.payload.readInteger(as: UInt16.self)
                    {
                        names.append("\(c).\(m)")
                    } else {
                        names.append("type \(frame.type)")
                    }
                }
            }
            return names
        }

        func handshake() throws {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
            try receive(
                Frames.method(.connectionStart, channel: 0), Frames.tune(heartbeat: 10),
                Frames.method(.connectionOpenOk, channel: 0), Frames.method(.channelOpenOk),
                Frames.method(.confirmSelectOk))
        }
    }

    @Test func theHandshakeIsWrittenAndReadyCompletes() throws {
        let harness = try Harness()
        try harness.handshake()
        #expect(try harness.written() == ["header", "10.11", "10.31", "10.40", "20.10", "85.10"])
        try harness.ready.futureResult.wait()
        _ = try harness.channel.finish()
    }

    @Test func aPublishIsWrittenAndCompletedByTheBrokersAck() throws {
        let harness = try Harness()
        try harness.handshake()
        _ = try harness.written()
        let outcome = harness.handler.publish(
            context: try harness.context, exchange: "", routingKey: "q", persistent: true, mandatory: false,
            body: Array("{}".utf8))
        harness.handler.flush(context: try harness.context)
        #expect(try harness.written() == ["60.40", "type 2", "type 3"])
        try harness.receive(Frames.ack(1))
        #expect(try outcome.wait() == .delivered)
        _ = try harness.channel.finish()
    }

    @Test func anUnansweredPublishFailsAtTheConfirmTimeout() throws {
        let harness = try Harness()
        try harness.handshake()
        let outcome = harness.handler.publish(
            context: try harness.context, exchange: "", routingKey: "q", persistent: false, mandatory: false, body: [])
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        harness.channel.embeddedEventLoop.run()
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(try outcome.wait() == .failed(DeliveryFailure(.subscriberFailed, "confirm timeout")))
        _ = try harness.channel.finish()
    }

    @Test func heartbeatsAreSentAndASilentBrokerIsLeft() throws {
        let harness = try Harness()
        try harness.handshake()
        _ = try harness.written()
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(try harness.written() == ["type 8"])
        // Wall-clock silence is what the machine measures (its own test uses numbers): here, the
        // broker was heard a moment ago, so the next tick sends another heartbeat.
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(try harness.written() == ["type 8"])
        _ = try harness.channel.finish()
    }

    @Test func losingTheConnectionFailsPendingPublishesAndTellsTheOwner() throws {
        let harness = try Harness()
        try harness.handshake()
        let outcome = harness.handler.publish(
            context: try harness.context, exchange: "", routingKey: "q", persistent: false, mandatory: false, body: [])
        try harness.channel.close().wait()
        guard case .failed(let failure) = try outcome.wait() else {
            Issue.record("a pending publish survived the connection")
            return
        }
        #expect(failure.description.contains("connection lost before the confirm"))
        #expect(harness.closed.count == 1)
    }

    @Test func aConnectionClosedDuringTheHandshakeFailsReady() throws {
        let harness = try Harness()
        try harness.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
        try harness.receive(Frames.method(.connectionStart, channel: 0))
        try harness.channel.close().wait()
        #expect(throws: AMQPError.self) { try harness.ready.futureResult.wait() }
    }

    @Test func aBadFrameClosesTheChannel() throws {
        let harness = try Harness()
        try harness.handshake()
        var garbage = ByteBuffer()
        garbage.writeBytes([1, 0, 1, 0, 0, 0, 1, 0, 0x00])  // a frame whose end octet is wrong
        try harness.channel.writeInbound(garbage)
        #expect(!harness.channel.isActive)
        #expect(harness.closed.count == 1)
    }

    @Test func aConsumedMessageIsHandedOverAndItsAckWritten() throws {
        let deliveries = DeliveryBox()
        let harness = try Harness(.consumer(queue: "q", prefetch: 4)) { deliveries.add($0) }
        try harness.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 5672)).wait()
        try harness.receive(
            Frames.method(.connectionStart, channel: 0), Frames.tune(), Frames.method(.connectionOpenOk, channel: 0),
            Frames.method(.channelOpenOk), Frames.method(.basicQosOk),
            Frames.method(.basicConsumeOk) { $0.writeShortString("c") })
        #expect(try harness.written() == ["header", "10.11", "10.31", "10.40", "20.10", "60.10", "60.20"])
        try harness.receive(
            Frames.method(.basicDeliver) {
                $0.writeShortString("c")
                $0.writeInteger(UInt64(9))
            },
            Frames.frame(.header) {
                $0.writeInteger(UInt16(60))
                $0.writeInteger(UInt16(0))
                $0.writeInteger(UInt64(2))
                $0.writeInteger(UInt16(0))
            },
            Frames.frame(.body) { $0.writeBytes(Array("{}".utf8)) })
        let delivery = try #require(deliveries.all.first)
        #expect(delivery.body == Array("{}".utf8))
        #expect(harness.handler.unsettled == 1)
        delivery.settle(true)
        harness.channel.embeddedEventLoop.run()
        #expect(try harness.written() == ["60.80"])
        #expect(harness.handler.unsettled == 0)
        _ = try harness.channel.finish()
    }
}

final class DeliveryBox: Sendable {
    private let deliveries = Mutex<[AMQPDelivery]>([])
    func add(_ delivery: AMQPDelivery) { deliveries.withLock { $0.append(delivery) } }
    var all: [AMQPDelivery] { deliveries.withLock { $0 } }
}
