import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Foundation
import Testing

@testable import EventSpool

@Suite struct RetryBackoffTests {
    @Test func doublesUpToTheMaximumAndStartsOverAfterASuccess() {
        var backoff = RetryBackoff(minimum: 1, maximum: 60)
        #expect((0..<8).map { _ in backoff.failed() } == [1, 2, 4, 8, 16, 32, 60, 60])
        backoff.succeeded()
        #expect(backoff.failed() == 1)
        #expect(RetryBackoff(minimum: 5, maximum: 1).maximum == 5)
    }
}

/// The spool in process, over the test kit's transport: what a failing subscriber misses is kept
/// and delivered in order once it works, across a restart of the spool too.
@Suite struct SpoolTests {
    let directory = TemporaryDirectory(prefix: "evi-spool")
    let transport = TestTransport()

    func makeHub(_ spool: Spool?, idParam: String? = nil) throws -> EventHub {
        var configuration = EventHub.Configuration()
        configuration.delivery = .durable
        configuration.idParam = idParam
        let hub = EventHub(
            transports: [transport, VirtualTransport()], configuration: configuration, durableStore: spool)
        try hub.publish("E_X")
        return hub
    }

    func makeSpool() throws -> Spool {
        var settings = Spool.Settings(directory: directory.file("spool"))
        settings.retryMinimum = 0.02
        settings.retryMaximum = 0.05
        return try Spool(settings: settings)
    }

    @Test func aDurableSubscriptionNeedsASpool() async throws {
        let hub = try makeHub(nil)
        await #expect(throws: EventInterfaceError.durableUnavailable) {
            try await hub.subscribe(event: "E_X", socket: "test:a")
        }
        // A subscription that says memory is fine.
        try await hub.subscribe(event: "E_X", socket: "test:a", delivery: .memory)
    }

    @Test func whatAFailingSubscriberMissedArrivesInOrderAcrossARestart() async throws {
        defer { directory.remove() }
        transport.failing = ["down"]
        var spool = try makeSpool()
        var hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:down")
        for number in 1...500 { try hub.raise("E_X", ["n": .int(Int64(number))]) }
        #expect(await eventually { spool.streams(event: "E_X", identity: nil).first?.report().retryIn != nil })
        await hub.shutdown()
        spool.stop()
        #expect(transport.messages("down").isEmpty)

        // A new run over the same directory delivers everything once the subscriber works.
        transport.failing = []
        spool = try makeSpool()
        hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:down")
        #expect(await eventually { transport.messages("down").count == 500 })
        #expect(numbered(transport.messages("down")) == Array(1...500))
        #expect(spool.streams(event: "E_X", identity: nil).first?.report().events == 0)
        await hub.shutdown()
        spool.stop()
    }

    @Test func anIdParamMakesEveryRaiseDistinguishable() async throws {
        defer { directory.remove() }
        let spool = try makeSpool()
        let hub = try makeHub(spool, idParam: "evi_id")
        try await hub.subscribe(event: "E_X", socket: "test:ids")
        for number in 1...3 { try hub.raise("E_X", ["n": .int(Int64(number))]) }
        try hub.raise("E_X", .positional([1]))
        #expect(await eventually { transport.messages("ids").count == 4 })
        let ids = transport.messages("ids").prefix(3).compactMap { message -> String? in
            guard case .object(let fields)? = try? EventValue(json: message),
                case .object(let params)? = fields.first(where: { $0.name == "params" })?.value,
                case .string(let id)? = params.last(where: { $0.name == "evi_id" })?.value
            else { return nil }
            return id
        }
        #expect(ids.count == 3 && Set(ids).count == 3)
        #expect(transport.messages("ids").last == #"{"jsonrpc":"2.0","method":"E_X","params":[1]}"#)
        await hub.shutdown()
        spool.stop()
    }

    @Test func purgeDropsWhatIsStored() async throws {
        defer { directory.remove() }
        transport.failing = ["gone"]
        let spool = try makeSpool()
        let hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:gone")
        for number in 1...20 { try hub.raise("E_X", ["n": .int(Int64(number))]) }
        let stream = try #require(spool.streams(event: "E_X", identity: nil).first)
        #expect(stream.report().events == 20)
        #expect(stream.purge() == 20)
        #expect(stream.report().events == 0)
        transport.failing = []
        try hub.raise("E_X", ["n": 21])
        #expect(await eventually { transport.messages("gone").count == 1 })
        #expect(numbered(transport.messages("gone")) == [21])
        await hub.shutdown()
        spool.stop()
    }
}

extension SpoolTests {
    /// Past `max_bytes` the oldest events become dead letters, whole segments at a time, while the
    /// newest stay spooled; a replay stores them again and they arrive once the subscriber works.
    @Test func pastMaxBytesTheOldestBecomeDeadLettersAndAReplayDeliversThem() async throws {
        defer { directory.remove() }
        transport.failing = ["full"]
        var settings = Spool.Settings(directory: directory.file("spool"))
        settings.retryMinimum = 0.02
        settings.retryMaximum = 0.05
        settings.maxBytes = 64 << 10
        let spool = try Spool(settings: settings)
        let hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:full")
        let pad = String(repeating: "p", count: 1000)
        // About 100 KiB into a 64 KiB bound: what is shed (and later replayed) fits the bound again.
        for number in 1...100 { try hub.raise("E_X", ["n": .int(Int64(number)), "pad": .string(pad)]) }
        let stream = try #require(spool.streams(event: "E_X", identity: nil).first)
        #expect(await eventually { stream.report().deadLetters > 0 && stream.report().bytes <= 64 << 10 })
        let report = stream.report()
        #expect(report.deadLetters + report.events == 100, "\(report.deadLetters) dead, \(report.events) spooled")
        #expect(report.deadLetters >= 30)
        transport.failing = []
        #expect(await eventually { transport.messages("full").count == report.events })
        // The newest were kept, in order.
        #expect(numbered(transport.messages("full")) == Array((100 - report.events + 1)...100))
        try stream.restore(stream.takeDeadLetters())
        #expect(await eventually { transport.messages("full").count == 100 })
        #expect(Set(numbered(transport.messages("full"))) == Set(1...100))
        #expect(stream.report().deadLetters == 0)
        await hub.shutdown()
        spool.stop()
    }
}
