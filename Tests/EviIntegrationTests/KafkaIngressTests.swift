import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// The Kafka ingress against librdkafka's mock cluster (built by scripts/test.sh), filled by
/// Debian's kcat: a consumer group of two daemons shares a topic, and when one dies the other
/// takes its partitions.
@Suite(.serialized) struct KafkaIngressTests {
    /// The mock cluster host program, started on loopback; stopped by its PID.
    final class Cluster: @unchecked Sendable {
        let directory = TemporaryDirectory(prefix: "evi-kafka")
        let child: ChildProcess
        let bootstrap: String

        init(topics: [String]) async throws {
            let binary = repositoryRoot.appendingPathComponent(".build/kafka-mock-cluster").path
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw DaemonError(message: "\(binary) is missing: scripts/test.sh builds it")
            }
            let started = try ChildProcess(
                executable: binary, arguments: ["1"] + topics, directory: directory.path,
                outputPath: directory.file("out"), errorPath: directory.file("err"))
            guard await eventually(timeout: .seconds(10), { started.output.contains("\n") }),
                let line = started.output.split(separator: "\n").first
            else { throw DaemonError(message: "the mock cluster did not start: \(started.errors)") }
            child = started
            bootstrap = String(line)
        }

        /// `kcat -P`: one record per line, each keyed by its line number (so records spread over
        /// the partitions by key, not in librdkafka's sticky batches).
        func produce(_ lines: [String], topic: String) async throws {
            let file = directory.file("records")
            let keyed = lines.enumerated().map { "\($0.offset)\t\($0.element)" }
            try (keyed.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let result = try await run(
                "/usr/bin/kcat", ["-b", bootstrap, "-P", "-t", topic, "-K", "\t", "-l", file], timeout: .seconds(60))
            guard result.status == 0 else { throw DaemonError(message: "kcat -P: \(result.errors)") }
        }

        func stop() async {
            child.signal(SIGTERM)
            if await child.waitForExit(timeout: .seconds(5)) == nil { child.signal(SIGKILL) }
            directory.remove()
        }
    }

    static func message(_ number: Int) -> String {
        #"{"jsonrpc":"2.0","method":"E_QUEUED","params":{"n":\#(number)}}"#
    }

    @Test func aGroupOfTwoDaemonsSharesATopicAndTheSurvivorTakesOver() async throws {
        try await withTeardown { teardown in
            let cluster = try await Cluster(topics: ["evi.in:4"])
            teardown.add { await cluster.stop() }
            let subscriber = try JSONRPCTestServer(mode: .replyOK)
            defer { subscriber.close() }
            let config = """
                events: [E_QUEUED]
                ingress: ["kafka:\(cluster.bootstrap)/evi.in?group=evi&g.session.timeout.ms=6000&g.heartbeat.interval.ms=500"]
                subscriptions:
                  - { event: E_QUEUED, socket: "\(subscriber.socket)" }

                """
            let first = try await Daemon.start(extra: config)
            let second = try await Daemon.start(extra: config)
            teardown.add { await second.stop() }
            // Both members joined and were given partitions before anything is produced.
            try await Task.sleep(for: .seconds(15))
            try await cluster.produce((1...10_000).map(Self.message), topic: "evi.in")
            _ = await subscriber.waitFor(count: 10_000, timeout: .seconds(60))
            try await Task.sleep(for: .milliseconds(500))
            let both = numbered(subscriber.messages)
            #expect(
                both.count == 10_000 && Set(both) == Set(1...10_000),
                "\(both.count) delivered, \(Set(both).count) distinct"
            )
            let shares = try [first, second].map { daemon in
                let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#)
                return Int(
                    listing.components(separatedBy: #""received":"#).dropFirst().first?.prefix { $0.isNumber } ?? "")
                    ?? 0
            }
            #expect(shares.reduce(0, +) == 10_000 && shares.allSatisfy { $0 > 0 }, "\(shares)")

            // One dies (its offsets committed: librdkafka commits what is stored every second); the
            // other takes its partitions from there.
            try await Task.sleep(for: .milliseconds(2500))
            first.process.signal(SIGKILL)
            _ = await first.process.waitForExit()
            await first.stop()
            try await cluster.produce((10_001...20_000).map(Self.message), topic: "evi.in")
            let everything = Set(1...20_000)
            let arrived = await eventually(timeout: .seconds(60)) { Set(numbered(subscriber.messages)) == everything }
            let all = numbered(subscriber.messages)
            #expect(arrived, "\(Set(all).count) of 20000 arrived")
            let duplicates = all.count - Set(all).count
            #expect(duplicates <= 100, "\(duplicates) duplicates: more than the records a daemon holds unsettled")
            print(
                "kafka ingress: 2 daemons shared 10,000 records exactly once (\(shares)); after a kill -9 the survivor delivered the next 10,000, \(duplicates) duplicates"
            )
        }
    }

    /// A machine without librdkafka (played by pointing evi at a file that does not exist): evi
    /// starts and runs, and a kafka socket is refused with the Debian package to install.
    @Test func withoutLibrdkafkaAKafkaSocketIsRefusedNamingThePackage() async throws {
        let environment = ["EVI_LIBRDKAFKA=librdkafka-not-here.so.1"]
        let daemon = try await run(
            "/usr/bin/env", environment + [eviBinary.path, "bench", "--scenario", "kafka", "--events", "10"],
            timeout: .seconds(60))
        #expect(daemon.status != 0)
        #expect(
            daemon.errors.contains("kafka needs librdkafka.so.1 (Debian: apt-get install librdkafka1)"),
            "\(daemon.errors)")
        // Everything else works without it.
        let udp = try await run(
            "/usr/bin/env", environment + [eviBinary.path, "bench", "--scenario", "udp", "--events", "100"],
            timeout: .seconds(60))
        #expect(udp.status == 0, "\(udp.errors)")
    }
}
