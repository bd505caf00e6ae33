import EventInterface
import NIOCore
import Testing

@testable import EventRabbitMQ

/// The AMQP connection logic with frames as values and time as numbers: no socket, no broker.
@Suite struct AMQPConnectionStateMachineTests {
    typealias Machine = AMQPConnectionStateMachine

    static func settings(_ role: Machine.Role = .publisher, heartbeat: UInt16 = 60) -> Machine.Settings {
        Machine.Settings(
            user: "guest", password: "pw", vhost: "/", heartbeat: heartbeat, confirmTimeout: .seconds(5), role: role)
    }

    /// A method frame from the broker, as it would arrive.
    static func method(
        _ method: AMQPMethod, channel: UInt16 = 1, _ arguments: (inout ByteBuffer) -> Void = { _ in }
    ) -> AMQP.Frame {
        var buffer = ByteBuffer()
        AMQP.writeMethod(method.classID, method.methodID, channel: channel, into: &buffer, arguments: arguments)
        return try! #require(try AMQP.readFrame(&buffer))
    }

    static func frame(_ type: AMQP.FrameType, _ payload: (inout ByteBuffer) -> Void) -> AMQP.Frame {
        var buffer = ByteBuffer()
        AMQP.writeFrame(type: type, channel: 1, into: &buffer, payload: payload)
        return try! #require(try AMQP.readFrame(&buffer))
    }

    static func tune(frameMax: UInt32 = 131_072, heartbeat: UInt16 = 30) -> AMQP.Frame {
        method(.connectionTune, channel: 0) {
            $0.writeInteger(UInt16(2047))
            $0.writeInteger(frameMax)
            $0.writeInteger(heartbeat)
        }
    }

    static func ack(_ tag: UInt64, multiple: Bool = false, nack: Bool = false) -> AMQP.Frame {
        method(nack ? .basicNack : .basicAck) {
            $0.writeInteger(tag)
            $0.writeInteger(UInt8(multiple ? 1 : 0))
        }
    }

    /// A publisher through the whole handshake.
    static func readyPublisher() -> Machine {
        var machine = Machine(settings: settings())
        _ = machine.connected(now: 0)
        _ = machine.received(method(.connectionStart, channel: 0))
        _ = machine.received(tune())
        _ = machine.received(method(.connectionOpenOk, channel: 0))
        _ = machine.received(method(.channelOpenOk))
        _ = machine.received(method(.confirmSelectOk))
        return machine
    }

    static func publish(_ machine: inout Machine, mandatory: Bool = false) -> UInt64? {
        guard
            case .send(let tag, _) = machine.publish(
                exchange: "", routingKey: "q", persistent: true, mandatory: mandatory, body: Array("{}".utf8))
        else { return nil }
        return tag
    }

    @Test func aPublishersHandshakeEndsWithConfirmsSelected() {
        var machine = Machine(settings: Self.settings())
        #expect(machine.connected(now: 0) == .send([.protocolHeader]))
        #expect(
            machine.received(Self.method(.connectionStart, channel: 0))
                == [.send([.startOk(user: "guest", password: "pw", consumerCancelNotify: false)])])
        #expect(
            machine.received(Self.tune(frameMax: 4096, heartbeat: 30)) == [
                .send([.tuneOk(channelMax: 1, frameMax: 4096, heartbeat: 30), .connectionOpen(vhost: "/")]),
                .startHeartbeats(intervalNanoseconds: 15_000_000_000),
            ])
        #expect(machine.frameMax == 4096)
        #expect(machine.received(Self.method(.connectionOpenOk, channel: 0)) == [.send([.channelOpen])])
        #expect(machine.received(Self.method(.channelOpenOk)) == [.send([.confirmSelect])])
        #expect(!machine.isReady)
        #expect(machine.received(Self.method(.confirmSelectOk)) == [.ready])
        #expect(machine.isReady)
    }

    @Test func theHeartbeatIsTheSmallerOfTheTwoAndZeroIfEitherDisables() {
        var ours = Machine(settings: Self.settings(heartbeat: 10))
        #expect(ours.received(Self.tune(heartbeat: 60)).contains(.startHeartbeats(intervalNanoseconds: 5_000_000_000)))
        var off = Machine(settings: Self.settings(heartbeat: 0))
        let actions = off.received(Self.tune(heartbeat: 60))
        #expect(
            actions == [.send([.tuneOk(channelMax: 1, frameMax: 131_072, heartbeat: 0), .connectionOpen(vhost: "/")])])
        var theirsOff = Machine(settings: Self.settings(heartbeat: 20))
        #expect(
            theirsOff.received(Self.tune(heartbeat: 0)).contains(.startHeartbeats(intervalNanoseconds: 10_000_000_000)))
    }

    @Test func aSilentBrokerIsLeftAfterTwoHeartbeats() {
        var machine = Machine(settings: Self.settings())
        _ = machine.connected(now: 0)
        _ = machine.received(Self.tune(heartbeat: 10))
        #expect(machine.heartbeatTick(now: 5_000_000_000) == [.send([.heartbeat])])
        machine.bytesReceived(now: 6_000_000_000)
        #expect(machine.heartbeatTick(now: 25_000_000_000) == [.send([.heartbeat])])
        #expect(machine.heartbeatTick(now: 26_000_000_001) == [.close])
        #expect(machine.closeReason == "missed heartbeats")
    }

    @Test func aConsumersHandshakeSetsPrefetchAndConsumes() {
        var machine = Machine(settings: Self.settings(.consumer(queue: "events", prefetch: 16)))
        _ = machine.connected(now: 0)
        #expect(
            machine.received(Self.method(.connectionStart, channel: 0))
                == [.send([.startOk(user: "guest", password: "pw", consumerCancelNotify: true)])])
        _ = machine.received(Self.tune())
        _ = machine.received(Self.method(.connectionOpenOk, channel: 0))
        #expect(machine.received(Self.method(.channelOpenOk)) == [.send([.qos(prefetch: 16)])])
        #expect(machine.received(Self.method(.basicQosOk)) == [.send([.consume(queue: "events")])])
        #expect(machine.cancelConsumer() == nil)
        #expect(machine.received(Self.method(.basicConsumeOk) { $0.writeShortString("ctag-1") }) == [.ready])
        #expect(machine.cancelConsumer() == .cancel(consumerTag: "ctag-1"))
    }

    @Test func publishesAreNumberedAndCompletedByAcksAndNacks() {
        var machine = Self.readyPublisher()
        let tags = (0..<4).compactMap { _ in Self.publish(&machine) }
        #expect(tags == [1, 2, 3, 4])
        #expect(
            machine.received(Self.ack(2, multiple: true)) == [
                .complete(tag: 1, .delivered), .complete(tag: 2, .delivered),
            ])
        #expect(
            machine.received(Self.ack(3, nack: true))
                == [.complete(tag: 3, .failed(DeliveryFailure(.subscriberFailed, "broker nacked the message")))])
        #expect(machine.received(Self.ack(3)) == [], "a tag is completed once")
        #expect(machine.pendingConfirms == 1)
    }

    @Test func aConfirmTimeoutFailsOnlyAnUnansweredPublish() {
        var machine = Self.readyPublisher()
        let first = Self.publish(&machine) ?? 0
        let second = Self.publish(&machine) ?? 0
        _ = machine.received(Self.ack(first))
        #expect(machine.confirmTimedOut(tag: first) == nil)
        #expect(
            machine.confirmTimedOut(tag: second)
                == .complete(tag: second, .failed(DeliveryFailure(.subscriberFailed, "confirm timeout"))))
    }

    @Test func aReturnedMandatoryPublishFailsAtItsConfirm() {
        var machine = Self.readyPublisher()
        let tag = Self.publish(&machine, mandatory: true) ?? 0
        _ = machine.received(
            Self.method(.basicReturn) {
                $0.writeInteger(UInt16(312))
                $0.writeShortString("NO_ROUTE")
                $0.writeShortString("")
                $0.writeShortString("q")
            })
        _ = machine.received(
            Self.frame(.header) { header in
                header.writeInteger(UInt16(60))
                header.writeInteger(UInt16(0))
                header.writeInteger(UInt64(2))
                header.writeInteger(UInt16(0x8000 | AMQP.messageIDFlag))
                header.writeShortString("application/json")
                header.writeShortString(AMQP.messageID(tag))
            })
        #expect(
            machine.received(Self.ack(tag))
                == [.complete(tag: tag, .failed(DeliveryFailure(.subscriberFailed, "unroutable: 312 NO_ROUTE")))])
    }

    @Test func beforeTheHandshakeAPublishIsRefused() {
        var machine = Machine(settings: Self.settings())
        #expect(
            machine.publish(exchange: "", routingKey: "q", persistent: false, mandatory: false, body: [])
                == .refuse("connection closed"))
    }

    @Test func theBrokerClosingTheChannelIsAnsweredAndFailsWhatIsPending() {
        var machine = Self.readyPublisher()
        let tag = Self.publish(&machine) ?? 0
        #expect(
            machine.received(
                Self.method(.channelClose) {
                    $0.writeInteger(UInt16(404))
                    $0.writeShortString("NOT_FOUND - no exchange 'x'")
                }) == [.send([.channelCloseOk]), .close])
        let reason = "broker closed the channel: 404 NOT_FOUND - no exchange 'x'"
        #expect(
            machine.closed() == [
                .complete(
                    tag: tag,
                    .failed(DeliveryFailure(.subscriberFailed, "connection lost before the confirm (\(reason))")))
            ])
        #expect(
            machine.publish(exchange: "", routingKey: "q", persistent: false, mandatory: false, body: [])
                == .refuse(reason))
    }

    @Test func aClosedHandshakeSaysWhatIsLikelyWrong() {
        var machine = Machine(settings: Self.settings())
        _ = machine.connected(now: 0)
        _ = machine.received(Self.method(.connectionStart, channel: 0))
        #expect(
            machine.closed() == [
                .handshakeFailed("connection closed during the handshake (wrong credentials or vhost?)")
            ])
    }

    @Test func aConsumerAssemblesAMessageFromItsFramesAndSettlesIt() {
        var machine = Machine(settings: Self.settings(.consumer(queue: "q", prefetch: 1)))
        for frame in [
            Self.method(.connectionStart, channel: 0), Self.tune(frameMax: 4096),
            Self.method(.connectionOpenOk, channel: 0),
            Self.method(.channelOpenOk), Self.method(.basicQosOk),
            Self.method(.basicConsumeOk) { $0.writeShortString("c") },
        ] {
            _ = machine.received(frame)
        }
        let body = Array(#"{"jsonrpc":"2.0","method":"E","params":{}}"#.utf8)
        #expect(
            machine.received(
                Self.method(.basicDeliver) {
                    $0.writeShortString("c")
                    $0.writeInteger(UInt64(7))
                }) == [])
        #expect(
            machine.received(
                Self.frame(.header) {
                    $0.writeInteger(UInt16(60))
                    $0.writeInteger(UInt16(0))
                    $0.writeInteger(UInt64(body.count))
                    $0.writeInteger(UInt16(0))
                }) == [])
        #expect(machine.received(Self.frame(.body) { $0.writeBytes(body[..<10]) }) == [])
        #expect(machine.received(Self.frame(.body) { $0.writeBytes(body[10...]) }) == [.deliver(tag: 7, body: body)])
        #expect(machine.unsettled == 1)
        #expect(machine.settle(tag: 7, as: .ack) == .ack(tag: 7))
        #expect(machine.unsettled == 0)
        #expect(machine.settle(tag: 8, as: .requeue) == .reject(tag: 8, requeue: true))
    }

    @Test func aBodyLargerThanItsHeaderSaidClosesTheConnection() {
        var machine = Machine(settings: Self.settings(.consumer(queue: "q", prefetch: 1)))
        _ = machine.received(
            Self.method(.basicDeliver) {
                $0.writeShortString("c")
                $0.writeInteger(UInt64(1))
            })
        _ = machine.received(
            Self.frame(.header) {
                $0.writeInteger(UInt16(60))
                $0.writeInteger(UInt16(0))
                $0.writeInteger(UInt64(2))
                $0.writeInteger(UInt16(0))
            })
        #expect(machine.received(Self.frame(.body) { $0.writeBytes([1, 2, 3]) }) == [.close])
        #expect(machine.closeReason == "body larger than its content header said")
    }

    @Test func theBrokerCancellingTheConsumerClosesWithTheReason() {
        var machine = Machine(settings: Self.settings(.consumer(queue: "q", prefetch: 1)))
        #expect(machine.received(Self.method(.basicCancel) { $0.writeShortString("c") }) == [.close])
        #expect(machine.closeReason == "broker cancelled the consumer (queue deleted?)")
    }

    @Test func aBodyIsCutIntoFramesOfTheAgreedSize() throws {
        let publish = AMQPOutgoing.Publish(
            exchange: "", routingKey: "q", persistent: false, mandatory: false, tag: 1,
            body: [UInt8](repeating: 7, count: 100))
        var buffer = ByteBuffer()
        publish.write(into: &buffer, frameMax: 48)
        var types: [UInt8] = []
        var sizes: [Int] = []
        while let frame = try AMQP.readFrame(&buffer) {
            types.append(frame.type)
            sizes.append(frame.payload.readableBytes)
        }
        #expect(types == [1, 2, 3, 3, 3])
        #expect(sizes.suffix(3) == [40, 40, 20])
    }
}
