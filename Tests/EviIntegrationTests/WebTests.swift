import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Raw SSE readers on many sockets, read by one thread with poll(2): counts the messages
/// (`data: {`) each stream has received, and keeps the first stream's bytes.
final class SSEReaders: @unchecked Sendable {
    let fds: [Int32]
    private let lock = NSLock()
    private var counts: [Int]
    private var first: [UInt8] = []
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    /// Opens `clients` connections to `GET /events?event=…` on `port`; `reading` of them are read.
    init(port: Int, query: String, clients: Int, reading: Int? = nil, headers: String = "") throws {
        var opened: [Int32] = []
        for _ in 0..<clients {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard withLoopbackAddress(port: port, { connect(fd, $0, $1) }) == 0 else {
                for fd in opened { Glibc.close(fd) }
                Glibc.close(fd)
                throw ReceiverError("connect: errno \(errno)")
            }
            let request = "GET /events?\(query) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\(headers)\r\n"
            _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            opened.append(fd)
        }
        fds = opened
        counts = Array(repeating: 0, count: clients)
        let readable = Array(opened.prefix(reading ?? clients))
        Thread.detachNewThread { [self] in self.read(readable) }
    }

    private func read(_ readable: [Int32]) {
        var polls = readable.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let needle = Array("data: {".utf8)
        var carry = Array(repeating: [UInt8](), count: readable.count)
        while lock.withLock({ running }) {
            guard poll(&polls, nfds_t(polls.count), 100) > 0 else { continue }
            for index in polls.indices where polls[index].revents != 0 {
                let count = recv(polls[index].fd, &buffer, buffer.count, 0)
                if count <= 0 {
                    polls[index].fd = -1
                    continue
                }
                let bytes = carry[index] + buffer[..<count]
                var found = 0
                var position = 0
                while position + needle.count <= bytes.count {
                    if bytes[position] == needle[0], Array(bytes[position..<position + needle.count]) == needle {
                        found += 1
                        position += needle.count
                    } else {
                        position += 1
                    }
                }
                carry[index] = Array(bytes.suffix(needle.count - 1))
                lock.withLock {
                    counts[index] += found
                    if index == 0, first.count < 1 << 20 { first += buffer[..<count] }
                }
            }
        }
        done.signal()
    }

    var received: [Int] { lock.withLock { counts } }
    var firstText: String { lock.withLock { String(decoding: first, as: UTF8.self) } }

    func close() {
        lock.withLock { running = false }
        done.wait()
        for fd in fds { Glibc.close(fd) }
    }
}

/// The web side of the MI listener with real clients: curl-like raw HTTP, Python's `websockets`,
/// many raw SSE readers, and headless Chromium driven by selenium.
@Suite(.serialized) struct WebTests {
    static let token = "web-test-token-4b1d"

    func raise(_ daemon: Daemon, _ event: String, count: Int, from start: Int = 0, batch: Int = 500) throws {
        var next = start
        while next < start + count {
            let size = min(batch, start + count - next)
            let calls = (next..<next + size).map {
                #"{"jsonrpc":"2.0","method":"evi:raise","params":["\#(event)",{"n":\#($0)}],"id":\#($0)}"#
            }
            _ = try daemon.mi("[" + calls.joined(separator: ",") + "]")
            next += size
        }
    }

    @Test func postsFromOtherSitesAreRefusedAndTheTokenCookieWorks() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_WEB]\n", token: Self.token)
            teardown.add { await daemon.stop() }
            let list = Array(#"{"jsonrpc":"2.0","method":"evi:list","id":1}"#.utf8)
            let bearer = ("Authorization", "Bearer \(Self.token)")
            func post(_ headers: [(String, String)]) throws -> RawHTTP.Response {
                try RawHTTP.request(port: daemon.httpPort, method: "POST", path: "/mi", body: list, headers: headers)
            }
            #expect(try post([bearer, ("Content-Type", "text/plain")]).status == 415)
            #expect(try post([bearer, ("Content-Type", "application/x-www-form-urlencoded")]).status == 415)
            #expect(try post([bearer, ("Origin", "http://evil.example")]).status == 403)
            #expect(try post([bearer, ("Origin", "http://127.0.0.1:\(daemon.httpPort)")]).status == 200)
            #expect(try post([bearer, ("Content-Type", "application/json; charset=utf-8")]).status == 200)
            #expect(try post([]).status == 401)

            let wrong = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/?token=nope")
            #expect(wrong.status == 401 && wrong.header("Set-Cookie") == nil)
            let login = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/?token=\(Self.token)")
            #expect(login.status == 303 && login.header("Location") == "/")
            let cookie = try #require(login.header("Set-Cookie"))
            #expect(
                cookie.hasPrefix("evi_token=\(Self.token);") && cookie.contains("HttpOnly")
                    && cookie.contains("SameSite=Strict"))
            let jar = ("Cookie", "other=1; evi_token=\(Self.token)")
            let page = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/", headers: [jar])
            #expect(page.status == 200 && page.header("Content-Type") == "text/html; charset=utf-8")
            #expect(page.bodyText.contains("EventSource(\"/status/stream\")"))
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/").status == 401)
            #expect(try post([jar]).status == 200)
            #expect(try post([("Cookie", "evi_token=wrong")]).status == 401)
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/status/stream").status == 401)
            #expect(
                try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/events?event=E_WEB").status == 401)
        }
    }

    @Test func sseClientsAreSubscribersWhileConnected() async throws {
        try await withTeardown { teardown in
            // idle_timeout 1 s: streams are exempt from it (checked by raising after 2.5 s).
            let daemon = try await Daemon.start(extra: "events: [E_SSE, E_OTHER]\n", miExtra: "  idle_timeout: 1\n")
            teardown.add { await daemon.stop() }
            let unknown = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/events?event=E_NOPE")
            #expect(unknown.status == 404 && unknown.bodyText.contains("E_NOPE is not published"))
            #expect(try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/events").status == 400)

            let readers = try SSEReaders(port: daemon.httpPort, query: "event=E_SSE&event=E_OTHER", clients: 1)
            let listed = await eventually {
                ((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)) ?? "")
                    .components(separatedBy: #""socket":"sse:127.0.0.1:"#).count == 3
            }
            #expect(listed)
            let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_SSE"],"id":1}"#)
            #expect(listing.contains(#""expire":"never""#), "\(listing)")
            try raise(daemon, "E_SSE", count: 3)
            try await Task.sleep(for: .milliseconds(2500))
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_OTHER",{"x":"y"}],"id":1}"#)
            #expect(await eventually { readers.received == [4] })
            let text = readers.firstText
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.contains("text/event-stream"))
            #expect(text.contains(#"data: {"jsonrpc":"2.0","method":"E_SSE","params":{"n":0}}"#))
            #expect(text.contains(#"data: {"jsonrpc":"2.0","method":"E_OTHER","params":{"x":"y"}}"#))
            // Another site's page cannot subscribe it over MI: sse sockets are not virtual members.
            let port = listing.components(separatedBy: "sse:127.0.0.1:").last?.prefix { $0.isNumber } ?? ""
            let refused = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_OTHER","virtual:PARALLEL sse:127.0.0.1:\#(port) udp:127.0.0.1:9"],"id":1}"#
            )
            #expect(refused.contains("cannot be a member"), "\(refused)")
            readers.close()
            #expect(
                await eventually {
                    !((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)) ?? "sse").contains(
                        "sse:")
                })
        }
    }

    @Test func webSocketClientsSubscribeAndReceive() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_WS]\n", token: Self.token)
            teardown.add { await daemon.stop() }
            let python = repositoryRoot.appendingPathComponent(".venv/bin/python3").path
            let script = repositoryRoot.appendingPathComponent("Tests/Fixtures/web/ws_client.py").path
            let directory = TemporaryDirectory(prefix: "evi-ws")
            teardown.add { directory.remove() }
            let client = try ChildProcess(
                executable: python,
                arguments: [
                    script, "ws://127.0.0.1:\(daemon.httpPort)/events", Self.token, #"{"subscribe":["E_WS"]}"#, "3",
                ],
                directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
            #expect(
                await eventually(timeout: .seconds(15)) { client.output.contains(#"{"subscribed":["E_WS"]}"#) },
                "\(client.errors)")
            let bearer = [("Authorization", "Bearer \(Self.token)")]
            let listing = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_WS"],"id":1}"#.utf8),
                headers: bearer
            ).bodyText
            #expect(listing.contains(#""socket":"ws:127.0.0.1:"#), "\(listing)")
            let raises = (0..<3).map {
                #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_WS",{"n":\#($0)}],"id":\#($0)}"#
            }
            _ = try RawHTTP.request(
                port: daemon.httpPort, method: "POST", path: "/mi",
                body: Array(("[" + raises.joined(separator: ",") + "]").utf8),
                headers: bearer)
            #expect(await client.waitForExit(timeout: .seconds(20)) == 0, "\(client.errors)")
            #expect(
                client.output.split(separator: "\n").dropFirst().map(String.init)
                    == (0..<3).map { #"{"jsonrpc":"2.0","method":"E_WS","params":{"n":\#($0)}}"# })

            let bad = try ChildProcess(
                executable: python,
                arguments: [
                    script, "ws://127.0.0.1:\(daemon.httpPort)/events", Self.token, #"{"subscribe":["E_NOPE"]}"#, "0",
                ],
                directory: directory.path, outputPath: directory.file("bad.out"), errorPath: directory.file("bad.err"))
            #expect(await bad.waitForExit(timeout: .seconds(20)) == 0)
            #expect(bad.output.contains(#"{"error":"#) && bad.output.contains("E_NOPE"), "\(bad.output) \(bad.errors)")
            let unauthorized = try ChildProcess(
                executable: python,
                arguments: [script, "ws://127.0.0.1:\(daemon.httpPort)/events", "", #"{"subscribe":["E_WS"]}"#, "0"],
                directory: directory.path, outputPath: directory.file("no.out"), errorPath: directory.file("no.err"))
            #expect(await unauthorized.waitForExit(timeout: .seconds(20)) != 0)
            #expect(unauthorized.errors.contains("401"), "\(unauthorized.errors)")
        }
    }

    /// 1,000 SSE clients on one event all receive every event of a 10,000-event run.
    @Test func aThousandSSEClientsEachReceiveEveryEvent() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_FAN]\n")
            teardown.add { await daemon.stop() }
            let clients = 1000
            let readers = try SSEReaders(port: daemon.httpPort, query: "event=E_FAN", clients: clients)
            defer { readers.close() }
            let subscribed = await eventually(timeout: .seconds(30)) {
                ((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_FAN"],"id":1}"#)) ?? "")
                    .components(separatedBy: "sse:").count - 1 == clients
            }
            #expect(subscribed)
            let events = 10_000
            for round in 0..<(events / 500) {
                try raise(daemon, "E_FAN", count: 500, from: round * 500)
                // Paced by the slowest reader, so that the test never outruns its own reading thread.
                _ = await eventually(timeout: .seconds(30)) { (readers.received.min() ?? 0) >= (round + 1) * 500 }
            }
            #expect(await eventually(timeout: .seconds(60)) { readers.received.allSatisfy { $0 == events } })
            let received = readers.received
            #expect(received.filter { $0 != events }.isEmpty, "short: \(received.filter { $0 != events }.prefix(5))")
        }
    }

    /// A client that stops reading is dropped at its queue's bound; the others get everything.
    @Test func aClientThatStopsReadingIsDroppedAndTheOthersGetEverything() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_SLOW]\nqueue_size: 500\n")
            teardown.add { await daemon.stop() }
            let readers = try SSEReaders(port: daemon.httpPort, query: "event=E_SLOW", clients: 6, reading: 5)
            defer { readers.close() }
            #expect(
                await eventually(timeout: .seconds(10)) {
                    ((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_SLOW"],"id":1}"#)) ?? "")
                        .components(separatedBy: "sse:").count - 1 == 6
                })
            let padding = String(repeating: "x", count: 4000)
            let events = 4000
            var next = 0
            while next < events {
                let calls = (next..<next + 100).map {
                    #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_SLOW",{"n":\#($0),"pad":"\#(padding)"}],"id":\#($0)}"#
                }
                _ = try daemon.mi("[" + calls.joined(separator: ",") + "]")
                next += 100
                _ = await eventually(timeout: .seconds(30)) { (readers.received.prefix(5).min() ?? 0) >= next }
            }
            #expect(readers.received.prefix(5).allSatisfy { $0 == events }, "\(readers.received)")
            #expect(
                await eventually(timeout: .seconds(10)) {
                    ((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_SLOW"],"id":1}"#)) ?? "")
                        .components(separatedBy: "sse:").count - 1 == 5
                }, "the client that stopped reading is still subscribed")
            let metrics = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
            #expect(metrics.contains(#"evi_dropped_total{transport="sse"}"#), "\(metrics.prefix(200))")
        }
    }

    /// The status page in a real browser: headless Chromium, driven by selenium
    /// (Tests/Fixtures/web/browser.py); a screenshot is kept in Docs/status-page.png.
    @Test func theStatusPageInARealBrowser() async throws {
        try await withTeardown { teardown in
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") else {
                Issue.record("chromium-driver is not installed (scripts/test.sh installs it)")
                return
            }
            let daemon = try await Daemon.start(
                extra: "events: [E_WEB]\nmodules:\n  event_virtual: { failover_timeout: 2 }\n", token: Self.token)
            teardown.add { await daemon.stop() }
            let directory = TemporaryDirectory(prefix: "evi-browser")
            teardown.add { directory.remove() }
            let screenshot = directory.file("status.png")
            let browser = try ChildProcess(
                executable: repositoryRoot.appendingPathComponent(".venv/bin/python3").path,
                arguments: [
                    repositoryRoot.appendingPathComponent("Tests/Fixtures/web/browser.py").path,
                    "http://127.0.0.1:\(daemon.httpPort)", Self.token, screenshot,
                ], directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
            let status = await browser.waitForExit(timeout: .seconds(180))
            if status == nil { browser.signal(SIGKILL) }
            #expect(status == 0, "\(browser.output)\n\(browser.errors.suffix(3000))")
            #expect(browser.output.contains("no reloads"), "\(browser.output)")
            if let keep = ProcessInfo.processInfo.environment["EVI_SCREENSHOT"] {
                try? FileManager.default.removeItem(atPath: keep)
                try FileManager.default.copyItem(atPath: screenshot, toPath: keep)
            }
        }
    }
}
