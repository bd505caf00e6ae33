import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Synchronization
import Testing

/// Durable subscriptions through real crashes.
@Suite(.serialized) struct StateTests {
    @Test func killDashNineWhileAClientSubscribesLosesNoAcknowledgedSubscription() async throws {
        try await withTeardown { teardown in
            let state = TemporaryDirectory(prefix: "evi-state")
            teardown.add { state.remove() }
            let config = "events: [E_X]\nstate: \(state.path)\n"
            let first = try await Daemon.start(extra: config, state: state.path)
            // A runtime-published event and its subscription must come back too.
            _ = try first.mi(#"{"jsonrpc":"2.0","method":"evi:publish","params":["E_RUNTIME"],"id":1}"#)
            _ = try first.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_RUNTIME","udp:127.0.0.1:7000",900],"id":1}"#)
            let acknowledged = Mutex<[Int]>([])
            let port = first.httpPort
            let client = Task.detached {
                for index in 1...100_000 {
                    let body =
                        #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:\#(10_000 + index)",600],"id":1}"#
                    guard
                        let reply = try? RawHTTP.request(
                            port: port, method: "POST", path: "/mi", body: Array(body.utf8)),
                        reply.bodyText == #"{"jsonrpc":"2.0","result":"OK","id":1}"#
                    else { return }
                    acknowledged.withLock { $0.append(10_000 + index) }
                }
            }
            try await Task.sleep(for: .milliseconds(700))
            first.process.signal(SIGKILL)
            _ = await client.value
            _ = await first.process.waitForExit()
            let seen = acknowledged.withLock { $0 }
            #expect(seen.count > 20, "the client got \(seen.count) acknowledgements before the kill")

            let second = try await Daemon.start(extra: config, state: state.path)
            teardown.add { await second.stop() }
            let listed = try second.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#)
            guard case .object(let top) = try EventValue(json: listed),
                case .object(let result)? = top.first(where: { $0.name == "result" })?.value,
                case .object(let event)? = result.first?.value,
                case .array(let subscribers)? = event.first(where: { $0.name == "Subscribers" })?.value
            else {
                Issue.record("unexpected reply \(listed)")
                return
            }
            var restored: [Int: Int] = [:]
            for subscriber in subscribers {
                guard case .object(let fields) = subscriber, case .string(let socket)? = fields.first?.value,
                    case .int(let ttl)? = fields.first(where: { $0.name == "ttl" })?.value,
                    fields.first(where: { $0.name == "expire" })?.value == .int(600),
                    let port = Int(socket.split(separator: ":").last ?? "")
                else { continue }
                restored[port] = Int(ttl)
            }
            let missing = seen.filter { restored[$0] == nil }
            #expect(missing.isEmpty, "\(missing.count) of \(seen.count) acknowledged subscriptions missing")
            #expect(restored.values.allSatisfy { $0 <= 600 && $0 >= 590 })
            #expect(
                try second.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_RUNTIME"],"id":1}"#).contains(
                    "udp:127.0.0.1:7000"))
            print(
                "state: \(seen.count) subscriptions acknowledged before kill -9, \(seen.count - missing.count) restored"
            )
            await first.process.stop()
        }
    }

    /// Hardening: a durable write that fails (the database locked by another process) is answered
    /// `500 "Internal error"`, `not stored: …`, and the subscription is not left in memory; while
    /// it waits, deliveries go on (the write runs off the delivery threads).
    @Test func aFailedDurableWriteIsAnErrorAndChangesNothing() async throws {
        try await withTeardown { teardown in
            let state = TemporaryDirectory(prefix: "evi-state-locked")
            teardown.add { state.remove() }
            let daemon = try await Daemon.start(
                extra: "events: [E_X, E_LIVE]\nstate: \(state.path)\n", state: state.path)
            teardown.add { await daemon.stop() }
            let receiver = try DatagramReceiver()
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_LIVE","\#(receiver.socket)"],"id":1}"#)
            let locker = try ChildProcess(
                executable: "/usr/bin/env",
                arguments: [
                    "python3", "-c",
                    "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
                    state.file("subscriptions.sqlite"),
                ], directory: state.path, outputPath: state.file("locker.out"), errorPath: state.file("locker.err"))
            defer { locker.signal(SIGKILL) }
            #expect(await eventually(timeout: .seconds(10)) { locker.output.contains("locked") }, "\(locker.errors)")
            let port = daemon.httpPort
            let subscribing = Task.detached {
                try RawHTTP.request(
                    port: port, method: "POST", path: "/mi",
                    body: Array(
                        #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:7001"],"id":2}"#.utf8
                    )
                ).bodyText
            }
            try await Task.sleep(for: .milliseconds(300))
            // Meanwhile, deliveries are not held up.
            let started = ContinuousClock.now
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_LIVE",{"n":1}],"id":3}"#)
            #expect(await receiver.waitFor(count: 1, timeout: .seconds(2)).count == 1)
            #expect(ContinuousClock.now - started < .seconds(1))
            let reply = try await subscribing.value
            #expect(
                reply.hasPrefix(
                    #"{"jsonrpc":"2.0","error":{"code":500,"message":"Internal error","data":"not stored: "#),
                "\(reply)")
            #expect(
                try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":4}"#)
                    == #"{"jsonrpc":"2.0","result":{"Event":{}},"id":4}"#)
            await receiver.close()
        }
    }

    /// Hardening: a PARALLEL unsubscribed with its members in another order stays unsubscribed
    /// after a restart (state is keyed by what matching compares).
    @Test func aReorderedParallelUnsubscribeIsDurable() async throws {
        try await withTeardown { teardown in
            let state = TemporaryDirectory(prefix: "evi-state-reorder")
            teardown.add { state.remove() }
            let config = "events: [E_X]\nstate: \(state.path)\n"
            let first = try await Daemon.start(extra: config, state: state.path)
            _ = try first.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","virtual:PARALLEL udp:127.0.0.1:7101 udp:127.0.0.1:7102"],"id":1}"#
            )
            #expect(
                try first.mi(
                    #"{"jsonrpc":"2.0","method":"evi:unsubscribe","params":["E_X","virtual:PARALLEL udp:127.0.0.1:7102 udp:127.0.0.1:7101"],"id":2}"#
                ) == #"{"jsonrpc":"2.0","result":"OK","id":2}"#)
            await first.stop()
            let second = try await Daemon.start(extra: config, state: state.path)
            teardown.add { await second.stop() }
            #expect(
                try second.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":3}"#)
                    == #"{"jsonrpc":"2.0","result":{"Event":{}},"id":3}"#)
        }
    }

    /// Hardening: the database (passwords inside) is 0600 even in an existing directory, and a
    /// state directory others can write to stops start-up.
    @Test func stateFilesArePrivateAndAnOpenDirectoryIsRefused() async throws {
        try await withTeardown { teardown in
            let state = TemporaryDirectory(prefix: "evi-state-modes")
            teardown.add { state.remove() }
            chmod(state.path, 0o755)
            let database = state.file("subscriptions.sqlite")
            _ = FileManager.default.createFile(atPath: database, contents: nil, attributes: [.posixPermissions: 0o644])
            let daemon = try await Daemon.start(extra: "events: [E_X]\nstate: \(state.path)\n", state: state.path)
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","rabbitmq:u:pw@127.0.0.1/k"],"id":1}"#)
            for file in [database, database + "-wal", database + "-shm", database + "-journal"]
            where FileManager.default.fileExists(atPath: file) {
                var info = stat()
                stat(file, &info)
                #expect(info.st_mode & 0o777 == 0o600, "\(file) has mode \(String(info.st_mode & 0o777, radix: 8))")
            }
            await daemon.stop()
            chmod(state.path, 0o775)
            let refused = try EviProcess(
                ["serve"], config: "mi:\n  http: 127.0.0.1:0\n  datagram: 127.0.0.1:0\nstate: \(state.path)\n")
            teardown.add { await refused.stop() }
            #expect(await refused.waitForExit() == 2)
            #expect(
                refused.standardError.contains("is writable by group or others (mode 775)"), "\(refused.standardError)")
        }
    }
}
