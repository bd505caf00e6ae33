import EventDatagram
import EventDatagramTestKit
import EventFlatstore
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Foundation
import NIOCore
import Testing

@testable import EventRabbitMQ

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The private broker `scripts/test.sh` started for these tests (`scripts/rabbitmq.sh`): its AMQP
/// port and data directory. Never the machine's own broker on 5672.
enum TestBroker {
    static var port: Int { get throws { try number(environment("EVI_RABBITMQ_PORT")) } }
    /// Its amqps listener, and the directory of the CA and certificates scripts/rabbitmq.sh made.
    static var tlsPort: Int { get throws { try number(environment("EVI_RABBITMQ_TLS_PORT")) } }
    static var certificates: String { get throws { try environment("EVI_RABBITMQ_DIR") + "/tls" } }

    private static func environment(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name] else {
            throw ReceiverError("\(name) is not set: run the tests with scripts/test.sh, which starts a private broker")
        }
        return value
    }

    private static func number(_ text: String) throws -> Int {
        guard let port = Int(text) else { throw ReceiverError("not a port: \(text)") }
        return port
    }
}

/// A consumer written with `pika` (a real third-party AMQP client): declares a queue (bound to
/// an exchange when given), prints "ready", then one JSON line per message with its body,
/// exchange, routing key, content type and delivery mode.
final class PikaConsumer: @unchecked Sendable {
    let directory = TemporaryDirectory(prefix: "evi-pika")
    let child: ChildProcess

    static let script = """
        import json, sys, pika
        queue, exchange, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.queue_delete(queue=queue)  # whatever an earlier run left, with whatever arguments
        channel.queue_declare(queue=queue, auto_delete=True)
        if exchange:
            channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)
        print("ready", flush=True)
        for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=60):
            if method is None:
                break
            print(json.dumps({"body": body.decode(), "exchange": method.exchange, "routing_key": method.routing_key,
                              "content_type": properties.content_type, "delivery_mode": properties.delivery_mode}), flush=True)
        """

    init(queue: String, exchange: String = "", key: String = "") async throws {
        let python = repositoryRoot.appendingPathComponent(".venv/bin/python3").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ReceiverError("\(python) is missing: run scripts/test.sh, which installs pika")
        }
        let script = directory.file("consume.py")
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        child = try ChildProcess(
            executable: python, arguments: [script, queue, exchange, key, String(try TestBroker.port)],
            directory: directory.path,
            outputPath: directory.file("out"), errorPath: directory.file("err"))
        guard await eventually(timeout: .seconds(20), { self.child.output.hasPrefix("ready") }) else {
            throw ReceiverError(
                "pika consumer did not start (is the test broker up? scripts/test.sh starts it): \(child.errors)")
        }
    }

    var messages: [[String: Any]] {
        child.output.split(separator: "\n").dropFirst().compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func waitFor(count: Int, timeout: Duration = .seconds(10)) async -> [[String: Any]] {
        _ = await eventually(timeout: timeout) { self.messages.count >= count }
        return messages
    }

    func stop() async {
        child.signal(SIGKILL)
        _ = await child.waitForExit(timeout: .seconds(5))
        directory.remove()
    }
}

func makeHub(flatstore: Bool = false, failoverTimeout: Double = 30) throws -> EventHub {
    var transports: [any EventTransport] = [
        RabbitMQTransport(), UDPTransport(), UnixTransport(), VirtualTransport(failoverTimeout: failoverTimeout),
    ]
    if flatstore { transports.append(FlatstoreTransport()) }
    let hub = EventHub(transports: transports)
    try hub.publish("E_PIKE_BLOCKED")
    return hub
}

func lines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

/// The real broker (Debian's rabbitmq-server, a private one on a free port started by
/// scripts/test.sh) and pika. Serialized: one test stops and restarts the broker.
@Suite(.serialized) struct RabbitMQTests {
    @Test func theFoundingExampleWorksAsWritten() async throws {
        let directory = TemporaryDirectory(prefix: "evi-seed")
        defer { directory.remove() }
        let consumer = try await PikaConsumer(queue: "pike")
        let hub = try makeHub(flatstore: true)
        let log = directory.file("opensips_proxy.log")
        let port = try TestBroker.port
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED",
            socket: "virtual:PARALLEL rabbitmq:guest:guest@127.0.0.1:\(port)/pike flatstore:\(log)")
        #expect(
            try hub.subscribers(of: "E_PIKE_BLOCKED").first?.socket
                == "virtual:PARALLEL rabbitmq:guest@127.0.0.1:\(port)/pike flatstore:\(log)")
        try hub.raise("E_PIKE_BLOCKED", ["ip": "10.0.0.1", "count": 42])
        let got = await consumer.waitFor(count: 1)
        #expect(
            got.first?["body"] as? String
                == #"{"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"10.0.0.1","count":42}}"#)
        #expect(got.first?["exchange"] as? String == "")
        #expect(got.first?["routing_key"] as? String == "pike")
        #expect(got.first?["content_type"] as? String == "application/json")
        #expect(got.first?["delivery_mode"] is NSNull)
        #expect(await eventually { lines(log) == ["E_PIKE_BLOCKED,10.0.0.1,42"] })
        #expect(await eventually { hub.statistics.snapshot().transports["rabbitmq"]?.delivered == 1 })
        await hub.shutdown()
        await consumer.stop()
    }

    /// Publishing to a queue nobody declared: with `mandatory` (auto: on for the default exchange)
    /// the broker returns it, the delivery fails "unroutable" and FAILOVER moves the event on;
    /// with `mandatory: false` the broker confirms and drops it, and evi counts it delivered.
    @Test func anUnroutableMessageFailsAndFailoverMovesOn() async throws {
        let port = try TestBroker.port
        let backup = try DatagramReceiver()
        let hub = EventHub(transports: [RabbitMQTransport(), UDPTransport(), VirtualTransport(failoverTimeout: 30)])
        try hub.publish("E_PIKE_BLOCKED")
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED",
            socket: "virtual:FAILOVER rabbitmq:127.0.0.1:\(port)/evi_no_such_queue \(backup.socket)")
        try hub.raise("E_PIKE_BLOCKED", ["n": 1])
        #expect(await backup.waitFor(count: 1).count == 1)
        #expect(await eventually { hub.statistics.snapshot().transports["rabbitmq"]?.failed == 1 })
        let member = try hub.subscribers(of: "E_PIKE_BLOCKED").first?.members?.first
        #expect(member?.state == .failed)
        #expect(hub.statistics.snapshot().transports["rabbitmq"]?.delivered == 0)
        await hub.shutdown()

        let lax = EventHub(transports: [RabbitMQTransport(options: .init(mandatory: .false))])
        try lax.publish("E_PIKE_BLOCKED")
        try await lax.subscribe(event: "E_PIKE_BLOCKED", socket: "rabbitmq:127.0.0.1:\(port)/evi_no_such_queue")
        try lax.raise("E_PIKE_BLOCKED", ["n": 2])
        #expect(await eventually { lax.statistics.snapshot().transports["rabbitmq"]?.delivered == 1 })
        await lax.shutdown()
        await backup.close()
    }

    @Test func topicExchangeAndPersistent() async throws {
        let consumer = try await PikaConsumer(queue: "evi_topic_test", exchange: "amq.topic", key: "calls.*")
        let hub = try makeHub()
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED",
            socket: "rabbitmq:127.0.0.1:\(try TestBroker.port)/exchange=amq.topic;persistent?calls.ended")
        #expect(
            try hub.subscribers(of: "E_PIKE_BLOCKED").first?.socket
                == "rabbitmq:guest@127.0.0.1:\(try TestBroker.port)/exchange=amq.topic;persistent?calls.ended")
        for index in 1...20 { try hub.raise("E_PIKE_BLOCKED", ["n": .int(Int64(index))]) }
        let got = await consumer.waitFor(count: 20)
        #expect(got.count == 20)
        #expect(
            got.allSatisfy { $0["exchange"] as? String == "amq.topic" && $0["routing_key"] as? String == "calls.ended" }
        )
        #expect(got.allSatisfy { ($0["delivery_mode"] as? Int) == 2 })
        #expect(
            got.map { $0["body"] as? String ?? "" }
                == (1...20).map { #"{"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"n":\#($0)}}"# })
        await hub.shutdown()
        await consumer.stop()
    }

    @Test func socketSyntaxPrintingAndMatching() async throws {
        let hub = try makeHub()
        let printed: [(String, String)] = [
            ("rabbitmq:guest:guest@127.0.0.1:5672/pike", "rabbitmq:guest@127.0.0.1/pike"),
            ("rabbitmq:127.0.0.1/pike", "rabbitmq:guest@127.0.0.1/pike"),
            (
                "rabbitmq:u:s3cret@127.0.0.1:5673/persistent;vhost=v;exchange=x?k",
                "rabbitmq:u@127.0.0.1:5673/exchange=x;vhost=v;persistent?k"
            ),
        ]
        for (socket, canonical) in printed {
            try hub.publish("E_\(canonical.count)")
            try await hub.subscribe(event: "E_\(canonical.count)", socket: socket)
            #expect(try hub.subscribers(of: "E_\(canonical.count)").first?.socket == canonical)
        }
        #expect(try await hub.subscribe(event: "E_29", socket: "rabbitmq:guest:other@127.0.0.1/pike") == .refreshed)
        await expectRefused(
            [
                ("rabbitmq:127.0.0.1", "rabbitmq socket needs /ROUTING_KEY: rabbitmq:127.0.0.1"),
                ("rabbitmq:u:pw@127.0.0.1/", "rabbitmq socket needs a routing key: rabbitmq:u@127.0.0.1/"),
                (
                    "rabbitmq:u:pw@127.0.0.1/durable?k",
                    "unknown rabbitmq parameter 'durable' (exchange=NAME, vhost=NAME, persistent, tls, tls_domain=NAME): rabbitmq:u@127.0.0.1/durable?k"
                ),
                ("rabbitmq:u:pw@127.0.0.1:abc/k", "bad port 'abc' in rabbitmq:u@127.0.0.1:abc/k (expected 1-65535)"),
            ], event: "E_PIKE_BLOCKED", by: hub)
        await hub.shutdown()
    }

    @Test func subscriptionsToTheSameBrokerShareOneConnection() async throws {
        let transport = RabbitMQTransport()
        let hub = EventHub(transports: [transport])
        for name in ["E_A", "E_B", "E_C"] {
            try hub.publish(name)
            try await hub.subscribe(
                event: name, socket: "rabbitmq:guest:guest@127.0.0.1:\(try TestBroker.port)/\(name.lowercased())")
        }
        #expect(transport.connectionCount == 1)
        try hub.publish("E_D")
        try await hub.subscribe(event: "E_D", socket: "rabbitmq:other:pw@127.0.0.1:\(try TestBroker.port)/d")
        #expect(transport.connectionCount == 2)
        await hub.shutdown()
        #expect(transport.connectionCount == 0)
    }

    @Test func anUnreachableBrokerOrAWrongPasswordIsAcceptedFailsClearlyAndMovesOn() async throws {
        let hub = try makeHub()
        let probe = try JSONRPCTestServer(mode: .neverRead)
        let deadPort = probe.port
        probe.close()
        let backup = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED", socket: "virtual:FAILOVER rabbitmq:127.0.0.1:\(deadPort)/pike \(backup.socket)")
        try hub.publish("E_WRONG")
        let other = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_WRONG",
            socket: "virtual:FAILOVER rabbitmq:guest:wrong@127.0.0.1:\(try TestBroker.port)/pike \(other.socket)")
        for index in 1...3 {
            try hub.raise("E_PIKE_BLOCKED", ["n": .int(Int64(index))])
            try hub.raise("E_WRONG", ["n": .int(Int64(index))])
        }
        #expect(await backup.waitFor(count: 3).count == 3)
        #expect(await other.waitFor(count: 3).count == 3)
        #expect((hub.statistics.snapshot().transports["rabbitmq"]?.failed ?? 0) >= 2)
        let members = try hub.subscribers(of: "E_WRONG").first?.members ?? []
        #expect(members.first?.state == .failed)
        await backup.close()
        await other.close()
        await hub.shutdown()
    }

    @Test func brokerStoppedEventsFailOverAndAfterItsRestartEviDeliversAgainLosingNothing() async throws {
        let script = repositoryRoot.appendingPathComponent("scripts/rabbitmq.sh").path
        let consumer = try await PikaConsumer(queue: "evi_restart_test")
        let hub = try makeHub(failoverTimeout: 2)
        let backup = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED",
            socket: "virtual:FAILOVER rabbitmq:127.0.0.1:\(try TestBroker.port)/evi_restart_test \(backup.socket)")
        try hub.raise("E_PIKE_BLOCKED", ["n": 1])
        let beforeStop = await consumer.waitFor(count: 1)
        #expect(beforeStop.count == 1)
        await consumer.stop()

        #expect(try await run(["/bin/bash", script, "stop"]) == 0)
        _ = await eventually(timeout: .seconds(30)) { (try? run(["/bin/bash", script, "status"])) != 0 }
        for index in 2...4 { try hub.raise("E_PIKE_BLOCKED", ["n": .int(Int64(index))]) }
        #expect(await backup.waitFor(count: 3, timeout: .seconds(10)).count == 3)

        #expect(try await run(["/bin/bash", script, "start"]) == 0)
        let again = try await PikaConsumer(queue: "evi_restart_test")
        // evi is not restarted: its reconnection timer (at most 5 s between tries) finds the broker,
        // and once the member's failover mark (2 s here) runs out, events go to it again.
        var raised = 4
        while again.messages.isEmpty, raised < 60 {
            raised += 1
            try hub.raise("E_PIKE_BLOCKED", ["n": .int(Int64(raised))])
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(!again.messages.isEmpty)
        try await Task.sleep(for: .milliseconds(300))
        func number(_ text: String) -> Int? {
            guard case .object(let fields)? = try? EventValue(json: text),
                case .object(let params)? = fields.last?.value, case .int(let n)? = params.first?.value
            else { return nil }
            return Int(n)
        }
        let atBroker = (beforeStop + again.messages).compactMap { ($0["body"] as? String).flatMap(number) }
        let atBackup = backup.messages.compactMap(number)
        // Nothing lost: every raised event reached the broker or the backup.
        #expect(Set(atBroker + atBackup) == Set(1...raised), "broker \(atBroker) backup \(atBackup)")
        await again.stop()
        await backup.close()
        await hub.shutdown()
    }
}

/// Runs a command; returns its exit status.
@discardableResult
func run(_ arguments: [String]) async throws -> Int32 {
    let directory = TemporaryDirectory(prefix: "evi-cmd")
    defer { directory.remove() }
    let child = try ChildProcess(
        executable: arguments[0], arguments: Array(arguments.dropFirst()), directory: directory.path,
        outputPath: directory.file("out"), errorPath: directory.file("err"))
    return await child.waitForExit(timeout: .seconds(90)) ?? -1
}

func run(_ arguments: [String]) throws -> Int32 {
    let directory = TemporaryDirectory(prefix: "evi-cmd")
    defer { directory.remove() }
    let child = try ChildProcess(
        executable: arguments[0], arguments: Array(arguments.dropFirst()), directory: directory.path,
        outputPath: directory.file("out"), errorPath: directory.file("err"))
    while child.isRunning { usleep(10_000) }
    return child.status ?? -1
}

/// Hardening: a frame size announced by the broker is not trusted beyond `frame_max`.
@Suite struct AMQPFrameBoundTests {
    @Test func aFrameLargerThanFrameMaxIsRefusedBeforeItIsBuffered() throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(1))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt32(4_000_000_000))
        #expect(throws: (any Error).self) { _ = try AMQP.readFrame(&buffer) }
        var fine = ByteBuffer()
        fine.writeInteger(UInt8(8))
        fine.writeInteger(UInt16(0))
        fine.writeInteger(UInt32(0))
        fine.writeInteger(UInt8(0xCE))
        #expect(try AMQP.readFrame(&fine)?.type == 8)
    }
}
