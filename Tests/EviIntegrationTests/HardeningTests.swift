import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The faults found by attacking the release daemon (the hardening issue), each reproduced here
/// against the real `evi serve`.
@Suite(.serialized) struct HardeningTests {
    /// A reply from another server, a parse error, a non-object batch, a wrong token: no datagram
    /// back (the reply loop and the 40× amplification), each counted by reason. A valid request
    /// larger than NIO's default 2,048-byte buffer is read whole.
    @Test func miOverUDPAnswersOnlyValidAuthorisedRequests() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n", token: "s3cret")
            teardown.add { await daemon.stop() }
            let silent = [
                #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
                #"{"jsonrpc":"2.0","result":"OK","id":7}"#,
                "{not json",
                "[" + Array(repeating: "1", count: 800).joined(separator: ",") + "]",
                #"{"jsonrpc":"2.0","method":"version","id":1,"token":"wrong"}"#,
            ]
            for body in silent {
                #expect(
                    try udpExchange(port: daemon.udpPort, body, timeoutMilliseconds: 300) == nil, "answered: \(body)")
            }
            let padding = String(repeating: "p", count: 10_000)
            let large =
                #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"pad":"\#(padding)"}],"id":3,"token":"s3cret"}"#
            #expect(
                try udpExchange(port: daemon.udpPort, large)
                    == #"{"jsonrpc":"2.0","error":{"code":480,"message":"Temporarily Unavailable","data":"no subscriber for E_X"},"id":3}"#
            )
            let metrics = try RawHTTP.request(
                port: daemon.httpPort, method: "GET", path: "/metrics", headers: [("Authorization", "Bearer s3cret")]
            ).bodyText
            for (reason, count) in [
                ("not_a_request", 3), ("parse_error", 1), ("unauthorized", 1), ("invalid_request", 0),
            ] {
                #expect(
                    metrics.contains(#"evi_mi_dropped_total{reason="\#(reason)"} \#(count)"#), "\(reason)\n\(metrics)")
            }
        }
    }

    /// `401` and `413` are sent on the request head, before any body, with `Connection: close`;
    /// `Bearer` is accepted in any case; `/metrics` needs the token too.
    @Test func httpRefusesOnTheHeadAndGuardsMetrics() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(token: "s3cret")
            teardown.add { await daemon.stop() }
            for (headers, status) in [
                ("Content-Length: 1000000\r\n", "401"),
                ("Authorization: Bearer s3cret\r\nContent-Length: 5000000\r\n", "413"),
            ] {
                let connection = try RawConnection(port: daemon.httpPort)
                defer { connection.close() }
                try connection.send("POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)\r\n")
                let reply = connection.read(timeoutMilliseconds: 2000)
                #expect(reply.hasPrefix("HTTP/1.1 \(status)"), "\(reply)")
                #expect(reply.lowercased().contains("connection: close"))
            }
            let lower = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8),
                headers: [("Authorization", "bearer s3cret")])
            #expect(lower.status == 200)
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").status == 401)
            let scraped = try RawHTTP.request(
                port: daemon.httpPort, method: "GET", path: "/metrics", headers: [("Authorization", "Bearer s3cret")])
            #expect(scraped.status == 200)
            #expect(scraped.bodyText.contains("evi_mi_dropped_total"))
        }
    }

    /// Idle connections and slow heads are closed; at `mi.max_connections` the oldest connection
    /// that made no authenticated request goes, and one that did stays.
    @Test func httpConnectionsAreBoundedInNumberAndTime() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(
                extra: "", token: nil, logLevel: "warning",
                miExtra: "  max_connections: 3\n  header_timeout: 0.5\n  idle_timeout: 1\n")
            teardown.add { await daemon.stop() }
            let slow = try RawConnection(port: daemon.httpPort)
            defer { slow.close() }
            try slow.send("POST /mi HTTP/1.1\r\nHo")
            #expect(await eventually(timeout: .seconds(3)) { slow.isClosedByPeer })

            let idle = try RawConnection(port: daemon.httpPort)
            defer { idle.close() }
            #expect(await eventually(timeout: .seconds(4)) { idle.isClosedByPeer })

            let trusted = try RawConnection(port: daemon.httpPort)
            defer { trusted.close() }
            let body = #"{"jsonrpc":"2.0","method":"version","id":1}"#
            try trusted.send(
                "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            #expect(trusted.read(timeoutMilliseconds: 2000).contains("evi 0.2.0"))
            let first = try RawConnection(port: daemon.httpPort)
            defer { first.close() }
            try await Task.sleep(for: .milliseconds(50))
            let second = try RawConnection(port: daemon.httpPort)
            defer { second.close() }
            try await Task.sleep(for: .milliseconds(50))
            let third = try RawConnection(port: daemon.httpPort)
            defer { third.close() }
            #expect(await eventually(timeout: .seconds(2)) { first.isClosedByPeer })
            #expect(!trusted.isClosedByPeer)
            #expect(!second.isClosedByPeer)
            // The trusted connection still works.
            try trusted.send(
                "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            #expect(trusted.read(timeoutMilliseconds: 2000).contains("evi 0.2.0"))
        }
    }

    /// `expire: 9223372036854775807` used to be accepted and crash the next listing (and, stored,
    /// every restart): now it is refused and nothing changes.
    @Test func anExpireTooLargeIsRefusedAndListingsStillWork() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:7300",9223372036854775807],"id":1}"#
                )
                    == #"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad parameter value","data":"expire too large (max 2147483647)"},"id":1}"#
            )
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:7300",2147483647],"id":2}"#
                )
                    == #"{"jsonrpc":"2.0","result":"OK","id":2}"#)
            #expect(
                try daemon.mi(#"{"jsonrpc":"2.0","method":"subscribers_list","id":3}"#).contains(#""ttl":2147483647"#))
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").status == 200)
            #expect(daemon.process.isRunning)
        }
    }

    /// A RabbitMQ password never leaves the daemon: not in MI error data (a bad member of a virtual
    /// socket quoted whole), not in configuration errors, not in the warning about a stored
    /// subscription that no longer parses, not in listings, metrics or logs.
    @Test func aPasswordAppearsInNoOutput() async throws {
        let password = "Pw-4f9c1e-secret"
        let state = TemporaryDirectory(prefix: "evi-redact")
        defer { state.remove() }
        let gone = state.file("gone")
        try FileManager.default.createDirectory(atPath: gone, withIntermediateDirectories: true)

        let config = try EviProcess(
            ["serve"],
            config: "mi: { http: 127.0.0.1:0, datagram: off }\nstate: memory\nevents: [E_X]\nsubscriptions:\n"
                + "  - { event: E_X, socket: \"virtual:FAILOVER rabbitmq:u:\(password)@127.0.0.1/k udp:127.0.0.1\" }\n")
        #expect(await config.waitForExit() == 2)
        #expect(config.standardError.contains("udp socket needs a port"), "\(config.standardError)")
        var seen = [config.standardOutput, config.standardError]
        await config.stop()

        let first = try await Daemon.start(
            extra: "events: [E_X]\nstate: \(state.path)\n", state: state.path, logLevel: "debug")
        let bad = try first.mi(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","virtual:FAILOVER rabbitmq:u:\#(password)@127.0.0.1/k udp:127.0.0.1"],"id":1}"#
        )
        #expect(bad.contains("Bad parameter value"), "\(bad)")
        _ = try first.mi(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","virtual:PARALLEL rabbitmq:u:\#(password)@127.0.0.1:1/k flatstore:\#(gone)/x.log"],"id":2}"#
        )
        _ = try first.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"n":1}],"id":3}"#)
        try await Task.sleep(for: .milliseconds(300))
        seen += [
            bad, try first.mi(#"{"jsonrpc":"2.0","method":"subscribers_list","id":4}"#),
            try RawHTTP.request(port: first.httpPort, method: "GET", path: "/metrics").bodyText,
        ]
        first.process.signal(SIGTERM)
        _ = await first.process.waitForExit()
        seen += [first.process.standardOutput, first.process.standardError]
        await first.stop()
        // The stored subscription no longer parses once its directory is gone: a warning at start.
        try FileManager.default.removeItem(atPath: gone)
        let second = try await Daemon.start(
            extra: "events: [E_X]\nstate: \(state.path)\n", state: state.path, logLevel: "debug")
        try await Task.sleep(for: .milliseconds(200))
        seen += [second.process.standardOutput, second.process.standardError]
        #expect(second.process.standardError.contains("subscription not restored"), "\(second.process.standardError)")
        await second.stop()
        for output in seen {
            #expect(!output.contains(password), "the password leaked: \(output.suffix(600))")
        }
    }

    /// An expired subscription releases its file (or connection) within a couple of seconds even
    /// when its event is never raised again; and its `evi_virtual_member_up` series goes too.
    @Test func expiredSubscriptionsReleaseTheirDescriptorsAndSeries() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-expiry")
            teardown.add { directory.remove() }
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let log = directory.file("expiring.log")
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","virtual:PARALLEL flatstore:\#(log)",1],"id":1}"#
            )
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"n":1}],"id":2}"#)
            func openDescriptors() -> Int {
                let fds = "/proc/\(daemon.process.child.pid)/fd"
                return ((try? FileManager.default.contentsOfDirectory(atPath: fds)) ?? []).filter {
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: fds + "/" + $0)) == log
                }.count
            }
            #expect(await eventually { openDescriptors() == 1 })
            let metrics = { try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText }
            #expect(try metrics().contains("evi_virtual_member_up{event=\"E_X\""))
            #expect(await eventually(timeout: .seconds(5)) { openDescriptors() == 0 })
            #expect(try !metrics().contains("evi_virtual_member_up{event=\"E_X\""))
        }
    }

    @Test func anEmptyTokenIsAConfigurationError() async throws {
        try await withTeardown { teardown in
            let evi = try EviProcess(
                ["serve"], config: "mi:\n  http: 127.0.0.1:0\n  datagram: off\n  token: \"\"\nstate: memory\n")
            teardown.add { await evi.stop() }
            #expect(await evi.waitForExit() == 2)
            #expect(evi.standardError.contains("mi.token must not be empty"))
        }
    }
}

/// A raw TCP connection for requests that a well-behaved client would not make.
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; with `receiveBuffer`, a receive buffer that small (set
    /// before connecting, so that the window the peer sees is small from the start).
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let connected = withLoopbackAddress(port: port) { [fd] in connect(fd, $0, $1) }
        guard connected == 0 else { throw DaemonError(message: "connect \(port): errno \(errno)") }
    }

    /// A connection a ``RawListener`` accepted.
    init(accepted descriptor: Int32) {
        fd = descriptor
    }

    func send(bytes: [UInt8]) throws {
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw DaemonError(message: "send failed: errno \(errno)")
        }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw DaemonError(message: "send failed: errno \(errno)")
        }
    }

    /// What arrives within the timeout (until the peer closes or goes quiet for 200 ms).
    func read(timeoutMilliseconds: Int) -> String {
        String(decoding: readBytes(timeoutMilliseconds: timeoutMilliseconds), as: UTF8.self)
    }

    /// The same, as bytes (a WebSocket frame is not text).
    func readBytes(timeoutMilliseconds: Int) -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let wait = received.isEmpty ? 50 : 200
            guard poll(&poller, 1, Int32(wait)) > 0 else {
                if received.isEmpty { continue } else { break }
            }
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            received += buffer[0..<count]
        }
        return received
    }

    /// Whether the peer has closed (end of file or a reset), without blocking; what it sent
    /// before closing (a 401, say) is read and dropped on the way.
    var isClosedByPeer: Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 { continue }
            return count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    func close() { Glibc.close(fd) }
}

/// A TCP server on 127.0.0.1 that a test drives by hand (a Kamailio evapi for evi to connect to).
final class RawListener: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let bound = withLoopbackAddress(port: 0) { [fd] in bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 8) == 0, let port = localPort(of: fd) else {
            Glibc.close(fd)
            throw DaemonError(message: "listen: errno \(errno)")
        }
        self.port = port
    }

    /// The next connection, waiting at most `timeout`.
    func accept(timeout: Duration = .seconds(10)) -> RawConnection? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(timeout.components.seconds * 1000)
        guard poll(&poller, 1, milliseconds) > 0 else { return nil }
        let connection = Glibc.accept(fd, nil, nil)
        return connection >= 0 ? RawConnection(accepted: connection) : nil
    }

    func close() { Glibc.close(fd) }
}
