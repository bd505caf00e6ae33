import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Synchronization
import Testing

/// `raise(_:_:onSettled:)`: told once every subscriber is done with the event (what a broker
/// ingress acknowledges on), through plain and virtual subscribers alike.
@Suite struct SettlementTests {
    let transport = TestTransport()

    func makeHub(queueSize: Int = 10_000) throws -> EventHub {
        let hub = EventHub(
            transports: [transport, VirtualTransport()], configuration: EventHub.Configuration(queueSize: queueSize))
        try hub.publish("E_X")
        return hub
    }

    /// Counts its calls.
    final class Settled: Sendable {
        private let calls = Atomic<Int>(0)
        var count: Int { calls.load(ordering: .relaxed) }
        func callAsFunction() { calls.add(1, ordering: .relaxed) }
    }

    func raise(_ hub: EventHub, _ settled: Settled) throws {
        try hub.raise("E_X", ["n": 1]) { settled() }
    }

    @Test func anEventNobodyTakesIsSettledAtOnce() throws {
        let hub = try makeHub()
        let settled = Settled()
        try raise(hub, settled)
        #expect(settled.count == 1)
        #expect(throws: EventInterfaceError.self) { try hub.raise("E_NOBODY", .none) { settled() } }
        #expect(settled.count == 1)
    }

    @Test func anEventIsSettledOnlyOnceEverySubscriberIsDone() async throws {
        let hub = try makeHub()
        try await hub.subscribe(event: "E_X", socket: "test:plain")
        try await hub.subscribe(event: "E_X", socket: "virtual:PARALLEL test:a test:b")
        transport.gateOpen.store(false, ordering: .relaxed)
        let settled = Settled()
        try raise(hub, settled)
        try await Task.sleep(for: .milliseconds(50))
        #expect(settled.count == 0)
        transport.gateOpen.store(true, ordering: .relaxed)
        #expect(await eventually { settled.count == 1 })
        #expect(transport.messages("plain").count == 1)
        #expect(transport.messages("a").count == 1 && transport.messages("b").count == 1)
        try await Task.sleep(for: .milliseconds(20))
        #expect(settled.count == 1)
        await hub.shutdown()
    }

    @Test func failoverSettlesWhenTheNextMemberDelivers() async throws {
        let hub = try makeHub()
        try await hub.subscribe(event: "E_X", socket: "virtual:FAILOVER test:dead test:live")
        transport.failing = ["dead"]
        transport.gateOpen.store(false, ordering: .relaxed)
        let settled = Settled()
        try raise(hub, settled)
        try await Task.sleep(for: .milliseconds(30))
        #expect(settled.count == 0)
        transport.gateOpen.store(true, ordering: .relaxed)
        #expect(await eventually { settled.count == 1 })
        #expect(transport.messages("live").count == 1)
        await hub.shutdown()
    }

    @Test func anEventNoMemberTookIsSettledAsFinallyFailed() async throws {
        let hub = try makeHub()
        try await hub.subscribe(event: "E_X", socket: "virtual:FAILOVER test:dead1 test:dead2")
        transport.failing = ["dead1", "dead2"]
        let settled = Settled()
        try raise(hub, settled)
        #expect(await eventually { settled.count == 1 })
        #expect(hub.statistics.snapshot().events["E_X"]?.undelivered == 1)
        await hub.shutdown()
    }

    @Test func anEventAFullQueueRefusedIsSettledAtOnce() async throws {
        let hub = try makeHub(queueSize: 1)
        try await hub.subscribe(event: "E_X", socket: "test:slow")
        transport.gateOpen.store(false, ordering: .relaxed)
        let settled = Settled()
        for _ in 0..<3 { try raise(hub, settled) }
        // The first is queued (or in flight); the next ones found the queue full.
        #expect(await eventually { settled.count == 2 })
        transport.gateOpen.store(true, ordering: .relaxed)
        #expect(await eventually { settled.count == 3 })
        await hub.shutdown()
    }
}
