import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Foundation
import Testing

@testable import EventSpool

/// Damage on disk (a flipped byte, a foreign cursor, a full disk) costs only what it touched:
/// every intact record is delivered, what was lost is counted and kept in `corrupt`, and nothing
/// is skipped in silence.
extension SpoolFilesTests {
    /// Reads everything from `from`, as the delivery task does, quarantining what it finds.
    func readAll(_ files: SpoolFiles, from: UInt64 = 1) throws -> (records: [UInt64], damage: Int) {
        var reader = SpoolReader()
        var read: [UInt64] = []
        var wanted = from
        var damage = 0
        for _ in 0..<10_000 where wanted < files.nextSequence {
            let next = reader.read(from: wanted, end: files.nextSequence, limit: 100, segments: segments(files))
            for (segment, found) in reader.takeDamage() where try files.quarantine(found, in: segment) { damage += 1 }
            read += next.map(\.sequence)
            guard reader.resumeFrom > wanted else { break }
            wanted = reader.resumeFrom
        }
        reader.close()
        return (read, damage)
    }

    /// Flips one byte at `offset` of `path`.
    func flip(_ path: String, at offset: UInt64) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        handle.seek(toFileOffset: offset)
        let byte = handle.readData(ofLength: 1)
        handle.seek(toFileOffset: offset)
        handle.write(Data([byte[0] ^ 0x20]))
        try handle.close()
    }

    @Test func aFlippedByteInASealedSegmentCostsOneRecordAndIsMovedToCorrupt() throws {
        defer { directory.remove() }
        let files = try open(segmentSize: 4_000)
        for number in 1...2_000 { _ = try files.append(notification: notification(number), storedAt: 0) }
        #expect(files.segments.count > 10)
        let sealed = files.segments[2]
        // Inside the notification of the third record of the third segment.
        let recordSize = SpoolRecord(
            sequence: sealed.first, storedAt: 0, notification: notification(Int(sealed.first))
        ).encoded().count
        try flip(files.path(of: sealed), at: UInt64(2 * recordSize + 40))
        let (records, damage) = try readAll(files)
        let lost = sealed.first + 2
        let expected: [UInt64] = (1...2_000).map { UInt64($0) }.filter { $0 != lost }
        #expect(records == expected)
        #expect(damage == 1)
        #expect(files.corruptRecords == 1 && files.corruptBytes >= recordSize)
        // Padded over: read again, nothing new is found, the same records come back.
        let again = try readAll(files)
        #expect(again.damage == 0 && again.records == records)
        // The bytes are kept: the corrupt file holds them behind a header naming where they were.
        let corrupt = try Data(contentsOf: URL(fileURLWithPath: directory.file("stream") + "/corrupt"))
        #expect(corrupt.prefix(4) == Data("EVIX".utf8) && corrupt.count == CorruptEntry.size + files.corruptBytes)
        files.close()
        // Counted over restarts.
        let reopened = try open(segmentSize: 4_000)
        #expect(reopened.corruptRecords == 1 && reopened.corruptBytes == files.corruptBytes)
        reopened.close()
    }

    @Test func damageAtTheEndOfASealedSegmentIsSteppedOverToTheNextOne() throws {
        defer { directory.remove() }
        let files = try open(segmentSize: 4_000)
        for number in 1...200 { _ = try files.append(notification: notification(number), storedAt: 0) }
        let sealed = files.segments[1]
        let lastOfIt = files.segments[2].first - 1
        try flip(files.path(of: sealed), at: UInt64(sealed.size - 5))
        let (records, damage) = try readAll(files)
        let expected: [UInt64] = (1...200).map { UInt64($0) }.filter { $0 != lastOfIt }
        #expect(records == expected)
        #expect(damage == 1 && files.corruptRecords == 1)
        files.close()
    }

    @Test func aFlippedByteMidwayThroughTheLastSegmentKeepsEveryRecordAfterIt() throws {
        defer { directory.remove() }
        var files = try open()
        for number in 1...2_000 { _ = try files.append(notification: notification(number), storedAt: 0) }
        let last = try #require(files.segments.last)
        let path = files.path(of: last)
        files.close()
        // The length of record 1,000 (its header is the first thing of it).
        let recordSize = SpoolRecord(sequence: 1, storedAt: 0, notification: notification(1)).encoded().count
        let offset = (0..<999).reduce(0) { total, index in
            total
                + SpoolRecord(sequence: UInt64(index + 1), storedAt: 0, notification: notification(index + 1))
                .encoded().count
        }
        #expect(recordSize > 0)
        try flip(path, at: UInt64(offset + 2))
        files = try open()
        #expect(files.nextSequence == 2_001, "every record after the damage is kept")
        #expect(files.damageAtOpening.count == 1 && files.corruptRecords == 1)
        let (records, damage) = try readAll(files)
        let expected: [UInt64] = (1...2_000).map { UInt64($0) }.filter { $0 != 1_000 }
        #expect(records == expected)
        #expect(damage == 0, "moved aside at opening already")
        files.close()
    }

    @Test func aCursorThatDoesNotCheckDeliversAgainFromTheOldestRecord() throws {
        defer { directory.remove() }
        var files = try open()
        for number in 1...1_000 { _ = try files.append(notification: notification(number), storedAt: 0) }
        files.advanceCursor(to: 400)
        files.close()
        files = try open()
        #expect(files.cursor == 400 && files.cursorWarning == nil)
        files.close()
        let cursor = directory.file("stream") + "/cursor"
        try Data(repeating: 0xFF, count: 8).write(to: URL(fileURLWithPath: cursor))
        files = try open()
        #expect(files.cursor == 1 && files.pending == 1_000)
        #expect(files.cursorWarning?.contains("past the last record") == true)
        files.close()
        try Data(repeating: 0xFF, count: 16).write(to: URL(fileURLWithPath: cursor))
        files = try open()
        #expect(files.cursor == 1 && files.cursorWarning?.contains("does not check") == true)
        files.close()
    }

    @Test func aDeliveredSegmentIsGivenBackOnceItHoldsTheReclaimSize() throws {
        defer { directory.remove() }
        let files = try open(segmentSize: 4 << 20)
        var count = 0
        while files.bytes < SpoolFiles.reclaimSize {
            count += 1
            _ = try files.append(notification: notification(count), storedAt: 0)
        }
        files.advanceCursor(to: files.nextSequence)
        #expect(files.bytes == 0 && files.segments.isEmpty, "fully delivered: no space kept")
        #expect(try files.append(notification: notification(0), storedAt: 0) == UInt64(count + 1))
        // A small delivered segment stays (no file made and deleted at every event).
        files.advanceCursor(to: files.nextSequence)
        #expect(files.segments.count == 1)
        files.close()
    }
}

/// The same through the spool and a subscriber: a stream damaged in a sealed segment delivers
/// every other event, and those raised after the restart, and says what it lost.
@Suite struct SpoolStreamDamageTests {
    let directory = TemporaryDirectory(prefix: "evi-spool-damage")
    let transport = TestTransport()

    func makeSpool() throws -> Spool {
        var settings = Spool.Settings(directory: directory.file("spool"))
        settings.retryMinimum = 0.02
        settings.retryMaximum = 0.05
        settings.segmentSize = 16 << 10
        return try Spool(settings: settings)
    }

    func makeHub(_ spool: Spool) throws -> EventHub {
        var configuration = EventHub.Configuration()
        configuration.delivery = .durable
        let hub = EventHub(transports: [transport], configuration: configuration, durableStore: spool)
        try hub.publish("E_X")
        return hub
    }

    @Test func aDamagedSealedSegmentDoesNotWedgeTheStream() async throws {
        defer { directory.remove() }
        transport.failing = ["down"]
        var spool = try makeSpool()
        var hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:down")
        for number in 1...2_000 { try hub.raise("E_X", ["n": .int(Int64(number))]) }
        #expect(await eventually { spool.streams(event: "E_X", identity: nil).first?.report().retryIn != nil })
        await hub.shutdown()
        spool.stop()
        // One flipped byte in the middle of the second segment.
        let streamDirectory = try #require(
            FileManager.default.subpathsOfDirectory(atPath: directory.file("spool")).first { $0.hasSuffix(".seg") }
                .map { directory.file("spool") + "/" + ($0 as NSString).deletingLastPathComponent })
        let names = try FileManager.default.contentsOfDirectory(atPath: streamDirectory).filter { $0.hasSuffix(".seg") }
            .sorted()
        #expect(names.count > 2)
        let second = streamDirectory + "/" + names[1]
        let handle = try #require(FileHandle(forUpdatingAtPath: second))
        handle.seek(toFileOffset: 5_000)
        let byte = handle.readData(ofLength: 1)
        handle.seek(toFileOffset: 5_000)
        handle.write(Data([byte[0] ^ 0x01]))
        try handle.close()

        transport.failing = []
        spool = try makeSpool()
        hub = try makeHub(spool)
        try await hub.subscribe(event: "E_X", socket: "test:down")
        try hub.raise("E_X", ["n": 2_001])
        #expect(await eventually { transport.messages("down").count == 2_000 })
        let delivered = numbered(transport.messages("down"))
        #expect(delivered.count == 2_000 && delivered.last == 2_001)
        #expect(Set(1...2_001).subtracting(delivered).count == 1, "one record lost, the rest delivered")
        let report = try #require(spool.streams(event: "E_X", identity: nil).first?.report())
        #expect(report.corruptRecords == 1 && report.corruptBytes > 0 && report.events == 0)
        await hub.shutdown()
        spool.stop()
    }
}
