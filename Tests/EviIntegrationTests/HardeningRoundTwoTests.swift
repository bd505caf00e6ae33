import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The second round of attacks on the release daemon (the hardening issue's second round), each
/// reproduced against the real `evi serve`: peers that write and never read, DNS rebinding,
/// another site's WebSocket, aborted upgrades, unmasked frames, a webhook to evi's own MI.
@Suite(.serialized) struct HardeningRoundTwoTests {
    /// Resident memory of a process, in bytes.
    static func residentBytes(of pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// Sends `chunk` again and again without reading anything, until `limit` bytes went or the
    /// peer took nothing for a second; returns the bytes sent.
    static func flood(_ connection: RawConnection, _ chunk: [UInt8], limit: Int, within: Duration = .seconds(20))
        -> Int
    {
        var sent = 0
        var offset = 0
        let deadline = ContinuousClock.now + within
        while sent < limit, ContinuousClock.now < deadline {
            let count = chunk[offset...].withUnsafeBytes {
                Glibc.send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if count > 0 {
                sent += count
                offset = (offset + count) % chunk.count
                continue
            }
            guard count < 0, errno == EAGAIN || errno == EWOULDBLOCK else { break }  // closed
            var poller = pollfd(fd: connection.fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&poller, 1, 1000) > 0 else { break }  // a second without room: not read from
        }
        return sent
    }

    /// A small receive buffer: what the daemon sends piles up on its side, as with a peer far away.
    static let smallReceiveBuffer: Int32 = 4096

    static func metric(_ daemon: Daemon, _ series: String) throws -> String? {
        let text = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
        return text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.map {
            String($0.dropFirst(series.count + 1))
        }
    }

    // MARK: Peers that write and never read

    /// Pipelined `evi:subscribers` requests whose replies are never read: evi stops reading from
    /// the connection (before: every reply was held, +539–700 MB from 4 MB of requests), and
    /// closes it once what it holds passes 16 MiB.
    @Test func pipelinedMIRequestsNeverReadAreBoundedAndClosed() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let closed = #"evi_connections_closed_total{listener="mi_http",reason="write_backlog"}"#
            #expect(try Self.metric(daemon, closed) == "0")
            #expect(
                try Self.metric(daemon, #"evi_connections_closed_total{listener="ingress",reason="write_backlog"}"#)
                    == "0")
            // 3,000 subscriptions: each evi:subscribers reply lists them all (~250 KB).
            for start in stride(from: 0, to: 3_000, by: 1_000) {
                let batch = (start..<start + 1_000).map {
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:\#(20_000 + $0)"],"id":\#($0)}"#
                }
                _ = try daemon.mi("[" + batch.joined(separator: ",") + "]")
            }
            func post(_ body: String) -> [UInt8] {
                Array(
                    "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                        .utf8)
            }
            let before = Self.residentBytes(of: daemon.process.child.pid)

            // Two batches whose replies are ~15.7 MB each (under the 16 MiB a batch's replies may
            // take), sent together and never read: closed once the second reply is queued.
            let batch =
                "["
                + (1...90).map { #"{"jsonrpc":"2.0","method":"evi:subscribers","id":\#($0)}"# }.joined(separator: ",")
                + "]"
            let heavy = try RawConnection(port: daemon.httpPort, receiveBuffer: Self.smallReceiveBuffer)
            defer { heavy.close() }
            try heavy.send(bytes: post(batch) + post(batch))
            // Counted before anything is read (reading would drain the backlog).
            #expect(await eventually(timeout: .seconds(20)) { (try? Self.metric(daemon, closed)) == "1" })
            #expect(await eventually { heavy.isClosedByPeer }, "closed past 16 MiB of replies")

            // Single requests, pipelined without end: not read from.
            let request = post(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)
            let connection = try RawConnection(port: daemon.httpPort, receiveBuffer: Self.smallReceiveBuffer)
            defer { connection.close() }
            let sent = Self.flood(connection, Array(repeating: request, count: 100).flatMap { $0 }, limit: 64 << 20)
            #expect(sent < 32 << 20, "evi kept reading from a peer that reads nothing: \(sent) bytes taken")
            let grown = Self.residentBytes(of: daemon.process.child.pid) - before
            print("hardening: pipelined MI requests never read: \(sent) bytes taken, +\(grown >> 20) MiB resident")
            #expect(grown < 128 << 20, "resident memory grew by \(grown >> 20) MiB")
            // The listener still answers.
            #expect(try daemon.mi(#"{"jsonrpc":"2.0","method":"core:version","id":1}"#).contains("evi"))
        }
    }

    /// A tcp ingress client pipelining requests with ids and never reading the replies: it is
    /// not read from once its replies back up (before: +352 MB after 298 MB of requests in 3 s).
    @Test func anIngressPeerThatNeverReadsItsRepliesIsNotReadFrom() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\ningress: [\"tcp:127.0.0.1:0\"]\n")
            teardown.add { await daemon.stop() }
            let port = try daemon.ingressPort("tcp")
            let before = Self.residentBytes(of: daemon.process.child.pid)
            let connection = try RawConnection(port: port, receiveBuffer: Self.smallReceiveBuffer)
            defer { connection.close() }
            let requests = (0..<1000).map { #"{"jsonrpc":"2.0","method":"E_X","params":{"n":\#($0)},"id":\#($0)}"# }
            let sent = Self.flood(connection, Array(requests.joined().utf8), limit: 96 << 20)
            #expect(sent < 48 << 20, "evi kept reading from a peer that reads nothing: \(sent) bytes taken")
            let grown = Self.residentBytes(of: daemon.process.child.pid) - before
            print("hardening: tcp ingress replies never read: \(sent) bytes taken, +\(grown >> 20) MiB resident")
            #expect(grown < 128 << 20, "resident memory grew by \(grown >> 20) MiB")
        }
    }

    /// The WebSocket handshake for `GET /events`, with `headers` added; returns the reply's head.
    static func upgrade(_ connection: RawConnection, port: Int, method: String = "GET", headers: String = "") throws
        -> String
    {
        try connection.send(
            "\(method) /events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(headers)\r\n")
        return connection.read(timeoutMilliseconds: 2000)
    }

    /// A client frame: FIN, `opcode`, masked (with a zero key, which leaves the payload as it is) or not.
    static func frame(opcode: UInt8, _ payload: [UInt8], masked: Bool = true) -> [UInt8] {
        precondition(payload.count < 126)
        return [0x80 | opcode, (masked ? 0x80 : 0) | UInt8(payload.count)] + (masked ? [0, 0, 0, 0] : []) + payload
    }

    /// Pings without reading the pongs: evi stops reading from the client (before: +314–581 MB
    /// in 3 s, held after the client left).
    @Test func aWebSocketClientThatPingsAndNeverReadsIsNotReadFrom() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let connection = try RawConnection(port: daemon.httpPort, receiveBuffer: Self.smallReceiveBuffer)
            defer { connection.close() }
            #expect(try Self.upgrade(connection, port: daemon.httpPort).hasPrefix("HTTP/1.1 101"))
            let before = Self.residentBytes(of: daemon.process.child.pid)
            let pings = (0..<500).flatMap { _ in Self.frame(opcode: 0x9, [UInt8](repeating: 0x70, count: 125)) }
            let sent = Self.flood(connection, pings, limit: 96 << 20)
            #expect(sent < 48 << 20, "evi kept reading from a peer that reads nothing: \(sent) bytes taken")
            let grown = Self.residentBytes(of: daemon.process.child.pid) - before
            print("hardening: WebSocket pongs never read: \(sent) bytes taken, +\(grown >> 20) MiB resident")
            #expect(grown < 128 << 20, "resident memory grew by \(grown >> 20) MiB")
        }
    }

    // MARK: The browser surface

    /// DNS rebinding: a page of attacker.example whose name now points at 127.0.0.1 sends
    /// `Host: attacker.example:PORT` with a matching `Origin`. Refused on every path but the probes.
    @Test func aRequestForAnotherHostIsRefused() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n", miExtra: "  allowed_hosts: [evi.example]\n")
            teardown.add { await daemon.stop() }
            let port = daemon.httpPort
            let subscribe = Array(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","udp:127.0.0.1:9"],"id":1}"#.utf8)
            func post(host: String?) throws -> RawHTTP.Response {
                var headers = [("Content-Type", "application/json")]
                if let host { headers += [("Host", host), ("Origin", "http://\(host)")] }
                return try RawHTTP.request(
                    port: port, method: "POST", path: "/mi", body: subscribe, headers: headers, omitHost: host == nil)
            }
            let attacker = try post(host: "attacker.example:\(port)")
            #expect(attacker.status == 403)
            #expect(attacker.bodyText == #"{"error":"Host attacker.example:\#(port) not allowed (mi.allowed_hosts)"}"#)
            #expect(try post(host: nil).status == 403, "no Host: refused the same way")
            for path in ["/", "/metrics", "/status/stream", "/events?event=E_X", "/nowhere"] {
                let reply = try RawHTTP.request(
                    port: port, method: "GET", path: path, headers: [("Host", "attacker.example")])
                #expect(reply.status == 403, "\(path): \(reply.status)")
            }
            for path in ["/health", "/ready"] {
                let reply = try RawHTTP.request(
                    port: port, method: "GET", path: path, headers: [("Host", "attacker.example")])
                #expect(reply.status == 200, "\(path) is a probe: \(reply.status)")
            }
            #expect(
                !(try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)).contains("udp:127.0.0.1:9\""))
            for host in [
                "127.0.0.1:\(port)", "LOCALHOST:\(port)", "localhost", "[::1]:\(port)", "evi.example:\(port)",
                "EVI.example",
            ] {
                #expect(try post(host: host).status == 200, "\(host)")
            }
        }
    }

    @Test func theDefaultConfigurationListsAllowedHosts() async throws {
        let printed = try await run(eviBinary.path, ["serve", "--print-config"])
        #expect(printed.output.contains("  allowed_hosts: []"), "\(printed.output)")
        #expect(printed.output.contains("  max_stream_bytes: 256m"), "\(printed.output)")
    }

    /// Browsers apply no CORS to WebSockets: an upgrade from another site's page was answered 101
    /// and received events. Only GET upgrades; unmasked client frames close the connection (1002).
    @Test func webSocketsFromOtherSitesOrOutsideTheRulesAreRefused() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let port = daemon.httpPort
            func attempt(method: String = "GET", headers: String = "") throws -> String {
                let connection = try RawConnection(port: port)
                defer { connection.close() }
                return try Self.upgrade(connection, port: port, method: method, headers: headers)
            }
            #expect(try attempt(headers: "Origin: http://attacker.example\r\n").hasPrefix("HTTP/1.1 403"))
            #expect(try attempt(headers: "Origin: http://127.0.0.1:\(port)\r\n").hasPrefix("HTTP/1.1 101"))
            #expect(try attempt().hasPrefix("HTTP/1.1 101"), "no Origin: not a browser")
            #expect(try attempt(method: "POST").hasPrefix("HTTP/1.1 405"))

            let connection = try RawConnection(port: port)
            defer { connection.close() }
            #expect(try Self.upgrade(connection, port: port).hasPrefix("HTTP/1.1 101"))
            try connection.send(bytes: Self.frame(opcode: 0x1, Array(#"{"subscribe":["E_X"]}"#.utf8), masked: false))
            let reply = connection.readBytes(timeoutMilliseconds: 2000)
            #expect(
                reply.count >= 4 && reply[0] == 0x88 && reply[2] == 0x03 && reply[3] == 0xEA, "close 1002: \(reply)")
            #expect(await eventually { connection.isClosedByPeer })
            #expect(!(try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)).contains("ws:"))
        }
    }

    /// An upgrade whose client is gone before it completes leaked a stream slot for good: at
    /// `max_stream_clients` the status page and every browser subscriber got 503.
    @Test func abortedUpgradesGiveTheirStreamSlotBack() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n", miExtra: "  max_stream_clients: 3\n")
            teardown.add { await daemon.stop() }
            let port = daemon.httpPort
            for index in 0..<20 {
                let connection = try RawConnection(port: port)
                if index % 2 == 0 {
                    var linger = linger(l_onoff: 1, l_linger: 0)  // a reset rather than a FIN
                    setsockopt(connection.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                }
                try connection.send(
                    "GET /events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                connection.close()
            }
            try await Task.sleep(for: .milliseconds(500))
            let page = try RawConnection(port: port)
            defer { page.close() }
            try page.send("GET /status/stream HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n")
            let reply = page.read(timeoutMilliseconds: 3000)
            #expect(reply.hasPrefix("HTTP/1.1 200"), "\(reply.prefix(200))")
            #expect(reply.contains(#""streams":1"#), "only this page holds a slot: \(reply.suffix(300))")
        }
    }

    // MARK: Smaller

    /// A webhook to evi's own MI over HTTP turned one request into raises without end.
    @Test func aWebhookToTheMIsOwnHTTPListenerIsRefused() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            for url in ["http://127.0.0.1:\(daemon.httpPort)/mi", "http://localhost:\(daemon.httpPort)/mi"] {
                let reply = try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","\#(url)"],"id":1}"#)
                #expect(reply.contains("one of evi's own ingress or MI addresses"), "\(url): \(reply)")
            }
        }
    }
}
