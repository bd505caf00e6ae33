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

/// What the shared store must refuse, and what it must carry byte for byte.
@Suite(.serialized) struct ClusterStoreContentTests {
    /// A JSON string literal of `text` (the MI's params are JSON).
    static func json(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed])) ?? Data()
        return String(decoding: data, as: UTF8.self).dropFirst().dropLast().description
    }

    /// Every string in a JSON reply, at any depth.
    static func strings(in reply: String) -> [String] {
        func walk(_ value: Any) -> [String] {
            if let text = value as? String { return [text] }
            if let array = value as? [Any] { return array.flatMap(walk) }
            if let object = value as? [String: Any] { return object.values.flatMap(walk) }
            return []
        }
        return (try? JSONSerialization.jsonObject(with: Data(reply.utf8))).map(walk) ?? []
    }

    /// Event names and sockets with quotes, backslashes, dollar quotes and semicolons go
    /// through the store as bind parameters and come back identical on two other nodes; NUL,
    /// which PostgreSQL text cannot hold, is refused with 400 and changes nothing.
    @Test func awkwardNamesRoundTripOnThreeNodesAndNULIsRefused() async throws {
        try await withTeardown { teardown in
            let url = try await ClusterTests.database("evi_cluster_awkward")
            let nodes = try await withThrowingTaskGroup(of: Daemon.self) { group in
                for name in ["A", "B", "C"] { group.addTask { try await ClusterTests.node(name, url: url) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for node in nodes { teardown.add { await node.stop() } }
            let (a, b, c) = (nodes[0], nodes[1], nodes[2])
            let directory = TemporaryDirectory(prefix: "evi-awkward")
            teardown.add { directory.remove() }
            let event = #"E_it's\$$;--x"#
            let socket = "flatstore:" + directory.file(#"it's\$$;DROP&TABLE(evi_subscriptions);--.log"#)
            let published = try ClusterTests.call(a, "evi:publish", "[\(Self.json(event))]")
            #expect(published.contains(#""result":{"#), "\(published)")
            let subscribed = try ClusterTests.call(a, "evi:subscribe", "[\(Self.json(event)),\(Self.json(socket))]")
            #expect(subscribed.contains(#""result":"OK""#), "\(subscribed)")
            for node in [b, c] {
                #expect(
                    await eventually(timeout: .seconds(5)) {
                        Self.strings(
                            in: (try? ClusterTests.call(node, "evi:subscribers", "[\(Self.json(event))]")) ?? ""
                        )
                        .contains(socket)
                    })
            }
            let stored = try await run(
                "/usr/bin/env",
                ["psql", url, "-tA", "-c", "SELECT event || '|' || socket FROM evi_subscriptions"])
            #expect(stored.output == "\(event)|\(socket)\n", "\(stored.output) \(stored.errors)")
            _ = try ClusterTests.call(c, "evi:raise", "[\(Self.json(event)),{\"n\":1}]")
            #expect(
                await eventually(timeout: .seconds(5)) {
                    (try? String(contentsOfFile: String(socket.dropFirst(10)), encoding: .utf8))?.contains(event)
                        ?? false
                })

            let nul = "E_NUL\u{0}X"
            let refusedPublish = try ClusterTests.call(a, "evi:publish", "[\(Self.json(nul))]")
            #expect(refusedPublish.contains(#""code":400"#) && refusedPublish.contains("NUL"), "\(refusedPublish)")
            #expect(!(try ClusterTests.call(a, "evi:list")).contains("E_NUL"), "a refused event was published")
            let nulSocket = "flatstore:" + directory.file("a\u{0}b.log")
            let refusedSubscribe = try ClusterTests.call(
                a, "evi:subscribe", "[\(Self.json(event)),\(Self.json(nulSocket))]")
            #expect(refusedSubscribe.contains(#""code":400"#), "\(refusedSubscribe)")
            let after = try ClusterTests.call(a, "evi:subscribers", "[\(Self.json(event))]")
            #expect(after.components(separatedBy: #""socket":"#).count == 2, "\(after)")
        }
    }

    /// Over a store connection that may be in clear, a socket carrying a password is refused
    /// with the reason and what to set; with `cluster.store_secrets: plaintext` it is stored,
    /// taken by another node and delivered from there — and a relay on the path reads the
    /// password, which is why the default refuses.
    @Test func secretsAreRefusedOverAPlainStoreUnlessTheOperatorSaysPlaintext() async throws {
        try await withTeardown { teardown in
            let url = try await ClusterTests.database("evi_cluster_secrets")
            let queue = "evi.cluster.secrets"
            _ = try await RabbitMQIngressTests.pika(["declare", queue])
            let socket = "rabbitmq:guest:guest@127.0.0.1:\(try RabbitMQIngressTests.brokerPort)/\(queue)"
            let strict = try await ClusterTests.node("S", url: url)
            teardown.add { await strict.stop() }
            let refused = try ClusterTests.call(strict, "evi:subscribe", #"["E_CL","\#(socket)"]"#)
            #expect(refused.contains(#""code":400"#), "\(refused)")
            #expect(
                refused.contains("cluster.store_secrets: plaintext") && refused.contains("sslmode=prefer"), "\(refused)"
            )
            #expect(ClusterTests.subscriberCount(strict) == 0, "a refused subscription was taken")

            let relay = try RecordingRelay(to: ClusterTLSTests.port(of: url))
            teardown.add { relay.close() }
            let relayed = ClusterTLSTests.url(url, port: relay.port, query: "sslmode=disable")
            let writer = try await Daemon.start(
                extra: "state: \"\(relayed)\"\ncluster: { node: W, store_secrets: plaintext }\nevents: [E_CL]\n",
                state: "", logLevel: "info")
            teardown.add { await writer.stop() }
            let reader = try await Daemon.start(
                extra: "state: \"\(url)\"\ncluster: { node: R, store_secrets: plaintext }\nevents: [E_CL]\n",
                state: "", logLevel: "info")
            teardown.add { await reader.stop() }
            let accepted = try ClusterTests.call(writer, "evi:subscribe", #"["E_CL","\#(socket)"]"#)
            #expect(accepted.contains(#""result":"OK""#), "\(accepted)")
            #expect(await eventually(timeout: .seconds(5)) { ClusterTests.subscriberCount(reader) == 1 })
            _ = try ClusterTests.call(reader, "evi:raise", #"["E_CL",{"n":7}]"#)
            var delivered: [String] = []
            for _ in 0..<50 where delivered.isEmpty {
                delivered = try await RabbitMQIngressTests.drain(queue).map(\.body)
                if delivered.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(delivered.count == 1 && delivered.first?.contains(#""n":7"#) == true, "\(delivered)")
            #expect(relay.captured.contains("guest:guest@"), "the plaintext capture has no password")

            // A node with the default rule keeps and applies what is stored, and says how much.
            let later = try await ClusterTests.node("L", url: url)
            teardown.add { await later.stop() }
            #expect(await eventually(timeout: .seconds(5)) { ClusterTests.subscriberCount(later) == 1 })
            #expect(
                await eventually(timeout: .seconds(5)) {
                    later.process.standardError.contains("subscriptions=1")
                        && later.process.standardError.contains("stored subscriptions carry secrets in clear")
                }, "\(later.process.standardError)")
        }
    }
}
