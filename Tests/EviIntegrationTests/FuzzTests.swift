import EventDatagram
import EventFlatstore
import EventInterface
import EventInterfaceTestKit
import EventKafka
import EventNIOSupport
import EventRabbitMQ
import EventStream
import EventVirtual
import EventXMLRPC
import Foundation
import Testing

/// How many inputs each fuzz test tries: `EVI_FUZZ_ITERATIONS` (100,000 for the long run the
/// README reports), a shorter default for CI.
let fuzzIterations = ProcessInfo.processInfo.environment["EVI_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 5_000

/// Random edits of a seed text: byte flips, insertions of interesting characters, deletions,
/// duplications, truncation, splicing.
func mutate(_ seed: String, _ random: inout SplitMix, pool: [String]) -> String {
    var bytes = Array(seed.utf8)
    let interesting: [[UInt8]] = [
        Array(":".utf8), Array("/".utf8), Array(" ".utf8), Array("\t".utf8), Array("[".utf8), Array("]".utf8),
        Array("@".utf8), Array("?".utf8), Array(";".utf8), Array("..".utf8), Array("%".utf8), Array("\"".utf8),
        Array("\\".utf8), Array("{".utf8), Array("}".utf8), Array(",".utf8), Array("-1".utf8),
        Array("99999999999".utf8),
        Array("é".utf8), [0], [0xFF], Array("virtual:".utf8), Array("\n".utf8), Array("null".utf8), Array("[]".utf8),
    ]
    for _ in 0..<Int.random(in: 1...4, using: &random) {
        let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &random)
        switch Int.random(in: 0..<7, using: &random) {
        case 0 where !bytes.isEmpty: bytes[position] = UInt8.random(in: 0...255, using: &random)
        case 1: bytes.insert(contentsOf: interesting.randomElement(using: &random) ?? [], at: position)
        case 2 where !bytes.isEmpty: bytes.remove(at: position)
        case 3: bytes = Array(bytes.prefix(position))
        case 4 where !bytes.isEmpty:
            let end = min(bytes.count, position + Int.random(in: 1...8, using: &random))
            bytes.insert(contentsOf: bytes[position..<end], at: position)
        case 5: bytes += Array((pool.randomElement(using: &random) ?? "").utf8)
        default: bytes.insert(UInt8.random(in: 0x20...0x7E, using: &random), at: position)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}

@Suite(.serialized) struct FuzzTests {
    static let socketSeeds = [
        "udp:127.0.0.1:9000", "udp:[::1]:9000", "unix:/tmp/evi-fuzz.sock", "tcp:127.0.0.1:9101/method",
        "flatstore:/tmp/evi-fuzz/x.log", "xmlrpc:127.0.0.1:9201:my_method",
        "rabbitmq:guest:guest@127.0.0.1:5672/exchange=amq.topic;persistent?a.b",
        "virtual:PARALLEL udp:127.0.0.1:1 unix:/tmp/a.sock", "virtual:FAILOVER\ttcp:127.0.0.1:2  udp:127.0.0.1:3",
        "virtual:ROUND-ROBIN udp:127.0.0.1:1 udp:127.0.0.1:1 udp:127.0.0.1:1",
        "kafka:127.0.0.1:9092,127.0.0.1:9093/calls?key=callid&t.acks=all&g.client.id=evi&g.sasl.password=x",
        "tls:127.0.0.1:9443/method", "rabbitmq:u:p@127.0.0.1/tls;vhost=v?q", "rabbitmq:127.0.0.1/tls_domain=prod?q",
    ]

    @Test func socketParserSurvivesRandomAndMutatedStrings() async throws {
        let directory = TemporaryDirectory(prefix: "evi-fuzz")
        defer { directory.remove() }
        var flatstore = FlatstoreOptions()
        flatstore.allowedDirs = [directory.path]
        let loopback = [CIDR("127.0.0.0/8"), CIDR("::1/128")].compactMap { $0 }
        let registry = TransportRegistry(destinationPolicy: DestinationPolicy(allowed: loopback))
        for transport: any EventTransport in [
            UDPTransport(), UnixTransport(), StreamTransport(), FlatstoreTransport(options: flatstore),
            XMLRPCTransport(),
            RabbitMQTransport(), VirtualTransport(), KafkaTransport(),
            StreamTransport(options: StreamOptions(), tls: try ReloadableTLS(options: TLSOptions(), key: "fuzz")),
        ] {
            registry.register(transport)
        }
        var random = SplitMix(seed: 0xE71)
        var accepted = 0
        var rejected = 0
        for index in 0..<fuzzIterations {
            let text: String
            if index % 5 == 0 {
                let length = Int.random(in: 0...40, using: &random)
                text = String(
                    decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
            } else {
                text = mutate(Self.socketSeeds.randomElement(using: &random) ?? "", &random, pool: Self.socketSeeds)
            }
            do {
                let socket = try await registry.parseSocket(text)
                // What parses prints, and its printed form parses to a matching socket (passwords aside).
                #expect(!socket.description.isEmpty)
                // rabbitmq prints no password, kafka prints secrets as ***: their printed forms
                // are not meant to parse back to the same socket.
                if socket.scheme != "rabbitmq" && !socket.description.contains("rabbitmq:")
                    && !socket.description.contains("***")
                {
                    let again = try await registry.parseSocket(socket.description)
                    #expect(again.matches(socket), "\(text) → \(socket.description)")
                }
                accepted += 1
            } catch {
                #expect(!error.message.isEmpty)
                rejected += 1
            }
        }
        #expect(accepted + rejected == fuzzIterations)
        print("fuzz: \(fuzzIterations) socket strings, \(accepted) accepted, \(rejected) rejected, 0 crashes")
    }

    static let requestSeeds = [
        #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_FUZZ","udp:127.0.0.1:9999",30],"id":1}"#,
        #"{"jsonrpc":"2.0","method":"event_subscribe","params":{"event":"E_FUZZ","socket":"virtual:PARALLEL udp:127.0.0.1:9998 unix:/tmp/evi-fuzz.sock"},"id":"a"}"#,
        #"{"jsonrpc":"2.0","method":"raise_event","params":{"event":"E_FUZZ","params":"{\"a\":1,\"b\":[true,null]}"},"id":2}"#,
        #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_FUZZ",{"x":"y"}],"id":3}"#,
        #"{"jsonrpc":"2.0","method":"subscribers_list","params":["E_FUZZ"],"id":4}"#,
        #"{"jsonrpc":"2.0","method":"events_list","id":5}"#,
        #"{"jsonrpc":"2.0","method":"evi:unsubscribe","params":["E_FUZZ","udp:127.0.0.1:9999"],"id":6}"#,
        #"{"jsonrpc":"2.0","method":"which","params":["raise_event"],"id":7}"#,
        #"{"jsonrpc":"2.0","method":"evi:publish","params":["E_FUZZ2"],"id":8}"#,
        #"[{"jsonrpc":"2.0","method":"version","id":9},{"jsonrpc":"2.0","method":"uptime"}]"#,
        #"{"jsonrpc":"2.0","method":"event_flatstore:rotate","params":["/tmp/none.log"],"id":10}"#,
    ]

    /// A reply is a JSON-RPC response: an object with `jsonrpc` "2.0" and `result` or `error`, or
    /// an array of them.
    static func isResponse(_ value: EventValue) -> Bool {
        switch value {
        case .array(let replies): return !replies.isEmpty && replies.allSatisfy(isResponse)
        case .object(let fields):
            let names = Set(fields.map(\.name))
            return fields.first { $0.name == "jsonrpc" }?.value == .string("2.0")
                && (names.contains("result") != names.contains("error")) && names.contains("id")
        default: return false
        }
    }

    /// What evi answers over UDP, written independently of its code: a JSON object (or a batch of
    /// 1 to 1,000 of them) each with "jsonrpc":"2.0", a string method, no result or error, an id
    /// that is a string, number or null, and params (if any) an object or array.
    static func isValidRequestDatagram(_ body: String) -> Bool {
        func isRequest(_ value: EventValue) -> Bool {
            guard case .object(let fields) = value else { return false }
            var hasMethod = false
            var version = false
            for field in fields {
                switch (field.name, field.value) {
                case ("result", _), ("error", _): return false
                case ("method", let value):  // a repeated member: the last one counts
                    if case .string = value { hasMethod = true } else { hasMethod = false }
                case ("jsonrpc", let value): version = value == .string("2.0")
                case ("id", .string), ("id", .int), ("id", .double), ("id", .null): break
                case ("id", _): return false
                case ("params", .object), ("params", .array): break
                case ("params", _): return false
                default: break
                }
            }
            return hasMethod && version
        }
        switch try? EventValue(json: body) {
        case .object?: return (try? EventValue(json: body)).map(isRequest) ?? false
        case .array(let items)?: return (1...1000).contains(items.count) && items.allSatisfy(isRequest)
        default: return false
        }
    }

    @Test func miSurvivesRandomAndMutatedRequestsOverHTTPAndUDP() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-fuzz")
            teardown.add { directory.remove() }
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_FUZZ]
                    allowed_destinations: [127.0.0.0/8, "::1/128"]
                    modules:
                      event_flatstore: { allowed_dirs: [\(directory.path)] }
                    """ + "\n")
            teardown.add { await daemon.stop() }
            var random = SplitMix(seed: 0xF022)
            var answered = 0
            var notifications = 0
            let requests = fuzzIterations
            for index in 0..<requests {
                let body: String
                if index % 7 == 0 {
                    let length = Int.random(in: 0...60, using: &random)
                    body = String(
                        decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
                } else {
                    body = mutate(
                        Self.requestSeeds.randomElement(using: &random) ?? "", &random, pool: Self.requestSeeds)
                }
                if index % 2 == 0 {
                    let reply = try RawHTTP.request(
                        port: daemon.httpPort, method: "POST", path: "/mi", body: Array(body.utf8))
                    switch reply.status {
                    case 200:
                        let value = try? EventValue(jsonBytes: reply.body)
                        #expect(value.map(Self.isResponse) == true, "request \(body) → \(reply.bodyText)")
                        answered += 1
                    case 204:
                        #expect(reply.body.isEmpty)
                        notifications += 1
                    default:
                        Issue.record("HTTP \(reply.status) for \(body)")
                    }
                } else {
                    // Over UDP only valid requests are answered, and notifications are not: wait
                    // briefly for the rest.
                    let isAnswerable = Self.isValidRequestDatagram(body)
                    let isNotification: Bool = {
                        switch try? EventValue(json: body) {
                        case .object(let fields)?: return !fields.contains { $0.name == "id" }
                        case .array(let items)?:
                            return !items.isEmpty
                                && items.allSatisfy {
                                    if case .object(let fields) = $0 { return !fields.contains { $0.name == "id" } }
                                    return false
                                }
                        default: return false
                        }
                    }()
                    let reply = try udpExchange(
                        port: daemon.udpPort, body, timeoutMilliseconds: isNotification || !isAnswerable ? 5 : 3000)
                    if let reply {
                        let value = try? EventValue(json: reply)
                        #expect(value.map(Self.isResponse) == true, "request \(body) → \(reply)")
                        #expect(isAnswerable, "an invalid datagram was answered: \(body) → \(reply)")
                        answered += 1
                    } else {
                        #expect(isNotification || !isAnswerable, "no reply over UDP to \(body)")
                        notifications += 1
                    }
                }
            }
            #expect(answered + notifications == requests)
            // Still serving, still itself.
            #expect(
                try daemon.mi(#"{"jsonrpc":"2.0","method":"version","id":1}"#)
                    == #"{"jsonrpc":"2.0","result":{"Server":"evi 0.2.0"},"id":1}"#)
            #expect(daemon.process.isRunning)
            print(
                "fuzz: \(requests) MI requests (half HTTP, half UDP), \(answered) answered, \(notifications) notifications, 0 crashes"
            )
        }
    }

    static let replySeeds = [
        #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
        #"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        #"{"jsonrpc":"2.0","result":"OK","id":1}"#,
        #"[{"jsonrpc":"2.0","result":{"Server":"evi 0.2.0"},"id":9},{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":2}]"#,
        #"{"jsonrpc":"2.0","error":{"code":500,"message":"Reply too large","data":"use MI over HTTP"},"id":null}"#,
    ]

    /// The reply loop: replies, errors and garbage sent to MI over UDP (as another server, or evi
    /// itself, would send them) draw no datagram back, so no two MI ports can ping-pong.
    @Test func udpRepliesAndGarbageNeverDrawAReply() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_FUZZ]\n")
            teardown.add { await daemon.stop() }
            var random = SplitMix(seed: 0x100D)
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            var sent = 0
            for index in 0..<fuzzIterations {
                let body: String
                if index % 5 == 0 {
                    let length = Int.random(in: 1...200, using: &random)
                    body = String(
                        decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
                } else {
                    body = mutate(Self.replySeeds.randomElement(using: &random) ?? "", &random, pool: Self.replySeeds)
                }
                guard !Self.isValidRequestDatagram(body) else { continue }
                let bytes = Array(body.utf8)
                _ = withLoopbackAddress(port: daemon.udpPort) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
                sent += 1
                if index % 200 == 0 { try await Task.sleep(for: .milliseconds(5)) }  // no receive-buffer overflow
            }
            try await Task.sleep(for: .milliseconds(500))
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let received = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            #expect(
                received < 0, "a reply came back: \(String(decoding: buffer.prefix(max(0, received)), as: UTF8.self))")
            let metrics = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
            let dropped = metrics.split(separator: "\n").filter { $0.hasPrefix("evi_mi_dropped_total{") }.compactMap {
                Int($0.split(separator: " ").last ?? "")
            }.reduce(0, +)
            #expect(dropped == sent, "sent \(sent), dropped \(dropped)")
            print("fuzz: \(sent) replies and garbage datagrams to MI over UDP, 0 answered")
        }
    }

    /// Slow and stalled HTTP clients (partial heads, trickled bodies, idle connections) beyond
    /// `mi.max_connections` never stop an authenticated client from being served, and are closed.
    @Test func slowHTTPClientsDoNotStarveTheMI() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(
                extra: "events: [E_FUZZ]\n", token: "t0k",
                miExtra: "  max_connections: 16\n  header_timeout: 1\n  idle_timeout: 2\n")
            teardown.add { await daemon.stop() }
            var random = SplitMix(seed: 0x510)
            var slow: [RawConnection] = []
            defer { for connection in slow { connection.close() } }
            let fragments = [
                "POST /mi HTTP/1.1\r\nHo", "GET /metrics HTTP/1.1\r\n",
                "POST /mi HTTP/1.1\r\nContent-Length: 900000\r\n\r\n{",
                "", "POST /mi HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Length: 10\r\n\r\n",
            ]
            let body = Array(#"{"jsonrpc":"2.0","method":"version","id":1}"#.utf8)
            var served = 0
            for round in 0..<min(40, max(10, fuzzIterations / 100)) {
                for _ in 0..<4 {
                    let connection = try RawConnection(port: daemon.httpPort)
                    let fragment = fragments.randomElement(using: &random) ?? ""
                    if !fragment.isEmpty { try? connection.send(fragment) }
                    slow.append(connection)
                }
                let reply = try RawHTTP.request(
                    port: daemon.httpPort, method: "POST", path: "/mi", body: body,
                    headers: [("Authorization", "Bearer t0k")])
                #expect(reply.status == 200, "round \(round): HTTP \(reply.status)")
                if reply.status == 200 { served += 1 }
                try await Task.sleep(for: .milliseconds(50))
            }
            // Every slow connection is closed by the daemon: evicted at the cap, or timed out.
            #expect(await eventually(timeout: .seconds(10)) { slow.allSatisfy(\.isClosedByPeer) })
            print("fuzz: \(slow.count) slow HTTP clients, \(served) authenticated requests all served")
        }
    }
}

extension FuzzTests {
    static let ingressSeeds = [
        #"{"jsonrpc":"2.0","method":"E_FUZZ","params":{"name":"alice","count":7}}"#,
        #"{"jsonrpc":"2.0","method":"E_FUZZ","params":{"":"alice","":"7"}}"#,
        #"{"id":3,"jsonrpc":"2.0","method":"E_FUZZ","params":[1,true,null,{"a":[2.5]}]}"#,
        #"{"jsonrpc":"2.0","method":"E_FUZZ"}"#,
    ]

    /// What the datagram ingress must raise, written independently of its code: a JSON object
    /// whose (last) `method` is the published E_FUZZ and whose (last) `params` is absent, null, an
    /// object or an array.
    static func isRaisable(_ text: String) -> Bool {
        guard case .object(let fields)? = try? EventValue(json: text) else { return false }
        var method: EventValue?
        var params: EventValue?
        for field in fields {
            if field.name == "method" { method = field.value }
            if field.name == "params" { params = field.value }
        }
        guard method == .string("E_FUZZ") else { return false }
        switch params {
        case nil, .null?, .object?, .array?: return true
        default: return false
        }
    }

    /// The daemon's first ingress's counts, from `evi:ingress`: received, and refused (all reasons).
    static func ingressTotals(_ daemon: Daemon) -> (received: Int, rejected: Int)? {
        guard let reply = try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":2}"#),
            case .object(let top)? = try? EventValue(json: reply),
            case .object(let result)? = top.first(where: { $0.name == "result" })?.value,
            case .array(let entries)? = result.first?.value, case .object(let entry)? = entries.first,
            case .int(let received)? = entry.first(where: { $0.name == "received" })?.value,
            case .object(let rejected)? = entry.first(where: { $0.name == "rejected" })?.value
        else { return nil }
        let refused = rejected.reduce(0) { total, field in
            if case .int(let count) = field.value { return total + Int(count) }
            return total
        }
        return (Int(received), refused)
    }

    /// A random or mutated ingress message (one in five random bytes).
    static func fuzzMessage(_ index: Int, _ random: inout SplitMix) -> String {
        if index % 5 == 0 {
            let length = Int.random(in: 1...120, using: &random)
            return String(decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
        }
        return mutate(ingressSeeds.randomElement(using: &random) ?? "", &random, pool: ingressSeeds)
    }

    /// Random and mutated datagrams into a udp ingress: no crash, every one accounted for
    /// (received or refused with a reason), every well-formed one raised.
    @Test func aDatagramIngressSurvivesRandomAndMutatedMessages() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_FUZZ]\ningress: [\"udp:127.0.0.1:0\"]\n")
            teardown.add { await daemon.stop() }
            let port = try daemon.ingressPort("udp")
            var random = SplitMix(seed: 0x1A6E55)
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            var raisable = 0
            for index in 0..<fuzzIterations {
                let body: String
                if index % 5 == 0 {
                    let length = Int.random(in: 1...120, using: &random)
                    body = String(
                        decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
                } else {
                    body = mutate(
                        Self.ingressSeeds.randomElement(using: &random) ?? "", &random, pool: Self.ingressSeeds)
                }
                if Self.isRaisable(body) { raisable += 1 }
                let bytes = Array(body.utf8)
                _ = withLoopbackAddress(port: port) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
                if index % 200 == 0 { try await Task.sleep(for: .milliseconds(5)) }
            }
            let totals = { Self.ingressTotals(daemon) }
            #expect(
                await eventually(timeout: .seconds(20)) { totals().map { $0.received + $0.rejected } == fuzzIterations }
            )
            #expect(totals()?.received == raisable)
            #expect(daemon.process.isRunning)
            print(
                "fuzz: \(fuzzIterations) datagrams into a udp ingress, \(raisable) raised, the rest refused with a reason, 0 crashes"
            )
        }
    }
}

extension FuzzTests {
    /// Random and mutated messages back to back into a tcp ingress, over several connections
    /// (some cut mid-message): no crash, and a well-formed request on a fresh connection is still
    /// answered at the end.
    @Test func aStreamIngressSurvivesRandomAndMutatedMessages() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_FUZZ]\ningress: [\"tcp:127.0.0.1:0\"]\n")
            teardown.add { await daemon.stop() }
            let port = try daemon.ingressPort("tcp")
            var random = SplitMix(seed: 0x7C9)
            var connection = try RawConnection(port: port)
            for index in 0..<fuzzIterations {
                if index % 500 == 499 {  // a new connection now and then, the old one cut wherever it was
                    connection.close()
                    connection = try RawConnection(port: port)
                }
                let body: String
                if index % 5 == 0 {
                    let length = Int.random(in: 1...80, using: &random)
                    body = String(
                        decoding: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }, as: UTF8.self)
                } else {
                    body = mutate(
                        Self.ingressSeeds.randomElement(using: &random) ?? "", &random, pool: Self.ingressSeeds)
                }
                try? connection.send(body)
                if index % 100 == 0 { _ = connection.read(timeoutMilliseconds: 1) }  // drain replies
            }
            connection.close()
            let fresh = try RawConnection(port: port)
            defer { fresh.close() }
            try fresh.send(#"{"id":99,"jsonrpc":"2.0","method":"E_FUZZ","params":{"ok":true}}"#)
            #expect(fresh.read(timeoutMilliseconds: 3000) == #"{"jsonrpc":"2.0","result":"OK","id":99}"#)
            #expect(daemon.process.isRunning)
            print("fuzz: \(fuzzIterations) messages into a tcp ingress, 0 crashes")
        }
    }
}

extension FuzzTests {
    /// A Kamailio evapi server played by the test: random and mutated messages in well-formed
    /// netstrings (every one accounted for, every raisable one raised), then a stream of mutated
    /// framing; the server drops the connection, evi reconnects, and a good message is raised.
    @Test func anEvapiIngressSurvivesRandomAndMutatedMessages() async throws {
        try await withTeardown { teardown in
            let listener = try RawListener()
            defer { listener.close() }
            let daemon = try await Daemon.start(
                extra: "events: [E_FUZZ]\ningress: [\"evapi:127.0.0.1:\(listener.port)\"]\n")
            teardown.add { await daemon.stop() }
            var connection = try #require(listener.accept())
            var random = SplitMix(seed: 0xE7A9)
            var raisable = 0
            var chunk = ""
            for index in 0..<fuzzIterations {
                let body = Self.fuzzMessage(index, &random)
                if Self.isRaisable(body) { raisable += 1 }
                chunk += "\(body.utf8.count):\(body),"
                if chunk.utf8.count > 16_384 || index == fuzzIterations - 1 {
                    try connection.send(chunk)
                    chunk = ""
                }
            }
            #expect(
                await eventually(timeout: .seconds(30)) {
                    Self.ingressTotals(daemon).map { $0.received + $0.rejected } == fuzzIterations
                }, "\(String(describing: Self.ingressTotals(daemon)))")
            #expect(Self.ingressTotals(daemon)?.received == raisable)
            // Now the framing itself, mutated: nothing is promised but survival.
            let frames = Self.ingressSeeds.map { "\($0.utf8.count):\($0)," }
            for _ in 0..<max(100, fuzzIterations / 10) {
                try? connection.send(mutate(frames.randomElement(using: &random) ?? "", &random, pool: frames))
            }
            // Length prefixes: runs of digits of every length, leading zeros, and 8 MB of zeros (once
            // buffered without bound and scanned again at every read, quadratic).
            let resident = HardeningRoundTwoTests.residentBytes(of: daemon.process.child.pid)
            for _ in 0..<max(100, fuzzIterations / 10) {
                let digits = (0..<Int(random.next() % 40 + 1)).map { _ in String(random.next() % 10) }.joined()
                let zeros = String(repeating: "0", count: Int(random.next() % 12))
                try? connection.send(zeros + digits + (random.next() % 2 == 0 ? ":" : ""))
            }
            let zeros = String(repeating: "0", count: 65_536)
            for _ in 0..<128 { try? connection.send(zeros) }
            try await Task.sleep(for: .milliseconds(500))
            let grown = HardeningRoundTwoTests.residentBytes(of: daemon.process.child.pid) - resident
            #expect(grown < 32 << 20, "8 MB of a length prefix grew evi by \(grown >> 20) MiB")
            connection.close()
            connection = try #require(listener.accept(), "evi did not reconnect")
            let before = Self.ingressTotals(daemon)?.received ?? 0
            let good = Self.ingressSeeds[0]
            try connection.send("\(good.utf8.count):\(good),")
            #expect(await eventually(timeout: .seconds(10)) { Self.ingressTotals(daemon)?.received == before + 1 })
            #expect(daemon.process.isRunning)
            connection.close()
            print(
                "fuzz: \(fuzzIterations) netstrings from an evapi server, \(raisable) raised, then mutated framing, 0 crashes"
            )
        }
    }

    /// WebSocket frames of every kind from a subscriber: random opcodes, FIN bits, masks, lengths
    /// (the 16- and 64-bit forms too, with lengths that lie), reserved bits and payloads, many
    /// to a connection. Nothing is promised but survival: afterwards a proper client subscribes
    /// and is answered.
    @Test func browserWebSocketsSurviveRandomFrames() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_FUZZ]\n")
            teardown.add { await daemon.stop() }
            let port = daemon.httpPort
            var random = SplitMix(seed: 0x5EB5)
            func randomFrame() -> [UInt8] {
                let first = UInt8(truncatingIfNeeded: random.next())
                let masked = random.next() % 8 != 0
                let length = Int(random.next() % 200)
                var frame: [UInt8] = [first]
                switch random.next() % 6 {
                case 0: frame += [(masked ? 0x80 : 0) | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
                case 1:
                    frame.append((masked ? 0x80 : 0) | 127)
                    frame += (0..<8).map { _ in UInt8(truncatingIfNeeded: random.next()) }  // a length that lies
                default: frame.append((masked ? 0x80 : 0) | UInt8(min(length, 125)))
                }
                if masked { frame += (0..<4).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
                frame += (0..<min(length, 125)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                return frame
            }
            var frames = 0
            var connections = 0
            while frames < max(200, fuzzIterations / 5) {
                let connection = try RawConnection(port: port)
                connections += 1
                guard try HardeningRoundTwoTests.upgrade(connection, port: port).hasPrefix("HTTP/1.1 101") else {
                    connection.close()
                    continue
                }
                for _ in 0..<Int(random.next() % 40 + 1) {
                    frames += 1
                    guard (try? connection.send(bytes: randomFrame())) != nil else { break }
                }
                connection.close()
            }
            #expect(daemon.process.isRunning)
            let client = try RawConnection(port: port)
            defer { client.close() }
            #expect(try HardeningRoundTwoTests.upgrade(client, port: port).hasPrefix("HTTP/1.1 101"))
            try client.send(bytes: HardeningRoundTwoTests.frame(opcode: 0x1, Array(#"{"subscribe":["E_FUZZ"]}"#.utf8)))
            let reply = client.readBytes(timeoutMilliseconds: 3000)
            #expect(String(decoding: reply.dropFirst(2), as: UTF8.self) == #"{"subscribed":["E_FUZZ"]}"#)
            print("fuzz: \(frames) random WebSocket frames on \(connections) connections, 0 crashes")
        }
    }

    /// Random and mutated messages published with pika to a queue a rabbitmq ingress consumes:
    /// every one acknowledged or rejected (counted), every raisable one raised, none left behind.
    @Test func aRabbitMQIngressSurvivesRandomAndMutatedMessages() async throws {
        try await withTeardown { teardown in
            _ = try await RabbitMQIngressTests.pika(["declare", "evi.fuzz"])
            let daemon = try await Daemon.start(
                extra: "events: [E_FUZZ]\ningress: [\(try RabbitMQIngressTests.ingress("evi.fuzz"))]\n")
            teardown.add { await daemon.stop() }
            try await RabbitMQIngressTests.waitConsuming(daemon)
            var random = SplitMix(seed: 0xA3C9)
            let bodies = (0..<fuzzIterations).map { Self.fuzzMessage($0, &random) }
            let raisable = bodies.filter(Self.isRaisable).count
            try await RabbitMQIngressTests.publish(bodies, to: "evi.fuzz")
            #expect(
                await eventually(timeout: .seconds(60)) {
                    Self.ingressTotals(daemon).map { $0.received + $0.rejected } == fuzzIterations
                }, "\(String(describing: Self.ingressTotals(daemon)))")
            #expect(Self.ingressTotals(daemon)?.received == raisable)
            #expect(daemon.process.isRunning)
            await daemon.stop()
            #expect(try await RabbitMQIngressTests.drain("evi.fuzz").isEmpty)
            print(
                "fuzz: \(fuzzIterations) messages through a RabbitMQ queue, \(raisable) raised, the rest rejected, 0 crashes"
            )
        }
    }
}
