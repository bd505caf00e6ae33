import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// The RabbitMQ queue ingress against the private broker scripts/test.sh starts, driven by pika
/// (a real third-party client) on the other side: messages are raised, acknowledged only once
/// settled, redelivered when evi dies holding them, shared between two daemons.
@Suite(.serialized) struct RabbitMQIngressTests {
    static var brokerPort: Int {
        get throws {
            guard let text = ProcessInfo.processInfo.environment["EVI_RABBITMQ_PORT"], let port = Int(text) else {
                throw DaemonError(
                    message: "EVI_RABBITMQ_PORT is not set: run the tests with scripts/test.sh, which starts a broker")
            }
            return port
        }
    }

    /// Runs Tests/Fixtures/rabbitmq/pika_tool.py with the tests' venv.
    static func pika(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> String {
        let python = repositoryRoot.appendingPathComponent(".venv/bin/python3").path
        let script = repositoryRoot.appendingPathComponent("Tests/Fixtures/rabbitmq/pika_tool.py").path
        let result = try await run(python, [script, String(try brokerPort)] + arguments, timeout: timeout)
        guard result.status == 0 else {
            throw DaemonError(message: "pika_tool \(arguments.prefix(2)) failed: \(result.errors)")
        }
        return result.output
    }

    static func publish(_ bodies: [String], to queue: String) async throws {
        let directory = TemporaryDirectory(prefix: "evi-pika")
        defer { directory.remove() }
        let file = directory.file("bodies.json")
        try JSONSerialization.data(withJSONObject: bodies).write(to: URL(fileURLWithPath: file))
        _ = try await pika(["publish", queue, file], timeout: .seconds(120))
    }

    /// What is left in `queue`, consumed: each body and whether the broker redelivered it.
    static func drain(_ queue: String) async throws -> [(body: String, redelivered: Bool)] {
        let output = try await pika(["drain", queue])
        let items = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] ?? []
        return items.map { ($0["body"] as? String ?? "", $0["redelivered"] as? Bool ?? false) }
    }

    static func message(_ number: Int) -> String {
        #"{"jsonrpc":"2.0","method":"E_QUEUED","params":{"n":\#(number)}}"#
    }

    static func ingress(_ queue: String, prefetch: Int = 100) throws -> String {
        "{ socket: \"rabbitmq:guest:guest@127.0.0.1:\(try brokerPort)/\(queue)\", prefetch: \(prefetch) }"
    }

    /// Waits until the daemon's ingress is consuming (its connection counted by `evi:ingress`).
    static func waitConsuming(_ daemon: Daemon) async throws {
        let consuming = await eventually(timeout: .seconds(10)) {
            (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#))?.contains(#""connections":1"#)
                ?? false
        }
        guard consuming else {
            throw DaemonError(message: "the rabbitmq ingress did not start consuming: \(daemon.process.standardError)")
        }
    }

    @Test func queuedMessagesAreRaisedAndTheUnacceptableDeadLettered() async throws {
        try await withTeardown { teardown in
            _ = try await Self.pika(["declare", "evi.in", "evi.in.dead"])
            let receiver = try DatagramReceiver()
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_MY_EVENT2]
                    ingress: [\(try Self.ingress("evi.in"))]
                    subscriptions:
                      - { event: E_MY_EVENT2, socket: "\(receiver.socket)" }

                    """)
            teardown.add { await daemon.stop() }
            try await Self.waitConsuming(daemon)
            let recorded = try IngressTests.recorded("transport_udp.json")
            let oversized =
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"x":""# + String(repeating: "a", count: 1_100_000)
                + #""}}"#
            try await Self.publish(
                [
                    recorded, "not json", #"{"jsonrpc":"2.0","method":"E_NOBODY","params":{}}"#, oversized,
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":["positional",2]}"#,
                ], to: "evi.in")
            #expect(
                await receiver.waitFor(count: 2) == [
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"name":"alice","count":7}}"#,
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":["positional",2]}"#,
                ])
            let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":2}"#)
            #expect(
                listing.contains(
                    #""socket":"rabbitmq:guest@127.0.0.1:\#(try Self.brokerPort)/evi.in","received":2,"rejected":{"not_json":1,"too_large":1,"unknown_event":1},"connections":1"#
                ), "\(listing)")
            #expect(!listing.contains("guest:guest"))
            // Rejected without requeue: the queue's dead-letter route took exactly the three refused.
            let dead = try await Self.drain("evi.in.dead")
            #expect(
                dead.map { $0.body.prefix(40) }.sorted()
                    == [
                        "not json", oversized.prefix(40),
                        #"{"jsonrpc":"2.0","method":"E_NOBODY","params":{}}"#.prefix(40),
                    ]
                    .sorted())
            // And everything else was acknowledged: nothing is left to redeliver.
            await daemon.stop()
            #expect(try await Self.drain("evi.in").isEmpty)
            await receiver.close()
        }
    }

    /// evi killed while its only subscriber holds every delivery (a reliable-mode tcp peer that
    /// never answers, 10 s timeout): nothing was settled, so nothing was acknowledged, and the
    /// broker redelivers every message evi held to the next consumer.
    @Test func messagesEviHeldWhenItDiedAreRedelivered() async throws {
        try await withTeardown { teardown in
            _ = try await Self.pika(["declare", "evi.held"])
            let stuck = try JSONRPCTestServer(mode: .neverReply)
            defer { stuck.close() }
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_QUEUED]
                    ingress: [\(try Self.ingress("evi.held", prefetch: 10))]
                    subscriptions:
                      - { event: E_QUEUED, socket: "\(stuck.socket)" }
                    modules:
                      event_stream: { reliable_mode: true, timeout: 10000 }

                    """)
            teardown.add { await daemon.stop() }
            try await Self.waitConsuming(daemon)
            try await Self.publish((1...50).map(Self.message), to: "evi.held")
            // evi is mid-stream: it has taken messages and handed one to the subscriber.
            #expect(!(await stuck.waitFor(count: 1, timeout: .seconds(10))).isEmpty)
            daemon.process.signal(SIGKILL)
            _ = await daemon.process.waitForExit()
            let left = try await Self.drain("evi.held")
            #expect(numbered(left.map(\.body)).sorted() == Array(1...50), "\(left.count) left")
            // Those evi held (prefetch 10) come back marked redelivered.
            let redelivered = left.filter(\.redelivered).count
            #expect((1...10).contains(redelivered), "\(redelivered) redelivered")
        }
    }

    /// Competing consumers: two daemons on one queue, one tcp subscriber; every message arrives
    /// exactly once while both stay up, and both did part of the work.
    @Test func twoDaemonsShareAQueueWithoutLossOrDuplicates() async throws {
        _ = try await Self.pika(["declare", "evi.shared"])
        let subscriber = try JSONRPCTestServer(mode: .replyOK)
        defer { subscriber.close() }
        var daemons: [Daemon] = []
        for _ in 0..<2 {
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_QUEUED]
                    ingress: [\(try Self.ingress("evi.shared"))]
                    subscriptions:
                      - { event: E_QUEUED, socket: "\(subscriber.socket)" }

                    """)
            daemons.append(daemon)
            try await Self.waitConsuming(daemon)
        }
        defer { for daemon in daemons { Task { await daemon.stop() } } }
        let count = 10_000
        try await Self.publish((1...count).map(Self.message), to: "evi.shared")
        let got = numbered(await subscriber.waitFor(count: count, timeout: .seconds(60)))
        try await Task.sleep(for: .milliseconds(300))  // anything delivered twice would show now
        let all = numbered(subscriber.messages)
        #expect(
            all.count == count && Set(all).count == count, "\(got.count) then \(all.count), \(Set(all).count) distinct")
        var shares: [Int] = []
        for daemon in daemons {
            let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#)
            let received =
                listing.components(separatedBy: #""received":"#).dropFirst().first.map {
                    Int($0.prefix { $0.isNumber }) ?? 0
                } ?? 0
            shares.append(received)
        }
        #expect(shares.reduce(0, +) == count && shares.allSatisfy { $0 > 0 }, "\(shares)")
        #expect(try await Self.drain("evi.shared").isEmpty)
    }

    /// A queue that does not exist yet (the broker closes the channel, 404), or is deleted while
    /// evi consumes it (the broker cancels the consumer): evi keeps trying, on the reconnect
    /// state machine's timer, and consumes the queue once it is there again.
    @Test func aMissingOrDeletedQueueIsConsumedOnceItExists() async throws {
        try await withTeardown { teardown in
            _ = try await Self.pika(["delete", "evi.later"])
            let receiver = try DatagramReceiver()
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_QUEUED]
                    ingress: [\(try Self.ingress("evi.later"))]
                    subscriptions:
                      - { event: E_QUEUED, socket: "\(receiver.socket)" }

                    """)
            teardown.add { await daemon.stop() }
            let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#)
            #expect(listing.contains(#""connections":0"#), "\(listing)")
            #expect(daemon.process.standardError.contains("404"), "\(daemon.process.standardError)")
            _ = try await Self.pika(["declare", "evi.later"])
            try await Self.waitConsuming(daemon)
            try await Self.publish([Self.message(1)], to: "evi.later")
            #expect(numbered(await receiver.waitFor(count: 1)) == [1])

            _ = try await Self.pika(["delete", "evi.later"])
            _ = await eventually(timeout: .seconds(5)) {
                (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#))?.contains(#""connections":0"#)
                    ?? false
            }
            _ = try await Self.pika(["declare", "evi.later"])
            try await Self.waitConsuming(daemon)
            try await Self.publish([Self.message(2)], to: "evi.later")
            #expect(numbered(await receiver.waitFor(count: 2)) == [1, 2])
            await receiver.close()
        }
    }

    /// With durable delivery a message is acknowledged once spooled, whatever its subscriber's
    /// state: the queue empties while the subscriber is down, and everything arrives when it is back.
    @Test func withDurableDeliveryAMessageIsAcknowledgedOnceSpooled() async throws {
        try await withTeardown { teardown in
            _ = try await Self.pika(["declare", "evi.durable"])
            let spool = TemporaryDirectory(prefix: "evi-spool")
            teardown.add { spool.remove() }
            let port = try DurableDeliveryTests.freePort()
            let daemon = try await Daemon.start(
                extra: """
                    delivery: durable
                    spool: { dir: "\(spool.path)", retry_min: 0.1, retry_max: 0.5 }
                    events: [E_QUEUED]
                    ingress: [\(try Self.ingress("evi.durable", prefetch: 10))]
                    subscriptions:
                      - { event: E_QUEUED, socket: "tcp:127.0.0.1:\(port)" }
                    modules:
                      event_stream: { reliable_mode: true }

                    """)
            teardown.add { await daemon.stop() }
            try await Self.waitConsuming(daemon)
            try await Self.publish((1...200).map(Self.message), to: "evi.durable")
            // All 200 taken and acknowledged (prefetch 10 would stop at 10 otherwise) while nobody listens.
            let spooled = await eventually(timeout: .seconds(20)) {
                (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:spool","id":1}"#))?.contains(#""events":200"#) ?? false
            }
            #expect(spooled)
            let receiver = try JSONRPCTestServer(mode: .replyOK, port: port)
            defer { receiver.close() }
            #expect(numbered(await receiver.waitFor(count: 200, timeout: .seconds(20))) == Array(1...200))
            await daemon.stop()
            #expect(try await Self.drain("evi.durable").isEmpty)
        }
    }
}
