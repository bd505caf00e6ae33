import EventDatagram
import EventInterface
import EventInterfaceTestKit
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import ManagementInterface

/// What the MI's HTTP listener lets browsers do: which `Host` it answers (DNS rebinding), how
/// the status pages are fed, how much a snapshot lists.
@Suite struct BrowserSurfaceTests {
    @Test func onlyTheListenersOwnNamesAreAnswered() {
        let policy = MIHostPolicy(boundHost: "127.0.0.1", allowedHosts: ["Evi.Example"]) { ["192.0.2.7"] }
        for host in [
            "127.0.0.1", "127.0.0.1:8888", "LOCALHOST:8888", "localhost.", "[::1]:8888", "[::1]", "evi.example:80",
        ] {
            #expect(policy.allows(host), "\(host)")
        }
        for host: String? in [nil, "", "attacker.example", "attacker.example:8888", "127.0.0.2:8888", "192.0.2.7"] {
            #expect(!policy.allows(host), "\(host ?? "no Host")")
        }
        #expect(policy.allows("10.1.2.3:8888", arrivedAt: "10.1.2.3"), "the address the connection came in on")
        let everywhere = MIHostPolicy(boundHost: "0.0.0.0", allowedHosts: []) { ["192.0.2.7", "2001:db8::7"] }
        #expect(everywhere.allows("192.0.2.7:8888") && everywhere.allows("[2001:DB8::7]:8888"))
        #expect(!everywhere.allows("attacker.example"))
        #expect(MIHostPolicy(boundHost: "::", allowedHosts: []) { [] }.allows("127.0.0.1:1"))
    }

    /// Twenty pages cost one rendering a tick, not twenty (rendering per page, 20 pages over
    /// 10,000 subscriptions took half a core).
    @Test func theStatusPagesShareOneRenderingATick() async throws {
        let renders = Atomic<Int>(0)
        let feed = StatusFeed(interval: .milliseconds(100)) {
            renders.add(1, ordering: .relaxed)
            return Array(#"{"events":[]}"#.utf8)
        }
        var pages: [NIOAsyncTestingChannel] = []
        for _ in 0..<20 {
            let page = NIOAsyncTestingChannel()
            try await page.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1))
            pages.append(page)
            feed.add(page)
        }
        try await Task.sleep(for: .milliseconds(1_050))
        let rendered = renders.load(ordering: .relaxed)
        #expect(rendered >= 5 && rendered <= 13, "\(rendered) renderings in ~10 ticks")
        for page in pages {
            var received = 0
            while let part = try await page.readOutbound(as: HTTPServerResponsePart.self) {
                guard case .body(.byteBuffer(let buffer)) = part else { continue }
                #expect(String(buffer: buffer) == "data: {\"events\":[]}\n\n")
                received += 1
            }
            #expect(received >= rendered - 2, "every page gets (nearly) every snapshot: \(received) of \(rendered)")
            feed.remove(page)
        }
        #expect(feed.count == 0)
        try await Task.sleep(for: .milliseconds(300))
        let stopped = renders.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(300))
        #expect(renders.load(ordering: .relaxed) == stopped, "no page open: no rendering")
        for page in pages { _ = try? await page.finish() }
    }

    /// Each browser subscriber is bounded by `queue_bytes`; all of them together by
    /// `mi.max_stream_bytes`: past it the one with the largest backlog goes.
    @Test func pastTheStreamBudgetTheLargestBacklogIsDropped() async throws {
        let streams = BrowserStreams(maxClients: 10, maxBytes: 10_000)
        var clients: [BrowserClient] = []
        for port in 1...3 {
            let channel = NIOAsyncTestingChannel()
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port))
            let client = BrowserClient(kind: .sse, channel: channel)
            streams.register(client)
            clients.append(client)
        }
        streams.account(2_000, for: clients[0])
        streams.account(6_000, for: clients[1])
        streams.account(2_000, for: clients[2])
        #expect(streams.waitingBytes == 10_000 && !clients.contains { $0.isDropped }, "at the budget, not past it")
        streams.account(1, for: clients[2])
        #expect(clients.map(\.isDropped) == [false, true, false], "the largest backlog, not the last to queue")
        streams.account(-6_000, for: clients[1])
        #expect(streams.waitingBytes == 4_001 && clients[1].backlog.load(ordering: .relaxed) == 0)
    }

    @Test func aSnapshotListsAHundredSubscribersAnEventAtMost() async throws {
        let hub = EventHub(transports: [UDPTransport()])
        try hub.publish("E_MANY")
        for port in 1...150 { try await hub.subscribe(event: "E_MANY", socket: "udp:127.0.0.1:\(port)") }
        let snapshot = await StatusSnapshot.render(hub: hub, mi: ManagementInterface(), streams: nil, version: "test")
        guard case .object(let fields)? = try? EventValue(jsonBytes: snapshot),
            case .array(let events)? = fields.first(where: { $0.name == "events" })?.value,
            case .object(let event)? = events.first,
            case .array(let subscribers)? = event.first(where: { $0.name == "subscribers" })?.value
        else {
            Issue.record("not a snapshot: \(String(decoding: snapshot, as: UTF8.self).prefix(300))")
            return
        }
        #expect(subscribers.count == StatusSnapshot.maximumSubscribersListed)
        #expect(event.first(where: { $0.name == "more" })?.value == .int(50))
        await hub.shutdown()
    }
}
