import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Testing

/// The three policies over real loopback sockets. A unix path with no listener is a dependable
/// dead member: its failures show on every delivery.
@Suite struct VirtualDeliveryTests {
    let clock = ManualClock()
    let directory = TemporaryDirectory()

    func makeHub(failoverTimeout: Double = 30) throws -> EventHub {
        let hub = EventHub(
            transports: [UDPTransport(), UnixTransport(), VirtualTransport(failoverTimeout: failoverTimeout)],
            clock: clock)
        try hub.publish("E_MY_EVENT")
        return hub
    }

    func raise(_ hub: EventHub, _ numbers: ClosedRange<Int>) throws {
        for number in numbers { try hub.raise("E_MY_EVENT", ["n": .int(Int64(number))]) }
    }

    func members(_ hub: EventHub) throws -> [MemberStatus] {
        try hub.subscribers(of: "E_MY_EVENT").first?.members ?? []
    }

    @Test func parallelGivesEveryMemberEveryEvent() async throws {
        let hub = try makeHub()
        let receivers = try (0..<3).map { _ in try DatagramReceiver() }
        try await hub.subscribe(
            event: "E_MY_EVENT", socket: "virtual:PARALLEL " + receivers.map(\.socket).joined(separator: " "))
        try raise(hub, 1...5)
        for receiver in receivers { #expect(numbered(await receiver.waitFor(count: 5)) == [1, 2, 3, 4, 5]) }
        #expect(try members(hub).map(\.delivered) == [5, 5, 5])
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }

    @Test func parallelIsUnaffectedByADeadFirstMember() async throws {
        defer { directory.remove() }
        let hub = try makeHub()
        let live = try (0..<2).map { _ in try DatagramReceiver() }
        let downs = try DatagramReceiver()
        try await hub.subscribe(event: VirtualTransport.memberDownEvent, socket: downs.socket)
        let dead = "unix:" + directory.file("nobody.sock")
        let socket = "virtual:PARALLEL \(dead) \(live[0].socket) \(live[1].socket)"
        try await hub.subscribe(event: "E_MY_EVENT", socket: socket)
        try raise(hub, 1...5)
        for receiver in live { #expect(numbered(await receiver.waitFor(count: 5)) == [1, 2, 3, 4, 5]) }
        #expect(await eventually { (try? members(hub).first?.failed) == 5 })
        let status = try members(hub)
        #expect(status.map(\.state) == [.failed, .up, .up])
        #expect(status[0].retryIn == 30)
        // One DOWN event for the transition, not one per failed delivery.
        let notices = await downs.waitFor(count: 1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(downs.count == 1)
        #expect(
            notices.first
                == #"{"jsonrpc":"2.0","method":"E_VIRTUAL_MEMBER_DOWN","params":{"event":"E_MY_EVENT","socket":"\#(socket)","member":"\#(dead)","reason":"no such socket file"}}"#
        )
        for receiver in live + [downs] { await receiver.close() }
        await hub.shutdown()
    }

    @Test func roundRobinGoesOneTwoThreeOneTwoThreeOne() async throws {
        let hub = try makeHub()
        let receivers = try (0..<3).map { _ in try DatagramReceiver() }
        try await hub.subscribe(
            event: "E_MY_EVENT", socket: "virtual:ROUND-ROBIN " + receivers.map(\.socket).joined(separator: " "))
        try raise(hub, 1...7)
        #expect(numbered(await receivers[0].waitFor(count: 3)) == [1, 4, 7])
        #expect(numbered(await receivers[1].waitFor(count: 2)) == [2, 5])
        #expect(numbered(await receivers[2].waitFor(count: 2)) == [3, 6])
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }

    @Test func roundRobinLosesNothingWithADeadMemberAmongThree() async throws {
        defer { directory.remove() }
        let hub = try makeHub()
        let first = try DatagramReceiver()
        let third = try DatagramReceiver()
        let dead = "unix:" + directory.file("nobody.sock")
        try await hub.subscribe(
            event: "E_MY_EVENT", socket: "virtual:ROUND-ROBIN \(first.socket) \(dead) \(third.socket)")
        // Raised faster than the dead member can fail: those events are re-routed.
        try raise(hub, 1...30)
        #expect(await eventually { (try? members(hub)[1].state) == .failed })
        try raise(hub, 31...300)
        #expect(await eventually { first.count + third.count >= 300 })
        try await Task.sleep(for: .milliseconds(50))
        let got = numbered(first.messages) + numbered(third.messages)
        #expect(got.count == 300)
        #expect(Set(got) == Set(1...300))
        // Once the dead member is marked, the load spreads evenly over the working members.
        #expect(abs(first.count - third.count) <= 12)
        #expect(try members(hub)[1].state == .failed)
        #expect(hub.statistics.snapshot().events["E_MY_EVENT"]?.undelivered == 0)
        await first.close()
        await third.close()
        await hub.shutdown()
    }

    @Test func failoverMovesOnSkipsForTheTimeoutThenTriesTheRecoveredMember() async throws {
        defer { directory.remove() }
        let hub = try makeHub(failoverTimeout: 5)
        let backup = try DatagramReceiver()
        let ups = try DatagramReceiver()
        try await hub.subscribe(event: VirtualTransport.memberUpEvent, socket: ups.socket)
        let primaryPath = directory.file("primary.sock")
        try await hub.subscribe(event: "E_MY_EVENT", socket: "virtual:FAILOVER unix:\(primaryPath) \(backup.socket)")

        try raise(hub, 1...1)
        #expect(numbered(await backup.waitFor(count: 1)) == [1])
        #expect(try members(hub)[0].failed == 1)
        // Marked: skipped without being tried, even once it is back, until the mark runs out.
        let primary = try DatagramReceiver(unixPath: primaryPath)
        clock.advance(by: 4)
        try raise(hub, 2...4)
        #expect(numbered(await backup.waitFor(count: 4)) == [1, 2, 3, 4])
        #expect(try members(hub)[0].failed == 1)
        #expect(try members(hub)[0].retryIn == 1)
        #expect(primary.count == 0)
        // The mark has run out: the next event tries the first member again.
        clock.advance(by: 1)
        try raise(hub, 5...6)
        #expect(numbered(await primary.waitFor(count: 2)) == [5, 6])
        #expect(try members(hub).map(\.state) == [.up, .up])
        #expect(await ups.waitFor(count: 1).count == 1)
        #expect(backup.count == 4)
        for receiver in [backup, ups, primary] { await receiver.close() }
        await hub.shutdown()
    }

    @Test func failoverTriesMarkedMembersAsALastResortAndCountsWhatNobodyTook() async throws {
        defer { directory.remove() }
        let hub = try makeHub()
        let firstPath = directory.file("a.sock")
        let secondPath = directory.file("b.sock")
        try await hub.subscribe(event: "E_MY_EVENT", socket: "virtual:FAILOVER unix:\(firstPath) unix:\(secondPath)")
        try raise(hub, 1...1)
        #expect(await eventually { hub.statistics.snapshot().events["E_MY_EVENT"]?.undelivered == 1 })
        #expect(try members(hub).map(\.state) == [.failed, .failed])
        // Both marked; the second comes back: the event still gets through.
        let second = try DatagramReceiver(unixPath: secondPath)
        try raise(hub, 2...2)
        #expect(numbered(await second.waitFor(count: 1)) == [2])
        #expect(try members(hub).map(\.state) == [.failed, .up])
        #expect(hub.statistics.snapshot().events["E_MY_EVENT"]?.undelivered == 1)
        await second.close()
        await hub.shutdown()
    }

    @Test func failoverPipelinesToAHealthyFirstMemberInOrder() async throws {
        let hub = try makeHub()
        let first = try DatagramReceiver()
        let second = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT", socket: "virtual:FAILOVER \(first.socket) \(second.socket)")
        try raise(hub, 1...200)
        #expect(numbered(await first.waitFor(count: 200)) == Array(1...200))
        #expect(second.count == 0)
        await first.close()
        await second.close()
        await hub.shutdown()
    }

    @Test func aVirtualSubscriptionIsListedWithItsMembersAndFoundByMatching() async throws {
        let hub = try makeHub()
        try await hub.subscribe(
            event: "E_MY_EVENT", socket: "virtual:PARALLEL  udp:127.0.0.1:9001\tudp:127.0.0.1:9002 ",
            expiry: .seconds(60))
        let found = try await hub.subscriber(
            of: "E_MY_EVENT", matching: "virtual:PARALLEL udp:127.0.0.1:9002 udp:127.0.0.1:9001")
        #expect(found?.socket == "virtual:PARALLEL udp:127.0.0.1:9001 udp:127.0.0.1:9002")
        #expect(found?.ttl == 60)
        #expect(found?.members?.map(\.socket) == ["udp:127.0.0.1:9001", "udp:127.0.0.1:9002"])
        #expect(
            try await hub.subscribe(
                event: "E_MY_EVENT", socket: "virtual:PARALLEL udp:127.0.0.1:9002 udp:127.0.0.1:9001")
                == .refreshed)
        #expect(try hub.subscribers(of: "E_MY_EVENT").count == 1)
        await hub.shutdown()
    }
}
