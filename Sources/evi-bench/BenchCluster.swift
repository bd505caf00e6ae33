import ArgumentParser
import EventCluster
import EventInterface
import EviDaemon
import Foundation
import Logging
import Prometheus

extension Bench {
    /// cluster: two daemons in this process on `--state` (a scratch PostgreSQL database): 1,000
    /// subscription changes made on A (as the MI makes them: hub, then store), each timed until
    /// B's hub has it (propagation p50/p99); then 10,000 stored subscriptions and a third daemon
    /// started on them (resync time). Its rows (event E_BENCH_CLUSTER) are deleted at the end.
    func measureCluster() async throws -> (fields: [EventField], ratio: Double) {
        guard let state, state.contains("://") else {
            throw ValidationError("--scenario cluster needs --state postgres://… (a scratch database)")
        }
        var logger = Logger(label: "evi-bench")
        logger.logLevel = .critical
        let url = try PostgresURL.parse(state, environment: ProcessEnvironment.current())
        let admin = try await StoreConnection.connect(to: url, logger: logger)
        func node(_ name: String) async throws -> Daemon {
            var configuration = try benchConfiguration(directory: "/tmp/evi-bench-\(getpid())")
            configuration.state = state
            configuration.postgres = url
            configuration.clusterNode = name
            configuration.events = ["E_BENCH_CLUSTER"]
            return await Daemon.startOrExit(configuration, registry: PrometheusCollectorRegistry(), logger: logger)
        }
        try? await admin.execute("DELETE FROM evi_subscriptions WHERE event = 'E_BENCH_CLUSTER'")
        let a = try await node("bench-A")
        let b = try await node("bench-B")
        guard let store = a.state else { throw ValidationError("no cluster store") }
        let changes = 1000
        var latencies: [UInt64] = []
        for index in 0..<changes {
            let socket = "udp:127.0.0.1:\(20_000 + index)"
            let parsed = try await a.hub.registry.parseSocket(socket)
            let started = monotonicNanoseconds()
            _ = try await a.hub.subscribe(event: "E_BENCH_CLUSTER", parsed: parsed, expiry: .never)
            try await store.subscriptionChanged(
                event: "E_BENCH_CLUSTER", socket: socket, identity: parsed.identity, expiry: .never, attributes: .none)
            while b.hub.subscriber(of: "E_BENCH_CLUSTER", matching: parsed) == nil {
                guard monotonicNanoseconds() - started < 10_000_000_000 else { break }
                try await Task.sleep(for: .microseconds(100))
            }
            latencies.append(monotonicNanoseconds() - started)
        }
        latencies.sort()
        // 10,000 stored subscriptions, then a node started on them.
        let stored = 10_000
        try await admin.execute(
            """
            INSERT INTO evi_subscriptions (event, identity, socket, expire, expires_at, updated_by)
            SELECT 'E_BENCH_CLUSTER', 'udp:127.0.0.2:' || n, 'udp:127.0.0.2:' || n, NULL, NULL, 'bench'
            FROM generate_series(1, \(stored)) AS n ON CONFLICT DO NOTHING
            """)
        let resyncStarted = monotonicNanoseconds()
        let c = try await node("bench-C")
        let resync = Double(monotonicNanoseconds() - resyncStarted) / 1e9
        let synchronised = (try? c.hub.subscribers(of: "E_BENCH_CLUSTER").count) ?? 0
        for daemon in [a, b, c] {
            await daemon.state?.stop()
            await daemon.hub.shutdown(grace: .seconds(1))
        }
        try? await admin.execute("DELETE FROM evi_subscriptions WHERE event = 'E_BENCH_CLUSTER'")
        try? await admin.execute("DELETE FROM evi_nodes WHERE name LIKE 'bench-%'")
        await admin.close()
        let fields: [EventField] = [
            EventField("scenario", .string("cluster")),
            EventField("changes", .int(Int64(changes))),
            EventField("propagation_p50_us", .double(Self.percentile(latencies, 0.5))),
            EventField("propagation_p99_us", .double(Self.percentile(latencies, 0.99))),
            EventField("propagation_max_us", .double(Self.percentile(latencies, 1))),
            EventField("resync_subscriptions", .int(Int64(synchronised))),
            EventField("resync_seconds", .double((resync * 1000).rounded() / 1000)),
        ]
        return (fields, 1)
    }
}
