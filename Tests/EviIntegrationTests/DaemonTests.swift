import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// The real `evi serve` process, driven over real sockets.
@Suite(.serialized) struct DaemonTests {
    /// The one test that needs the built-in ports: when something else holds them (an `evi serve`
    /// started by the README's first command), it is skipped and says so, rather than failing
    /// after a timeout. CI checks the defaults separately (`.ci/run`).
    @Test(
        .disabled(
            if: DefaultPorts.taken != nil,
            "skipped: \(DefaultPorts.taken ?? "") is taken by another process (an `evi serve` running?)"))
    func servesOnBuiltInDefaultsAndStopsOnSIGTERM() async throws {
        try await withTeardown { teardown in
            let evi = try EviProcess(["serve"])
            teardown.add { await evi.stop() }
            #expect(
                await eventually(timeout: .seconds(20)) { evi.standardOutput.contains("listening") || !evi.isRunning },
                "\(evi.standardError)")
            #expect(
                evi.standardOutput
                    == "evi 0.2.0 listening: MI over HTTP on http://127.0.0.1:8888/mi, MI over UDP on 127.0.0.1:8080; "
                    + "state in \(evi.directory.path)/evi-state\n")
            let reply = try RawHTTP.request(
                port: 8888, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8))
            #expect(reply.bodyText == #"{"jsonrpc":"2.0","result":{"Server":"evi 0.2.0"},"id":1}"#)
            evi.signal(SIGTERM)
            #expect(await evi.waitForExit() == 0)
        }
    }

    /// A relative `state` is the configuration file's neighbour, printed absolute; a port that is
    /// taken ends start-up with a plain reason before the state directory is made.
    @Test func stateIsResolvedAgainstTheConfigurationAndATakenPortTouchesNothing() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-state-path")
            teardown.add { directory.remove() }
            let config = directory.file("evi.yaml")
            try "mi:\n  http: 127.0.0.1:0\n  datagram: 127.0.0.1:0\nstate: ./here/state\n".write(
                toFile: config, atomically: true, encoding: .utf8)
            let evi = try EviProcess(["serve", "--config", config])
            teardown.add { await evi.stop() }
            #expect(await eventually(timeout: .seconds(20)) { evi.standardOutput.contains("listening") })
            #expect(evi.standardOutput.hasSuffix("; state in \(directory.path)/here/state\n"), "\(evi.standardOutput)")
            #expect(FileManager.default.fileExists(atPath: directory.file("here/state/subscriptions.sqlite")))
            #expect(!FileManager.default.fileExists(atPath: evi.directory.file("here")))
            let port =
                Int(evi.standardOutput.components(separatedBy: "http://127.0.0.1:")[1].prefix { $0.isNumber }) ?? 0

            try "mi:\n  http: 127.0.0.1:\(port)\n  datagram: 127.0.0.1:0\nstate: ./second\n".write(
                toFile: config, atomically: true, encoding: .utf8)
            let second = try EviProcess(["serve", "--config", config])
            teardown.add { await second.stop() }
            #expect(await second.waitForExit() == 1)
            #expect(
                second.standardError
                    == "evi: cannot listen for MI over HTTP on 127.0.0.1:\(port): Address already in use\n")
            #expect(!FileManager.default.fileExists(atPath: directory.file("second")))
        }
    }

    @Test func badConfigurationsExitWithStatusTwoNamingTheKey() async throws {
        let cases: [(String, String)] = [
            ("colour: blue\n", "unknown key 'colour'"),
            ("mi:\n  http: 127.0.0.1:0\n  ftp: 1\n", "unknown key 'mi.ftp'"),
            ("queue_size: lots\n", "queue_size: expected a whole number from 1 to 10000000, got 'lots'"),
            (
                "log_level: loud\n",
                "log_level: expected trace, debug, info, notice, warning, error or critical, got 'loud'"
            ),
            ("mi:\n  http: nowhere\n", "mi.http: expected HOST:PORT or off, got 'nowhere'"),
            (
                "events: [E_X]\nsubscriptions:\n  - event: E_X\n    socket: udp:127.0.0.1\n",
                "subscriptions[0]: udp socket needs a port: udp:127.0.0.1"
            ),
            (
                "subscriptions:\n  - event: E_NONE\n    socket: udp:127.0.0.1:9\n",
                "subscriptions[0]: event not published: E_NONE"
            ),
            (
                "mi:\n  http: 0.0.0.0:0\n  datagram: off\n",
                "mi.http: listening on 0.0.0.0:0, not loopback, requires mi.token"
            ),
            ("modules:\n  event_virtual: { failover_timeout: -1 }\n", "modules.event_virtual.failover_timeout"),
            ("- just\n- a list\n", "top level: expected a mapping"),
        ]
        for (config, message) in cases {
            let evi = try EviProcess(["serve"], config: config)
            let status = await evi.waitForExit()
            #expect(status == 2, "\(config)")
            #expect(evi.standardError.contains(message), "\(evi.standardError)")
            #expect(!evi.standardOutput.contains("listening"))
            await evi.stop()
        }
    }

    @Test func aTakenPortEndsTheDaemonWithStatusOneAndAMessage() async throws {
        try await withTeardown { teardown in
            let blocker = try await Daemon.start()
            teardown.add { await blocker.stop() }
            let started = ContinuousClock.now
            let evi = try EviProcess(
                ["serve"], config: "mi:\n  http: 127.0.0.1:\(blocker.httpPort)\n  datagram: off\nstate: memory\n")
            #expect(await evi.waitForExit(timeout: .seconds(10)) == 1)
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(evi.standardError.contains("cannot listen for MI over HTTP on 127.0.0.1:\(blocker.httpPort)"))
            #expect(evi.standardError.contains("Address already in use"))
            await evi.stop()
            // The same for the datagram listener.
            let udp = try EviProcess(
                ["serve"], config: "mi:\n  http: off\n  datagram: 127.0.0.1:\(blocker.udpPort)\nstate: memory\n")
            #expect(await udp.waitForExit(timeout: .seconds(10)) == 1)
            #expect(udp.standardError.contains("cannot listen for MI over UDP"))
            await udp.stop()
        }
    }

    @Test func httpStatusesOfMI() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start()
            teardown.add { await daemon.stop() }
            let get = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/mi")
            #expect(get.status == 405)
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/other").status == 404)
            let notification = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"evi:publish","params":["E_NOTIFIED"]}"#.utf8))
            #expect(notification.status == 204)
            #expect(notification.body.isEmpty)
            #expect(try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:list","id":1}"#).contains("E_NOTIFIED"))
            let huge = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(repeating: UInt8(ascii: " "), count: 2 << 20))
            #expect(huge.status == 413)
            #expect(huge.header("Connection") == "close")
            let error = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi", body: Array("{bad".utf8))
            #expect(error.status == 200)
            #expect(error.header("Content-Type") == "application/json")
            #expect(error.bodyText == #"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#)
        }
    }

    @Test func aTokenGuardsHTTPAndDatagrams() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(token: "s3cret")
            teardown.add { await daemon.stop() }
            let body = Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8)
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "POST", path: "/mi", body: body).status == 401)
            let wrong = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi", body: body,
                headers: [("Authorization", "Bearer nope")])
            #expect(wrong.status == 401)
            let right = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi", body: body,
                headers: [("Authorization", "Bearer s3cret")])
            #expect(right.bodyText == #"{"jsonrpc":"2.0","result":{"Server":"evi 0.2.0"},"id":1}"#)
            // Over UDP a request without the token gets no reply at all (hardening: a datagram's
            // source can be forged, so nothing unauthorised is answered).
            #expect(
                try udpExchange(
                    port: daemon.udpPort, #"{"jsonrpc":"2.0","method":"version","id":1}"#, timeoutMilliseconds: 300)
                    == nil)
            #expect(
                try udpExchange(port: daemon.udpPort, #"{"jsonrpc":"2.0","method":"version","id":1,"token":"s3cret"}"#)
                    == #"{"jsonrpc":"2.0","result":{"Server":"evi 0.2.0"},"id":1}"#)
        }
    }

    @Test func miOverUDPAnswersRequestsAndNotNotifications() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT]\n")
            teardown.add { await daemon.stop() }
            let receiver = try DatagramReceiver()
            #expect(
                try udpExchange(
                    port: daemon.udpPort,
                    #"{"jsonrpc":"2.0","method":"event_subscribe","params":{"event":"E_MY_EVENT","socket":"\#(receiver.socket)","expire":30},"id":7}"#
                )
                    == #"{"jsonrpc":"2.0","result":"OK","id":7}"#)
            #expect(
                try udpExchange(
                    port: daemon.udpPort,
                    #"{"jsonrpc":"2.0","method":"subscribers_list","params":["E_MY_EVENT"],"id":"abc"}"#)
                    == #"{"jsonrpc":"2.0","result":{"Event":{"name":"E_MY_EVENT","id":3,"Subscribers":[{"socket":"\#(receiver.socket)","expire":30,"ttl":30}]}},"id":"abc"}"#
            )
            #expect(
                try udpExchange(
                    port: daemon.udpPort,
                    #"{"jsonrpc":"2.0","method":"raise_event","params":{"event":"E_MY_EVENT","params":"{\"name\":\"alice\",\"count\":7}"},"id":8}"#
                )
                    == #"{"jsonrpc":"2.0","result":"OK","id":8}"#)
            #expect(
                try udpExchange(
                    port: daemon.udpPort, #"{"jsonrpc":"2.0","method":"raise_event","params":{"event":"E_MY_EVENT"}}"#,
                    timeoutMilliseconds: 300) == nil)
            #expect(
                await receiver.waitFor(count: 2) == [
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"name":"alice","count":7}}"#,
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT"}"#,
                ])
            await receiver.close()
        }
    }

    @Test func metricsHaveEveryFamilyFromStartUp() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT]\n")
            teardown.add { await daemon.stop() }
            let metrics = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
            for family in [
                "evi_events_raised_total", "evi_deliveries_total", "evi_delivery_seconds", "evi_dropped_total",
                "evi_undelivered_total", "evi_queue_depth", "evi_subscriptions", "evi_virtual_member_up",
            ] {
                #expect(metrics.bodyText.contains("# TYPE \(family) "), "\(family)")
            }
            #expect(metrics.bodyText.contains(#"evi_events_raised_total{event="E_MY_EVENT"} 0"#))
            // After traffic the counters move.
            let receiver = try DatagramReceiver()
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_MY_EVENT","virtual:PARALLEL \#(receiver.socket)"],"id":1}"#
            )
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_MY_EVENT"],"id":1}"#)
            await receiver.waitFor(count: 1)
            try await Task.sleep(for: .milliseconds(50))
            let after = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
            #expect(after.contains(#"evi_events_raised_total{event="E_MY_EVENT"} 1"#))
            #expect(after.contains(#"evi_deliveries_total{transport="udp",result="success"} 1"#))
            #expect(after.contains(#"evi_subscriptions{event="E_MY_EVENT"} 1"#))
            #expect(
                after.contains(
                    #"evi_virtual_member_up{event="E_MY_EVENT",socket="virtual:PARALLEL \#(receiver.socket)",member="\#(receiver.socket)"} 1"#
                ))
            await receiver.close()
        }
    }

    @Test func sigtermDeliversWhatIsQueuedThenExitsZero() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_MY_EVENT]\nshutdown_grace: 5\n")
            teardown.add { await daemon.stop() }
            let receiver = try DatagramReceiver()
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_MY_EVENT","\#(receiver.socket)"],"id":1}"#)
            // Two batches: a batch holds at most 1,000 requests.
            var reply = ""
            for first in [0, 1000] {
                let batch = (first..<first + 1000).map {
                    #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_MY_EVENT",{"n":\#($0)}],"id":\#($0)}"#
                }
                reply += try daemon.mi("[" + batch.joined(separator: ",") + "]")
            }
            #expect(reply.components(separatedBy: #""result":"OK""#).count - 1 == 2000)
            daemon.process.signal(SIGTERM)
            #expect(await daemon.process.waitForExit() == 0)
            #expect(await receiver.waitFor(count: 2000).count == 2000)
            // After the stop, nothing listens.
            #expect(throws: (any Error).self) { try daemon.mi(#"{"jsonrpc":"2.0","method":"version","id":1}"#) }
            await receiver.close()
        }
    }
}

/// Sends one datagram to the MI and returns the reply, or nil when none comes in time.
func udpExchange(port: Int, _ body: String, timeoutMilliseconds: Int = 3000) throws -> String? {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    defer { close(fd) }
    var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: Int((timeoutMilliseconds % 1000) * 1000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array(body.utf8)
    _ = withLoopbackAddress(port: port) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
    var buffer = [UInt8](repeating: 0, count: 65_536)
    let count = recv(fd, &buffer, buffer.count, 0)
    guard count > 0 else { return nil }
    return String(decoding: buffer[0..<count], as: UTF8.self)
}

/// The built-in MI addresses (`127.0.0.1:8888` over HTTP, `127.0.0.1:8080` over UDP), and which of
/// them another process already holds.
enum DefaultPorts {
    static var taken: String? {
        if !canBind(port: 8888, type: SOCK_STREAM) { return "127.0.0.1:8888 (tcp)" }
        if !canBind(port: 8080, type: SOCK_DGRAM) { return "127.0.0.1:8080 (udp)" }
        return nil
    }

    private static func canBind(port: UInt16, type: __socket_type) -> Bool {
        let descriptor = socket(AF_INET, Int32(type.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return withLoopbackAddress(port: Int(port)) { bind(descriptor, $0, $1) == 0 }
    }
}

/// `GET /health` and `GET /ready` for orchestrators and load balancers: no token needed; while the
/// daemon drains its queues at shutdown, `/ready` and `/mi` answer 503 (the listener stays up).
@Suite(.serialized) struct HealthTests {
    @Test func healthAndReadinessNeedNoToken() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(token: "s3cret")
            teardown.add { await daemon.stop() }
            let health = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/health")
            #expect(health.status == 200 && health.bodyText == #"{"status":"up"}"#)
            let ready = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/ready")
            #expect(ready.status == 200 && ready.bodyText == #"{"ready":true,"state":"ready"}"#, "\(ready.bodyText)")
            let mi = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8))
            #expect(mi.status == 401)
        }
    }

    @Test func whileDrainingReadyAndTheMIAnswer503() async throws {
        try await withTeardown { teardown in
            let stuck = try JSONRPCTestServer(mode: .neverReply)
            defer { stuck.close() }
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_DRAIN]
                    shutdown_grace: 4
                    subscriptions:
                      - { event: E_DRAIN, socket: "\(stuck.socket)" }
                    modules:
                      event_stream: { reliable_mode: true, timeout: 10000 }

                    """)
            teardown.add { await daemon.stop() }
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_DRAIN",{"n":1}],"id":1}"#)
            #expect(await stuck.waitFor(count: 1).count == 1)  // in flight: the drain has work to wait for
            daemon.process.signal(SIGTERM)
            let draining = await eventually(timeout: .seconds(3)) {
                (try? RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/ready"))?.status == 503
            }
            #expect(draining)
            let ready = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/ready")
            #expect(ready.bodyText == #"{"ready":false,"state":"draining"}"#, "\(ready.bodyText)")
            let mi = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8))
            #expect(mi.status == 503)
            #expect(await daemon.process.waitForExit(timeout: .seconds(15)) == 0)
        }
    }
}
