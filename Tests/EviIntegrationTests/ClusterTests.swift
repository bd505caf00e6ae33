import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// Several `evi serve` daemons sharing subscriptions through the private PostgreSQL that
/// scripts/test.sh starts (`EVI_POSTGRES_URL`, `EVI_POSTGRES_DIR`), each test in a database of its
/// own.
@Suite(.serialized) struct ClusterTests {
    static var baseURL: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["EVI_POSTGRES_URL"] else {
                throw DaemonError(message: "EVI_POSTGRES_URL is not set: run the tests with scripts/test.sh")
            }
            return url
        }
    }

    /// A fresh database; its URL.
    static func database(_ name: String) async throws -> String {
        let base = try baseURL
        let admin = try await run(
            "/usr/bin/env",
            ["psql", base, "-q", "-c", "DROP DATABASE IF EXISTS \(name)", "-c", "CREATE DATABASE \(name)"],
            timeout: .seconds(30))
        guard admin.status == 0 else { throw DaemonError(message: "psql: \(admin.errors)") }
        return String(base[..<(base.lastIndex(of: "/") ?? base.endIndex)]) + "/" + name
    }

    static func postgres(_ command: String) async throws {
        guard let directory = ProcessInfo.processInfo.environment["EVI_POSTGRES_DIR"] else {
            throw DaemonError(message: "EVI_POSTGRES_DIR is not set")
        }
        let script = repositoryRoot.appendingPathComponent("scripts/postgres.sh").path
        let result = try await run("/bin/bash", [script, command, directory], timeout: .seconds(60))
        guard result.status == 0 else { throw DaemonError(message: "postgres.sh \(command): \(result.errors)") }
    }

    static func node(_ name: String, url: String) async throws -> Daemon {
        try await Daemon.start(
            extra: "state: \"\(url)\"\ncluster: { node: \(name) }\nevents: [E_CL]\n", state: "",
            logLevel: "info")
    }

    static func call(_ daemon: Daemon, _ method: String, _ params: String = "[]") throws -> String {
        try daemon.mi(#"{"jsonrpc":"2.0","method":"\#(method)","params":\#(params),"id":1}"#)
    }

    static func subscriberCount(_ daemon: Daemon) -> Int {
        let listing = (try? call(daemon, "evi:subscribers", #"["E_CL"]"#)) ?? ""
        return listing.components(separatedBy: #""socket":"#).count - 1
            - (listing.components(separatedBy: #""members":"#).count - 1) * 2
    }

    @Test func aSubscriptionMadeOnOneNodeHoldsOnAll() async throws {
        try await withTeardown { teardown in
            let url = try await Self.database("evi_cluster_a")
            let a = try await Self.node("A", url: url)
            teardown.add { await a.stop() }
            let b = try await Self.node("B", url: url)
            teardown.add { await b.stop() }
            let c = try await Self.node("C", url: url)
            teardown.add { await c.stop() }
            let plain = try DatagramReceiver()
            let backup = try DatagramReceiver()
            let dead = try freeTCPPort()
            #expect(try Self.call(a, "evi:subscribe", #"["E_CL","\#(plain.socket)"]"#).contains(#""result":"OK""#))
            #expect(
                try Self.call(
                    a, "evi:subscribe", #"["E_CL","virtual:FAILOVER tcp:127.0.0.1:\#(dead) \#(backup.socket)"]"#
                )
                .contains(#""result":"OK""#))
            let started = ContinuousClock.now
            #expect(
                await eventually(timeout: .seconds(5)) { Self.subscriberCount(b) == 2 && Self.subscriberCount(c) == 2 })
            let propagation = ContinuousClock.now - started
            #expect(propagation < .seconds(1), "propagation took \(propagation)")
            _ = try Self.call(b, "evi:raise", #"["E_CL",{"n":1}]"#)
            _ = try Self.call(c, "evi:raise", #"["E_CL",{"n":2}]"#)
            #expect(await plain.waitFor(count: 2, timeout: .seconds(10)).count == 2)
            #expect(await backup.waitFor(count: 2, timeout: .seconds(10)).count == 2)
            #expect(try Self.call(b, "evi:subscribers").contains(#""Node":"B""#))
            let nodes = try Self.call(b, "evi:nodes")
            #expect(nodes.contains(#""name":"A""#) && nodes.contains(#""name":"C""#), "\(nodes)")
            #expect(nodes.contains(#""name":"B","started":"#) && nodes.contains(#""self":true"#), "\(nodes)")

            // Unsubscribed on C: none of the three delivers any more.
            _ = try Self.call(c, "evi:unsubscribe", #"["E_CL","\#(plain.socket)"]"#)
            _ = try Self.call(
                c, "evi:unsubscribe", #"["E_CL","virtual:FAILOVER tcp:127.0.0.1:\#(dead) \#(backup.socket)"]"#)
            #expect(
                await eventually(timeout: .seconds(5)) {
                    [a, b, c].allSatisfy { Self.subscriberCount($0) == 0 }
                })
            let before = (plain.count, backup.count)
            for node in [a, b, c] { _ = try Self.call(node, "evi:raise", #"["E_CL",{"n":3}]"#) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(plain.count == before.0 && backup.count == before.1)

            // Expiry is absolute time, honoured by all three.
            _ = try Self.call(b, "evi:subscribe", #"["E_CL","\#(plain.socket)",2]"#)
            #expect(await eventually(timeout: .seconds(3)) { [a, c].allSatisfy { Self.subscriberCount($0) == 1 } })
            try await Task.sleep(for: .milliseconds(2300))
            let beforeExpiry = plain.count
            for node in [a, b, c] { _ = try Self.call(node, "evi:raise", #"["E_CL",{"n":4}]"#) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(plain.count == beforeExpiry, "\(plain.count - beforeExpiry) delivered after expiry")
            #expect(!a.process.standardOutput.contains("evi-"), "the URL's password is printed")
            #expect(a.process.standardOutput.contains("as node A"), "\(a.process.standardOutput)")
            await plain.close()
            await backup.close()
        }
    }

    @Test func theDaemonsKeepDeliveringThroughARestartOfPostgreSQLAndResynchronise() async throws {
        try await withTeardown { teardown in
            let url = try await Self.database("evi_cluster_b")
            let a = try await Self.node("A", url: url)
            teardown.add { await a.stop() }
            let b = try await Self.node("B", url: url)
            teardown.add { await b.stop() }
            let first = try DatagramReceiver()
            let second = try DatagramReceiver()
            _ = try Self.call(a, "evi:subscribe", #"["E_CL","\#(first.socket)"]"#)
            #expect(await eventually(timeout: .seconds(5)) { Self.subscriberCount(b) == 1 })
            try await Self.postgres("stop")
            // Down: delivery goes on with what each node knows; changes are refused, not pretended.
            _ = try Self.call(b, "evi:raise", #"["E_CL",{"n":1}]"#)
            #expect(await first.waitFor(count: 1, timeout: .seconds(5)).count == 1)
            let refused = try Self.call(a, "evi:subscribe", #"["E_CL","\#(second.socket)"]"#)
            #expect(
                refused.contains(#""code":500"#) && refused.contains("not stored: state store unreachable"),
                "\(refused)")
            let ready = try RawHTTP.request(port: a.httpPort, method: "GET", path: "/ready")
            #expect(
                ready.status == 200 && ready.bodyText.contains(#""state_store":"unreachable""#), "\(ready.bodyText)")
            let metrics = try RawHTTP.request(port: a.httpPort, method: "GET", path: "/metrics").bodyText
            #expect(
                metrics.contains("evi_state_store_up 0"),
                "\(metrics.split(separator: "\n").filter { $0.contains("state_store") })")
            try await Self.postgres("restart")
            let back = await eventually(timeout: .seconds(10)) {
                ((try? Self.call(a, "evi:subscribe", #"["E_CL","\#(second.socket)"]"#)) ?? "").contains(
                    #""result":"OK""#)
            }
            #expect(back)
            #expect(await eventually(timeout: .seconds(5)) { Self.subscriberCount(b) == 2 })
            _ = try Self.call(b, "evi:raise", #"["E_CL",{"n":2}]"#)
            #expect(await second.waitFor(count: 1, timeout: .seconds(5)).count == 1)
            #expect(
                try RawHTTP.request(port: a.httpPort, method: "GET", path: "/ready").bodyText.contains(
                    #""state_store":"up""#))
            await first.close()
            await second.close()
        }
    }

    @Test func aNodeKilledMidStreamComesBackInSync() async throws {
        try await withTeardown { teardown in
            let url = try await Self.database("evi_cluster_c")
            let a = try await Self.node("A", url: url)
            teardown.add { await a.stop() }
            let b = try await Self.node("B", url: url)
            let c = try await Self.node("C", url: url)
            teardown.add { await c.stop() }
            let first = try DatagramReceiver()
            let second = try DatagramReceiver()
            _ = try Self.call(a, "evi:subscribe", #"["E_CL","\#(first.socket)"]"#)
            #expect(
                await eventually(timeout: .seconds(5)) { Self.subscriberCount(b) == 1 && Self.subscriberCount(c) == 1 })
            b.process.signal(SIGKILL)
            _ = await b.process.waitForExit(timeout: .seconds(5))
            await b.stop()
            // A and C carry on; a change made meanwhile is stored for B.
            for number in 0..<50 {
                _ = try Self.call(number % 2 == 0 ? a : c, "evi:raise", #"["E_CL",{"n":\#(number)}]"#)
            }
            #expect(await first.waitFor(count: 50, timeout: .seconds(10)).count == 50)
            _ = try Self.call(c, "evi:subscribe", #"["E_CL","\#(second.socket)"]"#)
            let restarted = try await Self.node("B", url: url)
            teardown.add { await restarted.stop() }
            #expect(await eventually(timeout: .seconds(5)) { Self.subscriberCount(restarted) == 2 })
            _ = try Self.call(restarted, "evi:raise", #"["E_CL",{"n":99}]"#)
            #expect(await second.waitFor(count: 1, timeout: .seconds(5)).count == 1)
            #expect(await first.waitFor(count: 51, timeout: .seconds(5)).count == 51)
            let nodes = try Self.call(a, "evi:nodes")
            #expect(["A", "B", "C"].allSatisfy { nodes.contains(#""name":"\#($0)""#) }, "\(nodes)")
            await first.close()
            await second.close()
        }
    }

    /// Three daemons consuming one RabbitMQ queue (the ingress) with a subscription made on one of
    /// them: 30,000 messages shared, none lost; one daemon killed half-way, the others take its
    /// share (what it held unacknowledged is redelivered: at least once, a few may come twice).
    @Test func threeDaemonsShareARabbitMQQueueAndSurviveALoss() async throws {
        let url = try await Self.database("evi_cluster_d")
        _ = try await RabbitMQIngressTests.pika(["declare", "evi.cluster"])
        let subscriber = try JSONRPCTestServer(mode: .replyOK)
        defer { subscriber.close() }
        var daemons: [Daemon] = []
        for name in ["A", "B", "C"] {
            let daemon = try await Daemon.start(
                extra: """
                    state: "\(url)"
                    cluster: { node: \(name) }
                    events: [E_QUEUED]
                    ingress: [\(try RabbitMQIngressTests.ingress("evi.cluster"))]

                    """, state: "")
            daemons.append(daemon)
            try await RabbitMQIngressTests.waitConsuming(daemon)
        }
        defer { for daemon in daemons { Task { await daemon.stop() } } }
        _ = try Self.call(daemons[0], "evi:subscribe", #"["E_QUEUED","\#(subscriber.socket)"]"#)
        #expect(
            await eventually(timeout: .seconds(5)) {
                daemons.allSatisfy {
                    ((try? Self.call($0, "evi:subscribers", #"["E_QUEUED"]"#)) ?? "").contains(subscriber.socket)
                }
            })
        let count = 30_000
        try await RabbitMQIngressTests.publish((1...count).map(RabbitMQIngressTests.message), to: "evi.cluster")
        _ = await eventually(timeout: .seconds(60)) { subscriber.messages.count >= count / 2 }
        daemons[1].process.signal(SIGKILL)
        let got = numbered(await subscriber.waitFor(count: count, timeout: .seconds(120)))
        try await Task.sleep(for: .milliseconds(300))
        let all = numbered(subscriber.messages)
        #expect(Set(all).count == count, "\(got.count) then \(all.count), \(Set(all).count) distinct")
        #expect(all.count - Set(all).count <= 100, "\(all.count - Set(all).count) delivered twice (prefetch is 100)")
        #expect(try await RabbitMQIngressTests.drain("evi.cluster").isEmpty)
    }
}
