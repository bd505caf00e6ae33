import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// OpenSIPS' own tools from PyPI (`opensipscli`, `opensips`), installed by scripts/test.sh into
/// .venv, drive the real daemon unchanged.
@Suite(.serialized) struct ThirdPartyClientTests {
    static let venv = repositoryRoot.appendingPathComponent(".venv/bin").path

    func tool(_ name: String) throws -> String {
        let path = Self.venv + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw DaemonError(message: "\(path) is missing: run scripts/test.sh, which installs it")
        }
        return path
    }

    func cli(_ daemon: Daemon, _ arguments: [String]) async throws -> (status: Int32, output: String, errors: String) {
        try await run(
            try tool("opensips-cli"),
            ["-o", "communication_type=http", "-o", "url=\(daemon.miURL)", "-x"] + arguments)
    }

    @Test func opensipsCLIOverHTTP() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT, E_X]\n")
            teardown.add { await daemon.stop() }
            let list = try await cli(daemon, ["mi", "events_list"])
            #expect(list.status == 0, "\(list.errors)")
            #expect(list.output.contains("\"E_MY_EVENT\""))
            let plain = try await cli(daemon, ["mi", "event_subscribe", "E_MY_EVENT", "udp:127.0.0.1:9555", "120"])
            #expect(plain.status == 0, "\(plain.errors)")
            let virtual = try await cli(
                daemon, ["mi", "event_subscribe", "E_X", "virtual:FAILOVER udp:127.0.0.1:9556 udp:127.0.0.1:9557"])
            #expect(virtual.status == 0, "\(virtual.errors)")
            let subscribers = try await cli(daemon, ["mi", "subscribers_list"])
            #expect(subscribers.status == 0)
            #expect(subscribers.output.contains("udp:127.0.0.1:9555"))
            #expect(subscribers.output.contains("virtual:FAILOVER udp:127.0.0.1:9556 udp:127.0.0.1:9557"))
            #expect(subscribers.output.contains("\"ttl\""))
            let bad = try await cli(daemon, ["mi", "event_subscribe", "E_MY_EVENT", "udp:127.0.0.1"])
            #expect(bad.output.contains("Bad parameter value") || bad.errors.contains("Bad parameter value"))
        }
    }

    @Test func opensipsCLISubscribesWithAFilter() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT]\n")
            teardown.add { await daemon.stop() }
            let receiver = try DatagramReceiver()
            teardown.add { await receiver.close() }
            let subscribed = try await cli(
                daemon, ["mi", "evi:subscribe", "E_MY_EVENT", receiver.socket, "3600", "callid=abc*"])
            #expect(subscribed.status == 0, "\(subscribed.errors)")
            let listed = try await cli(daemon, ["mi", "evi:subscribers", "E_MY_EVENT"])
            #expect(listed.output.contains(#""filter": "callid=abc*""#), "\(listed.output)")
            for callid in ["xyz-1", "abc-2", "abd-3"] {
                _ = try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_MY_EVENT",{"callid":"\#(callid)"}],"id":1}"#)
            }
            #expect(
                await receiver.waitFor(count: 1) == [
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"callid":"abc-2"}}"#
                ])
            try await Task.sleep(for: .milliseconds(100))
            #expect(receiver.count == 1)
        }
    }

    @Test func opensipsEventReceivesARaiseWithJSONParams() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let listener = Task {
                try await run(
                    try tool("opensips-event"),
                    [
                        "-t", "http", "-i", "127.0.0.1", "-p", "\(daemon.httpPort)", "-li", "127.0.0.1", "-e", "5",
                        "E_X",
                    ],
                    timeout: .seconds(15))
            }
            #expect(
                await eventually(timeout: .seconds(10)) {
                    (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#))?
                        .contains(
                            "udp:127.0.0.1") == true
                })
            let raised = try await cli(daemon, ["--", "mi", "-j", "raise_event", "E_X", #"{"a":1,"b":true,"s":"é"}"#])
            #expect(raised.status == 0, "\(raised.errors)")
            let received = try await listener.value
            // opensips-event prints the notification again (with Python's escapes): decode and compare values.
            let notification = try EventValue(json: received.output)
            #expect(
                notification
                    == ["jsonrpc": "2.0", "method": "E_X", "params": ["a": 1, "b": true, "s": "é"]],
                "\(received.output) \(received.errors)")
            // opensips-event unsubscribes when it ends.
            #expect(
                await eventually(timeout: .seconds(5)) {
                    (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#))
                        == #"{"jsonrpc":"2.0","result":{"Event":{}},"id":1}"#
                })
        }
    }

    @Test func opensipsMIOverDatagrams() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT]\n")
            teardown.add { await daemon.stop() }
            let mi = try tool("opensips-mi")
            let base = ["-t", "datagram", "-i", "127.0.0.1", "-p", "\(daemon.udpPort)"]
            let subscribe = try await run(mi, base + ["event_subscribe", "E_MY_EVENT", "udp:127.0.0.1:9558", "60"])
            #expect(subscribe.status == 0, "\(subscribe.errors)")
            #expect(subscribe.output.contains("OK"))
            let list = try await run(mi, base + ["subscribers_list"])
            #expect(list.status == 0, "\(list.errors)")
            #expect(list.output.contains("udp:127.0.0.1:9558"))
            let events = try await run(mi, base + ["events_list"])
            #expect(events.output.contains("E_MY_EVENT"))
            let receiver = try DatagramReceiver()
            _ = try await run(mi, base + ["event_subscribe", "E_MY_EVENT", receiver.socket])
            let raise = try await run(mi, base + ["raise_event", "E_MY_EVENT", #"{"n": 5}"#])
            #expect(raise.status == 0, "\(raise.errors)")
            #expect(await receiver.waitFor(count: 1) == [#"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"n":5}}"#])
            await receiver.close()
        }
    }
}
