import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Foundation
import Testing

@testable import EventKafka

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// librdkafka's mock cluster (Tests/Fixtures/kafka/mock_cluster.c, built by scripts/test.sh into
/// .build/kafka-mock-cluster), a real Kafka-protocol peer on loopback ports of its own.
final class MockCluster: @unchecked Sendable {
    let directory = TemporaryDirectory(prefix: "evi-kafka")
    let child: ChildProcess
    let bootstrap: String

    init(brokers: Int = 1, topics: [String]) async throws {
        let binary =
            ProcessInfo.processInfo.environment["EVI_KAFKA_MOCK"]
            ?? repositoryRoot.appendingPathComponent(".build/kafka-mock-cluster").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ReceiverError("\(binary) is missing: scripts/test.sh builds it (apt-get install librdkafka-dev kcat)")
        }
        let started = try ChildProcess(
            executable: binary, arguments: [String(brokers)] + topics, directory: directory.path,
            outputPath: directory.file("out"), errorPath: directory.file("err"))
        guard await eventually(timeout: .seconds(10), { started.output.contains("\n") }),
            let line = started.output.split(separator: "\n").first
        else { throw ReceiverError("the mock cluster did not start: \(started.errors)") }
        child = started
        bootstrap = String(line)
    }

    /// Every broker down (or up), acknowledged by the host program.
    func setBrokers(up: Bool) async {
        let before = child.output.components(separatedBy: "all brokers").count
        child.signal(up ? SIGUSR2 : SIGUSR1)
        _ = await eventually { self.child.output.components(separatedBy: "all brokers").count > before }
    }

    /// What kcat (Debian's, an independent client) reads from `topic`: one `KEY|PAYLOAD` a record.
    func consume(_ topic: String) async throws -> [String] {
        let reader = try ChildProcess(
            executable: "/usr/bin/kcat",
            arguments: ["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k|%s\\n"],
            directory: directory.path, outputPath: directory.file("kcat.out"), errorPath: directory.file("kcat.err"))
        guard await reader.waitForExit(timeout: .seconds(30)) == 0 else {
            reader.signal(SIGKILL)
            throw ReceiverError("kcat failed: \(reader.errors)")
        }
        return reader.output.split(separator: "\n").map(String.init)
    }

    func stop() async {
        child.signal(SIGTERM)
        if await child.waitForExit(timeout: .seconds(5)) == nil { child.signal(SIGKILL) }
        directory.remove()
    }
}

@Suite(.serialized) struct KafkaTests {
    func makeHub(timeout: Duration = .milliseconds(3000), failoverTimeout: Double = 30) throws -> EventHub {
        let hub = EventHub(transports: [
            KafkaTransport(options: KafkaOptions(timeout: timeout)), UDPTransport(),
            VirtualTransport(failoverTimeout: failoverTimeout),
        ])
        try hub.publish("E_CALL")
        return hub
    }

    @Test func eventsArriveByteForByteWithTheirKeys() async throws {
        try await withTeardown { teardown in
            let cluster = try await MockCluster(topics: ["calls:1"])
            teardown.add { await cluster.stop() }
            let hub = try makeHub()
            try await hub.subscribe(event: "E_CALL", socket: "kafka:\(cluster.bootstrap)/calls?key=callid")
            try hub.raise("E_CALL", ["callid": "abc@10.0.0.1", "duration": 42])
            try hub.raise("E_CALL", ["duration": 7])
            try hub.raise("E_CALL", ["callid": 12345, "note": "naïve \"quoted\""])
            #expect(
                await eventually(timeout: .seconds(15)) {
                    hub.statistics.snapshot().transports["kafka"]?.delivered == 3
                })
            let records = try await cluster.consume("calls")
            #expect(
                records == [
                    #"abc@10.0.0.1|{"jsonrpc":"2.0","method":"E_CALL","params":{"callid":"abc@10.0.0.1","duration":42}}"#,
                    #"|{"jsonrpc":"2.0","method":"E_CALL","params":{"duration":7}}"#,
                    #"12345|{"jsonrpc":"2.0","method":"E_CALL","params":{"callid":12345,"note":"naïve \"quoted\""}}"#,
                ], "\(records)")
            await hub.shutdown()
        }
    }

    @Test func badSocketsAreRefusedAtSubscribeTime() async throws {
        let hub = try makeHub()
        let cases: [(String, String)] = [
            ("kafka:127.0.0.1:9092", "kafka socket needs /TOPIC after its brokers"),
            ("kafka:127.0.0.1:9092/", "kafka socket needs a topic"),
            ("kafka:/t1", "kafka socket needs brokers"),
            ("kafka:127.0.0.1:9092,,127.0.0.1:9093/t1", "empty broker"),
            ("kafka:127.0.0.1:9092/bad topic", "whitespace"),
            ("kafka:127.0.0.1:9092/t1?g.no.such.property=1", "g.no.such.property: No such configuration property"),
            ("kafka:127.0.0.1:9092/t1?t.acks=lots", "t.acks: Invalid value"),
            ("kafka:127.0.0.1:9092/t1?group=g1", "group= names an ingress's consumer group"),
            ("kafka:127.0.0.1:9092/t1?x=1", "unknown kafka property 'x'"),
        ]
        for (socket, message) in cases {
            do {
                try await hub.subscribe(event: "E_CALL", socket: socket)
                Issue.record("\(socket) was accepted")
            } catch {
                #expect("\(error)".contains(message), "\(socket): \(error)")
            }
        }
        #expect(try hub.subscribers(of: "E_CALL").isEmpty)
    }

    @Test func secretsAreNeverPrintedAndPropertiesMatchInAnyOrder() async throws {
        let hub = try makeHub()
        let socket = "kafka:127.0.0.1:1/t1?g.sasl.password=hunter2&g.client.id=evi&t.acks=all"
        try await hub.subscribe(event: "E_CALL", socket: socket)
        let listed = try #require(try hub.subscribers(of: "E_CALL").first?.socket)
        #expect(listed == "kafka:127.0.0.1:1/t1?g.client.id=evi&g.sasl.password=***&t.acks=all")
        #expect(!listed.contains("hunter2"))
        // The same properties in another order are the same subscriber.
        let again = try await hub.subscribe(
            event: "E_CALL", socket: "kafka:127.0.0.1:1/t1?t.acks=all&g.client.id=evi&g.sasl.password=hunter2")
        #expect(again == .refreshed)
        do {
            try await hub.subscribe(event: "E_CALL", socket: "kafka:127.0.0.1:1/t1?g.sasl.password=hunter2&g.nope=1")
        } catch {
            #expect(!"\(error)".contains("hunter2"), "\(error)")
        }
        await hub.shutdown()
    }

    /// Brokers down: delivery reports fail (message timeout), FAILOVER moves to udp and marks the
    /// kafka member; brokers up and the failover timeout passed: events go to Kafka again. Every
    /// event is in one place or the other.
    @Test func failoverMovesToUDPWhileTheBrokersAreDownAndComesBack() async throws {
        try await withTeardown { teardown in
            let cluster = try await MockCluster(topics: ["t1:1"])
            teardown.add { await cluster.stop() }
            let backup = try DatagramReceiver()
            let hub = try makeHub(timeout: .milliseconds(1000), failoverTimeout: 2)
            try await hub.subscribe(
                event: "E_CALL", socket: "virtual:FAILOVER kafka:\(cluster.bootstrap)/t1 \(backup.socket)")
            try hub.raise("E_CALL", ["n": 1])
            #expect(
                await eventually(timeout: .seconds(15)) {
                    hub.statistics.snapshot().transports["kafka"]?.delivered == 1
                })
            await cluster.setBrokers(up: false)
            for number in 2...5 { try hub.raise("E_CALL", ["n": .int(Int64(number))]) }
            #expect(await backup.waitFor(count: 4, timeout: .seconds(15)).count == 4)
            let members = try hub.subscribers(of: "E_CALL").first?.members ?? []
            #expect(members.first?.state == .failed, "\(members)")
            await cluster.setBrokers(up: true)
            var raised = 5
            while raised < 40, hub.statistics.snapshot().transports["kafka"]?.delivered ?? 0 < 2 {
                raised += 1
                try hub.raise("E_CALL", ["n": .int(Int64(raised))])
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect((hub.statistics.snapshot().transports["kafka"]?.delivered ?? 0) >= 2, "Kafka took events again")
            try await Task.sleep(for: .milliseconds(500))
            let inKafka = numbered(try await cluster.consume("t1").map { String($0.drop { $0 != "|" }.dropFirst()) })
            let inUDP = numbered(backup.messages)
            #expect(Set(inKafka + inUDP) == Set(1...raised), "kafka \(inKafka) udp \(inUDP)")
            await backup.close()
            await hub.shutdown()
        }
    }
}
