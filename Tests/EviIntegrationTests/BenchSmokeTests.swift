import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// CI keeps `evi bench` working with a short run of each scenario (figures are not asserted:
/// they are measured with a release build and reported in the README).
@Suite(.serialized) struct BenchSmokeTests {
    /// Runs `evi ARGUMENTS` (a bench with `--format json`), expects it to succeed and returns the
    /// fields of its last line, a JSON object, with that line; nil (recorded) otherwise.
    static func bench(_ arguments: [String], timeout: Duration) async throws -> (fields: [EventField], last: String)? {
        let result = try await run(eviBinary.path, arguments, timeout: timeout)
        #expect(result.status == 0, "\(result.errors)")
        let last = result.output.split(separator: "\n").last.map(String.init) ?? ""
        guard case .object(let fields) = try EventValue(json: last) else {
            Issue.record("not a JSON object: \(last)")
            return nil
        }
        return (fields, last)
    }

    @Test(arguments: [
        "udp", "parallel3", "roundrobin3", "failover-dead", "mi-http", "relay-udp", "relay-tcp", "tcp-reliable",
        "udp --durable", "parallel3 --durable",
    ])
    func benchReportsEveryKey(scenario argument: String) async throws {
        let words = argument.split(separator: " ").map(String.init)
        let scenario = words[0]
        let durable = words.contains("--durable")
        guard
            let (fields, _) = try await Self.bench(
                ["bench", "--scenario", scenario, "--events", "2000", "--format", "json"] + words.dropFirst(),
                timeout: .seconds(60))
        else { return }
        let keys = fields.map(\.name)
        #expect(
            keys == [
                "scenario", "events", "seconds", "events_per_second", "datagrams_per_second", "received", "lost",
                "latency_p50_us", "latency_p99_us", "latency_p999_us", "rss_bytes", "floor_datagrams_per_second",
            ]
                + (scenario == "mi-http"
                    ? [
                        "wrk_requests_per_second", "wrk_latency_p99_us", "wrk_bare_nio_requests_per_second",
                        "wrk_vs_bare_percent", "wrk_batch500_events_per_second", "batch500_vs_single_per_event",
                        "mi_udp_requests_per_second",
                    ] : [])
                + (scenario == "tcp-reliable"
                    ? [] : ["floor_mmsg_datagrams_per_second", "vs_mmsg_floor_percent", "receiver_reads"])
                + (durable ? ["delivery", "spool_bytes_per_event", "fsyncs_per_second"] : []))
        func number(_ key: String) -> Double {
            switch fields.first(where: { $0.name == key })?.value {
            case .int(let value)?: Double(value)
            case .double(let value)?: value
            default: -1
            }
        }
        let perEvent = scenario == "parallel3" ? 3.0 : 1.0
        #expect(number("received") + number("lost") == 2000 * perEvent)
        #expect(number("received") > 0)
        #expect(number("floor_datagrams_per_second") > 0)
        #expect(number("rss_bytes") > 0)
        if scenario == "mi-http" { #expect(number("mi_udp_requests_per_second") > 0) }
    }

    /// The receivers read in batches for throughput (when their buffer could be made deep, as
    /// root) and at once for latency at a set rate or when asked; nothing is lost either way.
    @Test(arguments: [
        (["--events", "20000"], ["batched", "eager"]), (["--events", "2000", "--rate", "20000"], ["eager"]),
        (["--events", "20000", "--receiver-reads", "eager"], ["eager"]),
    ])
    func receiversReadAsAsked(arguments: [String], allowed: [String]) async throws {
        guard
            let (fields, last) = try await Self.bench(
                ["bench", "--scenario", "udp", "--format", "json"] + arguments, timeout: .seconds(60))
        else { return }
        guard case .string(let reads)? = fields.first(where: { $0.name == "receiver_reads" })?.value else {
            Issue.record("no receiver_reads: \(last)")
            return
        }
        #expect(allowed.contains(reads), "\(last)")
        if getuid() == 0 && allowed.count > 1 { #expect(reads == "batched", "root can make the buffer deep: \(last)") }
        #expect(fields.first { $0.name == "lost" }?.value == .int(0), "\(last)")
    }

    /// The kafka scenario against librdkafka's in-process mock cluster: every report counted.
    @Test func kafkaBenchReportsItsKeys() async throws {
        guard
            let (fields, _) = try await Self.bench(
                ["bench", "--scenario", "kafka", "--events", "2000", "--format", "json"],
                timeout: .seconds(60))
        else { return }
        #expect(
            fields.map(\.name) == [
                "scenario", "brokers", "events", "seconds", "events_per_second", "delivered", "failed",
                "latency_p50_us", "latency_p99_us", "rss_bytes",
            ])
        #expect(fields.first { $0.name == "delivered" }?.value == .int(2000))
    }

    /// TLS against plain in one run: tcp-reliable (a certificate made for the run) and rabbitmq
    /// (the private broker's amqps listener).
    @Test(arguments: [["tcp-reliable"], ["rabbitmq"]])
    func tlsBenchComparesWithPlain(scenario: [String]) async throws {
        guard
            let (fields, last) = try await Self.bench(
                ["bench", "--scenario"] + scenario + ["--tls", "--events", "2000", "--format", "json"],
                timeout: .seconds(120))
        else { return }
        let names = fields.map(\.name)
        #expect(names.contains("tls_vs_plain"), "\(names)")
        let count = scenario == ["rabbitmq"] ? "confirmed" : "delivered"
        #expect(fields.first { $0.name == "tls_\(count)" }?.value == .int(2000), "\(last)")
    }

    /// The web and cluster scenarios: every event counted (webhook, sse), every change propagated
    /// (cluster, on the tests' PostgreSQL).
    @Test(arguments: [
        ["webhook", "--events", "2000"], ["sse", "--clients", "20", "--events", "200", "--rate", "2000"],
        ["cluster"],
    ])
    func webAndClusterBenchesCountEverything(arguments: [String]) async throws {
        var extra = arguments
        if arguments == ["cluster"] {
            let url = try await ClusterTests.database("evi_bench_smoke")
            extra += ["--state", url]
        }
        guard
            let (fields, last) = try await Self.bench(
                ["bench", "--scenario"] + extra + ["--format", "json"], timeout: .seconds(180))
        else { return }
        func value(_ name: String) -> EventValue? { fields.first { $0.name == name }?.value }
        switch arguments[0] {
        case "webhook": #expect(value("delivered") == .int(2000) && value("failed") == .int(0), "\(last)")
        case "sse": #expect(value("deliveries") == .int(4000) && value("lost") == .int(0), "\(last)")
        default:
            #expect(value("changes") == .int(1000), "\(last)")
            #expect(value("resync_subscriptions") == .int(11000), "\(last)")
        }
    }
}
