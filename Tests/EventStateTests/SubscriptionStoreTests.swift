import EventInterface
import EventInterfaceTestKit
import EventState
import Testing

@Suite struct SubscriptionStoreTests {
    @Test func savesRefreshesRemovesAndForgetsExpiredOnes() throws {
        let directory = TemporaryDirectory(prefix: "evi-state")
        defer { directory.remove() }
        let store = try SubscriptionStore(directory: directory.path + "/nested/state")
        try store.save(
            event: "E_A", canonical: "udp:127.0.0.1:1", socket: "udp:127.0.0.1:1", expiry: .seconds(60), now: 1000)
        try store.save(
            event: "E_A", canonical: "rabbitmq:u@h/k", socket: "rabbitmq:u:pw@h/k", expiry: .never, now: 1000)
        try store.save(
            event: "E_B", canonical: "udp:127.0.0.1:2", socket: "udp:127.0.0.1:2", expiry: .seconds(10), now: 1000)
        // A refresh replaces the row in place.
        try store.save(
            event: "E_A", canonical: "udp:127.0.0.1:1", socket: "udp:127.0.0.1:1", expiry: .seconds(120), now: 1010)
        let loaded = try store.load(now: 1015)
        #expect(
            loaded == [
                .init(event: "E_A", socket: "udp:127.0.0.1:1", expire: 120, remaining: 115),
                .init(event: "E_A", socket: "rabbitmq:u:pw@h/k", expire: nil, remaining: nil),
            ])
        try store.save(event: "E_A", canonical: "udp:127.0.0.1:1", socket: "udp:127.0.0.1:1", expiry: .seconds(0))
        #expect(try store.load(now: 1015).map(\.socket) == ["rabbitmq:u:pw@h/k"])
        // Reopened, it still holds what was written.
        let again = try SubscriptionStore(directory: directory.path + "/nested/state")
        #expect(try again.load(now: 1015).count == 1)
        try again.savePublished("E_RUNTIME")
        try again.savePublished("E_RUNTIME")
        #expect(try again.publishedEvents() == ["E_RUNTIME"])
    }

    @Test func aStateDirectoryThatCannotBeCreatedIsAnError() {
        #expect(throws: (any Error).self) { try SubscriptionStore(directory: "/proc/evi-cannot-be-here") }
    }
}
