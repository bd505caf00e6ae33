import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Testing

/// Filters and field lists on real subscriptions over loopback (Docs/filters.md).
@Suite struct FilterDeliveryTests {
    func makeHub() throws -> EventHub {
        let hub = EventHub(transports: [UDPTransport(), VirtualTransport()])
        try hub.publish("E_CALL")
        return hub
    }

    @Test func aFilteredUDPSubscriberGetsOnlyWhatMatches() async throws {
        let hub = try makeHub()
        let filtered = try DatagramReceiver()
        let everything = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_CALL", socket: filtered.socket,
            attributes: SubscriptionAttributes(filter: try EventFilter(parsing: "aor=*@opensips.org;code!=4*")))
        try await hub.subscribe(event: "E_CALL", socket: everything.socket)
        let raised: [EventParams] = [
            ["aor": "sip:a@opensips.org", "code": 200, "n": 1],
            ["aor": "sip:b@example.org", "code": 200, "n": 2],
            ["aor": "sip:c@opensips.org", "code": 404, "n": 3],
            ["aor": "sip:d@opensips.org", "n": 4],
        ]
        var handed: [Int] = []
        for params in raised { handed.append(try hub.raise("E_CALL", params).subscribers) }
        #expect(handed == [2, 1, 1, 2])
        #expect(numbered(await everything.waitFor(count: 4)) == [1, 2, 3, 4])
        #expect(numbered(await filtered.waitFor(count: 2)) == [1, 4])
        try await Task.sleep(for: .milliseconds(50))
        #expect(filtered.count == 2)
        // Subscribing again without a filter clears it, as it renews the expiry.
        #expect(try await hub.subscribe(event: "E_CALL", socket: filtered.socket) == .refreshed)
        try hub.raise("E_CALL", ["aor": "sip:b@example.org", "n": 5])
        #expect(numbered(await filtered.waitFor(count: 3)) == [1, 4, 5])
        await filtered.close()
        await everything.close()
        await hub.shutdown()
    }

    @Test func theFilterIsOnTheSubscriptionBeforeTheVirtualPolicy() async throws {
        let hub = try makeHub()
        let members = try (0..<2).map { _ in try DatagramReceiver() }
        try await hub.subscribe(
            event: "E_CALL", socket: "virtual:PARALLEL " + members.map(\.socket).joined(separator: " "),
            attributes: SubscriptionAttributes(filter: try EventFilter(parsing: "n=[13]")))
        for number in 1...4 { try hub.raise("E_CALL", ["n": .int(Int64(number))]) }
        for member in members { #expect(numbered(await member.waitFor(count: 2)) == [1, 3]) }
        let info = try #require(try hub.subscribers(of: "E_CALL").first)
        #expect(info.attributes.filter?.text == "n=[13]")
        for member in members { await member.close() }
        await hub.shutdown()
    }

    @Test func fieldsSelectAndOrderTheParametersOthersUnaffected() async throws {
        let hub = try makeHub()
        let selected = try DatagramReceiver()
        let whole = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_CALL", socket: selected.socket,
            attributes: SubscriptionAttributes(fields: ["code", "callid", "absent"]))
        try await hub.subscribe(event: "E_CALL", socket: whole.socket)
        try hub.raise("E_CALL", ["callid": "abc@h", "aor": "sip:a@h", "code": 180, "extra": ["x": [1, 2]]])
        #expect(
            await selected.waitFor(count: 1) == [
                #"{"jsonrpc":"2.0","method":"E_CALL","params":{"code":180,"callid":"abc@h"}}"#
            ])
        #expect(
            await whole.waitFor(count: 1) == [
                #"{"jsonrpc":"2.0","method":"E_CALL","params":{"callid":"abc@h","aor":"sip:a@h","code":180,"extra":{"x":[1,2]}}}"#
            ])
        await selected.close()
        await whole.close()
        await hub.shutdown()
    }

    /// 2,000 subscribers, each filtering its own literal `callid`: each gets its own event only
    /// (the index finds them; nobody else is handed anything).
    @Test func literalFiltersAreIndexedAndExact() async throws {
        let hub = try makeHub()
        let receivers = try (0..<4).map { _ in try DatagramReceiver() }
        // Every other subscription has a socket of its own on 127.0.0.2, which nobody reads (and
        // which cannot be one of the receivers' 127.0.0.1 sockets).
        for index in 0..<2000 {
            let socket = index < 4 ? receivers[index].socket : "udp:127.0.0.2:\(40_000 + index)"
            try await hub.subscribe(
                event: "E_CALL", socket: socket,
                attributes: SubscriptionAttributes(filter: try EventFilter(parsing: "callid=c\(index)")))
        }
        for index in 0..<4 { #expect(try hub.raise("E_CALL", ["callid": .string("c\(index)")]).subscribers == 1) }
        #expect(try hub.raise("E_CALL", ["callid": "nobody"]).subscribers == 0)
        #expect(try hub.raise("E_CALL", ["other": "c1"]).subscribers == 0)
        for (index, receiver) in receivers.enumerated() {
            #expect(
                await receiver.waitFor(count: 1) == [
                    #"{"jsonrpc":"2.0","method":"E_CALL","params":{"callid":"c\#(index)"}}"#
                ])
        }
        for receiver in receivers { await receiver.close() }
        await hub.shutdown()
    }
}
