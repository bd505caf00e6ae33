import EventInterface
import EventInterfaceTestKit
import Synchronization
import Testing

/// The test kit's in-memory transport under the scheme these tests use: `memory:NAME`.
typealias MemoryTransport = TestTransport

extension TestTransport {
    convenience init() { self.init(scheme: "memory") }
}

@Suite struct EventHubTests {
    let clock = ManualClock()
    let memory = MemoryTransport()

    func makeHub(queueSize: Int = 10_000) -> EventHub {
        EventHub(transports: [memory], configuration: .init(queueSize: queueSize), clock: clock)
    }

    @Test func publishAssignsIdsInOrderFromZero() throws {
        let hub = makeHub()
        #expect(try hub.publish("E_A") == Event(name: "E_A", id: 0))
        #expect(try hub.publish("E_B") == Event(name: "E_B", id: 1))
        #expect(try hub.publish("E_A") == Event(name: "E_A", id: 0))
        #expect(hub.events.map(\.name) == ["E_A", "E_B"])
        #expect(throws: EventInterfaceError.invalidEventName("E X")) { try hub.publish("E X") }
        #expect(throws: EventInterfaceError.invalidEventName("")) { try hub.publish("") }
        #expect(hub.events.count == 2)
    }

    @Test func transportEventsArePublishedOnRegistration() {
        struct Announcing: EventTransport {
            let scheme = "announcing"
            let publishedEvents = ["E_ANNOUNCED"]
            func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
                -> any EventSocket
            {
                throw SocketError("never")
            }
        }
        let hub = makeHub()
        #expect(hub.register(Announcing()))
        #expect(!hub.register(Announcing()))
        #expect(hub.event(named: "E_ANNOUNCED") != nil)
        #expect(hub.registry.schemes == ["announcing", "memory"])
    }

    @Test func raisingAnUnpublishedEventIsAnErrorAndNoSubscriberIsAResult() throws {
        let hub = makeHub()
        #expect(throws: EventInterfaceError.eventNotPublished("E_NOPE")) { try hub.raise("E_NOPE") }
        try hub.publish("E_A")
        #expect(try hub.raise("E_A").subscribers == 0)
        #expect(hub.statistics.snapshot().events["E_A"]?.raised == 1)
    }

    /// Raising by the handle `publish` returned (OpenSIPS raises by event id) is the same raise;
    /// a handle from another interface, or one never published, is refused.
    @Test func raisingByHandleIsTheSameRaiseAndForeignHandlesAreRefused() async throws {
        let hub = makeHub()
        let event = try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:handle")
        #expect(try hub.raise(event, ["k": 1]).subscribers == 1)
        #expect(
            await eventually { memory.messages("handle") == [#"{"jsonrpc":"2.0","method":"E_A","params":{"k":1}}"#] })
        #expect(hub.statistics.snapshot().events["E_A"]?.raised == 1)

        let other = makeHub()
        let foreign = try other.publish("E_B")  // id 0 there, but E_A is id 0 here
        #expect(throws: EventInterfaceError.eventNotPublished("E_B")) { try hub.raise(foreign) }
        #expect(throws: EventInterfaceError.eventNotPublished("E_C")) { try hub.raise(Event(name: "E_C", id: 42)) }
        #expect(memory.messages("handle").count == 1)
        await hub.shutdown()
    }

    @Test func subscribeRaiseDeliversToEveryLiveSubscriber() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:one")
        try await hub.subscribe(event: "E_A", socket: "memory:two")
        #expect(try hub.raise("E_A", ["k": "v"]).subscribers == 2)
        #expect(await eventually { memory.messages("one").count == 1 && memory.messages("two").count == 1 })
        #expect(memory.messages("one") == [#"{"jsonrpc":"2.0","method":"E_A","params":{"k":"v"}}"#])
        await hub.shutdown()
    }

    @Test func subscribingAnUnknownEventOrNegativeExpireChangesNothing() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        await #expect(throws: EventInterfaceError.eventNotPublished("E_NOPE")) {
            try await hub.subscribe(event: "E_NOPE", socket: "memory:one")
        }
        await #expect(throws: EventInterfaceError.negativeExpire(-5)) {
            try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(-5))
        }
        #expect(try hub.subscribers(of: "E_A").isEmpty)
    }

    @Test func defaultExpireIsAnHourAndListingsShowNewestFirst() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:one")
        try await hub.subscribe(event: "E_A", socket: "memory:two", expiry: .seconds(120))
        try await hub.subscribe(event: "E_A", socket: "memory:three", expiry: .never)
        let listed = try hub.subscribers(of: "E_A")
        #expect(listed.map(\.socket) == ["memory:three", "memory:two", "memory:one"])
        #expect(listed.map(\.expiry) == [.never, .seconds(120), .seconds(3600)])
        #expect(listed.map(\.ttl) == [nil, 120, 3600])
        clock.advance(by: 10)
        #expect(try hub.subscribers(of: "E_A").map(\.ttl) == [nil, 110, 3590])
        await hub.shutdown()
    }

    @Test func resubscribingAMatchingSocketRefreshesInPlace() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(60))
        try await hub.subscribe(event: "E_A", socket: "memory:two", expiry: .seconds(60))
        clock.advance(by: 50)
        #expect(try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(100)) == .refreshed)
        let listed = try hub.subscribers(of: "E_A")
        #expect(listed.map(\.socket) == ["memory:two", "memory:one"])
        #expect(listed.map(\.ttl) == [10, 100])
        clock.advance(by: 20)
        #expect(try hub.subscribers(of: "E_A").map(\.socket) == ["memory:one"])
        await hub.shutdown()
    }

    @Test func expiredSubscriptionsDeliverNothingAndVanish() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:short", expiry: .seconds(10))
        try await hub.subscribe(event: "E_A", socket: "memory:forever", expiry: .never)
        try hub.raise("E_A", ["n": 1])
        clock.advance(by: 10)
        #expect(try hub.raise("E_A", ["n": 2]).subscribers == 1)
        #expect(await eventually { memory.messages("forever").count == 2 })
        try await Task.sleep(for: .milliseconds(50))
        #expect(memory.messages("short").count == 1)
        #expect(try hub.subscribers(of: "E_A").map(\.socket) == ["memory:forever"])
        clock.advance(by: 1_000_000)
        #expect(try hub.raise("E_A").subscribers == 1)
        await hub.shutdown()
    }

    @Test func expireZeroAndUnsubscribeRemove() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:one")
        try await hub.subscribe(event: "E_A", socket: "memory:two")
        #expect(
            try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(0))
                == .unsubscribed(found: true))
        #expect(
            try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(0))
                == .unsubscribed(found: false))
        #expect(try await hub.unsubscribe(event: "E_A", socket: "memory:two"))
        #expect(try await !hub.unsubscribe(event: "E_A", socket: "memory:two"))
        #expect(try hub.subscribers(of: "E_A").isEmpty)
        #expect(try hub.raise("E_A").subscribers == 0)
    }

    @Test func findsTheSubscriberMatchingASocket() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:one", expiry: .seconds(30))
        #expect(try await hub.subscriber(of: "E_A", matching: "memory:one")?.ttl == 30)
        #expect(try await hub.subscriber(of: "E_A", matching: "memory:other") == nil)
        await #expect(throws: EventInterfaceError.eventNotPublished("E_B")) {
            try await hub.subscriber(of: "E_B", matching: "memory:one")
        }
        await hub.shutdown()
    }

    @Test func aFullQueueFailsAtOnceIsCountedAndNeverBlocksTheProducer() async throws {
        let hub = makeHub(queueSize: 4)
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:slow")
        try await hub.subscribe(event: "E_A", socket: "memory:other")
        memory.gateOpen.store(false, ordering: .relaxed)
        let started = ContinuousClock.now
        for index in 0..<100 { try hub.raise("E_A", ["n": .int(Int64(index))]) }
        #expect(ContinuousClock.now - started < .seconds(1))
        let dropped = hub.statistics.snapshot().transports["memory"]?.dropped ?? 0
        // Two subscribers, each holds at most 4 queued (+ what its task took before the gate).
        #expect(dropped >= 2 * (100 - 4 - 4))
        memory.gateOpen.store(true, ordering: .relaxed)
        #expect(
            await eventually {
                let snapshot = hub.statistics.snapshot().transports["memory"]
                return snapshot.map { $0.delivered + $0.dropped } == 200
            })
        // Order is kept for what was delivered.
        let delivered = memory.messages("slow")
        #expect(delivered == delivered.sorted { $0.count < $1.count || ($0.count == $1.count && $0 < $1) })
        await hub.shutdown()
    }

    @Test func shutdownDrainsQueuedEventsWithinGrace() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:drain")
        for index in 0..<1000 { try hub.raise("E_A", ["n": .int(Int64(index))]) }
        await hub.shutdown(grace: .seconds(5))
        #expect(memory.messages("drain").count == 1000)
    }

    @Test func shutdownDoesNotHangOnAStuckSubscriber() async throws {
        let hub = makeHub()
        try hub.publish("E_A")
        try await hub.subscribe(event: "E_A", socket: "memory:stuck")
        memory.gateOpen.store(false, ordering: .relaxed)
        for _ in 0..<10 { try hub.raise("E_A") }
        let started = ContinuousClock.now
        await hub.shutdown(grace: .milliseconds(200))
        // Grace plus at most one second for the stuck delivery, then it returns regardless
        // (slack for a loaded machine: the point is that it does not hang).
        #expect(ContinuousClock.now - started < .seconds(5))
        memory.gateOpen.store(true, ordering: .relaxed)
    }
}

/// Hardening: what one client can make the hub hold is bounded — events, subscriptions, expire,
/// and each queue in bytes as well as in events.
@Suite struct HubBoundsTests {
    @Test func subscriptionsAndEventsAreBoundedAndMatchingScales() async throws {
        let hub = EventHub(
            transports: [MemoryTransport()], configuration: .init(maxEvents: 1_000, maxSubscriptions: 100_000))
        for index in 0..<1_000 { try hub.publish("E_\(index)") }
        #expect(throws: EventInterfaceError.tooManyEvents(limit: 1_000)) { try hub.publish("E_ONE_TOO_MANY") }
        // 100,000 subscriptions spread over the 1,000 events (each subscribe a lookup, not a scan).
        for index in 0..<100_000 {
            try await hub.subscribe(event: "E_\(index % 1_000)", socket: "memory:m\(index)")
        }
        #expect(try hub.subscribers(of: "E_7").count == 100)
        await #expect(throws: EventInterfaceError.tooManySubscriptions(limit: 100_000)) {
            try await hub.subscribe(event: "E_0", socket: "memory:one-too-many")
        }
        // A refresh is not a new subscription; after an unsubscribe there is room again.
        #expect(try await hub.subscribe(event: "E_0", socket: "memory:m0") == .refreshed)
        #expect(try await hub.unsubscribe(event: "E_0", socket: "memory:m1000"))
        #expect(try await hub.subscribe(event: "E_0", socket: "memory:one-more") == .subscribed)
        await hub.shutdown(grace: .milliseconds(100))
    }

    @Test func expireIsBoundedAndTtlIsTotal() async throws {
        let clock = ManualClock()
        let hub = EventHub(transports: [MemoryTransport()], clock: clock)
        try hub.publish("E_X")
        await #expect(throws: EventInterfaceError.expireTooLarge(Int.max)) {
            try await hub.subscribe(event: "E_X", socket: "memory:a", expiry: .seconds(Int.max))
        }
        try await hub.subscribe(event: "E_X", socket: "memory:b", expiry: .seconds(Expiry.maximumSeconds))
        #expect(try hub.subscribers(of: "E_X").first?.ttl == Expiry.maximumSeconds)
        #expect(wholeSecondsUntil(.infinity, now: 0) == Int.max)
        #expect(wholeSecondsUntil(.nan, now: 0) == 0)
        #expect(wholeSecondsUntil(1e300, now: 0) == Int.max)
        #expect(wholeSecondsUntil(-5, now: 0) == 0)
        await hub.shutdown(grace: .milliseconds(100))
    }

    @Test func aQueueIsBoundedInBytes() async throws {
        let transport = MemoryTransport()
        transport.gateOpen.store(false, ordering: .relaxed)
        let hub = EventHub(transports: [transport], configuration: .init(queueSize: 10_000, queueBytes: 1 << 20))
        try hub.publish("E_BIG")
        try await hub.subscribe(event: "E_BIG", socket: "memory:slow")
        let big = String(repeating: "x", count: 100_000)
        for _ in 0..<30 { try hub.raise("E_BIG", ["blob": .string(big)]) }
        // About ten 100 KB events fit in 1 MiB (one may be in flight); the rest are refused.
        let dropped = hub.statistics.snapshot().transports["memory"]?.dropped ?? 0
        #expect((18...21).contains(dropped), "dropped \(dropped)")
        transport.gateOpen.store(true, ordering: .relaxed)
        await hub.shutdown(grace: .seconds(2))
        #expect(transport.messages("slow").count == 30 - dropped)
    }
}
