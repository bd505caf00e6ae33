import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Testing

/// `virtual:HASH(callid)` over real loopback receivers: one key's events on one member, even
/// shares, only a removed member's keys move, a dead member's keys go to their next-ranked
/// member and come back after `failover_timeout`.
@Suite(.serialized) struct HashDeliveryTests {
    let clock = ManualClock()
    let directory = TemporaryDirectory()

    func makeHub() throws -> EventHub {
        let hub = EventHub(
            transports: [UDPTransport(), UnixTransport(), VirtualTransport(failoverTimeout: 30)], clock: clock)
        try hub.publish("E_CALL")
        return hub
    }

    /// Raises `count` events over `keys` keys (`call-K`), in steps the receivers keep up with.
    /// A unix datagram receiver holds 10 datagrams here (`net.unix.max_dgram_qlen`): with one in
    /// the set, `step` is small, or a full buffer would mark it failed.
    func raise(_ hub: EventHub, count: Int, keys: Int, receivers: [DatagramReceiver], step: Int = 250) async throws {
        let before = receivers.map(\.count).reduce(0, +)
        for number in 0..<count {
            try hub.raise("E_CALL", ["callid": .string("call-\(number % keys)"), "n": .int(Int64(number))])
            if number % step == step - 1 {
                let expected = before + number + 1
                #expect(await eventually { receivers.map(\.count).reduce(0, +) >= expected })
            }
        }
        let expected = before + count
        #expect(await eventually { receivers.map(\.count).reduce(0, +) >= expected })
    }

    /// Key → index of the receiver that got it, from the messages after `skipping` per receiver.
    func placement(_ receivers: [DatagramReceiver], skipping: [Int]) -> [String: Set<Int>] {
        var placed: [String: Set<Int>] = [:]
        for (index, receiver) in receivers.enumerated() {
            for message in receiver.messages.dropFirst(skipping[index]) {
                guard let key = Self.key(of: message) else { continue }
                placed[key, default: []].insert(index)
            }
        }
        return placed
    }

    static func key(of message: String) -> String? {
        let parts = message.split(separator: "\"", omittingEmptySubsequences: false)
        guard let index = parts.firstIndex(of: "callid"), index + 2 < parts.count else { return nil }
        return String(parts[index + 2])
    }

    @Test func everyKeyOnOneMemberEvenSharesAndOnlyARemovedMembersKeysMove() async throws {
        let hub = try makeHub()
        let receivers = try (0..<3).map { _ in try DatagramReceiver() }
        let three = "virtual:HASH(callid) " + receivers.map(\.socket).joined(separator: " ")
        try await hub.subscribe(event: "E_CALL", socket: three)
        try await raise(hub, count: 10_000, keys: 1000, receivers: receivers)
        let before = placement(receivers, skipping: [0, 0, 0])
        #expect(before.count == 1000)
        #expect(before.values.allSatisfy { $0.count == 1 })
        for index in 0..<3 {
            let keys = before.values.filter { $0 == [index] }.count
            #expect(abs(keys - 333) <= 50, "member \(index): \(keys) keys")
            #expect(abs(receivers[index].count - 3333) <= 500, "member \(index): \(receivers[index].count) events")
        }
        // The same members in another order are the same subscription.
        let reordered = "virtual:HASH(callid) " + receivers.reversed().map(\.socket).joined(separator: " ")
        #expect(try await hub.subscribe(event: "E_CALL", socket: reordered) == .refreshed)
        // Resubscribed with two members: only the removed member's keys move.
        #expect(try await hub.unsubscribe(event: "E_CALL", socket: three))
        try await hub.subscribe(
            event: "E_CALL", socket: "virtual:HASH(callid) \(receivers[0].socket) \(receivers[2].socket)")
        let counts = receivers.map(\.count)
        try await raise(hub, count: 1000, keys: 1000, receivers: receivers)
        let after = placement(receivers, skipping: counts)
        var moved = 0
        for (key, members) in after where members != before[key] {
            moved += 1
            #expect(before[key] == [1], "\(key) moved from \(before[key] ?? [])")
        }
        #expect(moved == before.values.filter { $0 == [1] }.count)
        #expect(receivers[1].count == counts[1])
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }

    @Test func aDeadMembersKeysGoToTheOthersAndComeBack() async throws {
        defer { directory.remove() }
        let hub = try makeHub()
        let path = directory.file("c.sock")
        var receivers = try [DatagramReceiver(), DatagramReceiver(), DatagramReceiver(unixPath: path)]
        let socket = "virtual:HASH(callid) " + receivers.map(\.socket).joined(separator: " ")
        try await hub.subscribe(event: "E_CALL", socket: socket)
        try await raise(hub, count: 300, keys: 300, receivers: receivers, step: 6)
        let before = placement(receivers, skipping: [0, 0, 0])
        #expect(before.count == 300)
        #expect(before.values.allSatisfy { $0.count == 1 })
        // C goes away: its keys go to their next-ranked members, every other key stays.
        await receivers[2].close()
        var counts = receivers.map(\.count)
        try await raise(hub, count: 300, keys: 300, receivers: Array(receivers.prefix(2)), step: 6)
        let during = placement(receivers, skipping: counts)
        for (key, members) in before {
            if members == [2] {
                #expect(during[key]?.isSubset(of: [0, 1]) == true, "\(key)")
            } else {
                #expect(during[key] == members, "\(key)")
            }
        }
        let members = try #require(try hub.subscribers(of: "E_CALL").first?.members)
        #expect(members.map(\.state) == [.up, .up, .failed])
        // C is back and its mark runs out: its keys return.
        receivers[2] = try DatagramReceiver(unixPath: path)
        clock.advance(by: 31)
        counts = receivers.map(\.count)
        try await raise(hub, count: 300, keys: 300, receivers: receivers, step: 6)
        let back = placement(receivers, skipping: counts)
        let differing = before.keys.filter { back[$0] != before[$0] }.sorted()
        let summary = differing.prefix(3).map { "\($0) \(before[$0] ?? []) → \(back[$0] ?? [])" }
        #expect(differing.count == 0, "\(summary)")
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }

    @Test func oneKeysEventsArriveInRaiseOrder() async throws {
        let hub = try makeHub()
        let receivers = try (0..<3).map { _ in try DatagramReceiver() }
        try await hub.subscribe(
            event: "E_CALL", socket: "virtual:HASH(callid) " + receivers.map(\.socket).joined(separator: " "))
        try await raise(hub, count: 3000, keys: 30, receivers: receivers)
        for receiver in receivers {
            var last: [String: Int] = [:]
            for message in receiver.messages {
                let key = try #require(Self.key(of: message))
                let number = numbered([message])[0]
                #expect(number > last[key, default: -1], "\(key) out of order")
                last[key] = number
            }
        }
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }
}
