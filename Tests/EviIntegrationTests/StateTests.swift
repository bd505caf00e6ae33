import EventInterface
import EventInterfaceTestKit
import Foundation
import Synchronization
import Testing

/// Durable subscriptions through real crashes.
@Suite(.serialized) struct StateTests {
    @Test func killDashNineWhileAClientSubscribesLosesNoAcknowledgedSubscription() async throws {
        let state = TemporaryDirectory(prefix: "evi-state")
        defer { state.remove() }
        let config = "events: [E_X]\nstate: \(state.path)\n"
        let first = try await Daemon.start(extra: config, state: state.path)
        // A runtime-published event and its subscription must come back too.
        _ = try first.mi(#"{"jsonrpc":"2.0","method":"evi:publish","params":["E_RUNTIME"],"id":1}"#)
        _ = try first.mi(#"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_RUNTIME","udp:127.0.0.1:7000",900],"id":1}"#)
        let acknowledged = Mutex<[Int]>([])
        let port = first.httpPort
        let client = Task.detached {
            for index in 1...100_000 {
                let body = #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:\#(10_000 + index)",600],"id":1}"#
                guard let reply = try? RawHTTP.request(port: port, method: "POST", path: "/mi", body: Array(body.utf8)),
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
        defer { Task { await second.stop() } }
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
        print("state: \(seen.count) subscriptions acknowledged before kill -9, \(seen.count - missing.count) restored")
        await first.process.stop()
    }
}
