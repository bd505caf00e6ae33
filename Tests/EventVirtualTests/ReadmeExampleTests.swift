import EventDatagram
import EventInterface
import EventVirtual
import Foundation
import Testing

/// The README's library example, compiled and run here; the test fails when the README's copy
/// and this one differ.
@Suite struct ReadmeExampleTests {
    func example() async throws {
        // README example begin
        let hub = EventHub(transports: [UDPTransport(), UnixTransport(), VirtualTransport(failoverTimeout: 30)])
        try hub.publish("E_PIKE_BLOCKED")

        // The primary receiver is a Unix socket; when it is down, events go to udp instead.
        try await hub.subscribe(
            event: "E_PIKE_BLOCKED",
            socket: "virtual:FAILOVER unix:/run/evi-example/primary.sock udp:127.0.0.1:9000",
            expiry: .seconds(600))

        let result = try hub.raise("E_PIKE_BLOCKED", ["ip": "10.0.0.1", "count": 42, "blocked": true])
        print("handed to \(result.subscribers) subscriber(s)")

        try await Task.sleep(for: .milliseconds(100))
        for subscriber in try hub.subscribers(of: "E_PIKE_BLOCKED") {
            for member in subscriber.members ?? [] {
                print(member.socket, member.state, "delivered:", member.delivered, "failed:", member.failed)
            }
        }
        await hub.shutdown()
        // README example end
    }

    @Test func theExampleRuns() async throws {
        try await example()
    }

    @Test func theReadmeShowsThisExample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        func body(_ text: String, from start: String, to end: String) -> [String] {
            let lines = text.components(separatedBy: "\n")
            guard let first = lines.firstIndex(where: { $0.contains(start) }),
                let last = lines[(first + 1)...].firstIndex(where: { $0.contains(end) })
            else { return [] }
            return lines[(first + 1)..<last].map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        let example = body(source, from: "// README example " + "begin", to: "// README example " + "end")
        let block = body(readme, from: "```swift", to: "```")
            .filter { !$0.hasPrefix("import ") }
        #expect(!example.isEmpty)
        #expect(block == example)
    }
}
