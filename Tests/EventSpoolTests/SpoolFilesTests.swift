import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

@testable import EventSpool

/// The on-disk log of one durable stream: records, segments, the cursor, a torn tail.
@Suite struct SpoolFilesTests {
    let directory = TemporaryDirectory(prefix: "evi-spool")

    func open(segmentSize: Int = 1 << 20) throws -> SpoolFiles {
        try SpoolFiles(
            directory: directory.file("stream"), describing: "E_X udp:127.0.0.1:1", segmentSize: segmentSize,
            fsyncAlways: false)
    }

    func notification(_ number: Int) -> [UInt8] {
        Array(#"{"jsonrpc":"2.0","method":"E_X","params":{"n":\#(number)}}"#.utf8)
    }

    func segments(_ files: SpoolFiles) -> [(first: UInt64, path: String)] {
        files.segments.map { ($0.first, files.path(of: $0)) }
    }

    @Test func aRecordReadsBackAndACorruptOneIsToldApart() {
        let record = SpoolRecord(sequence: 42, storedAt: 1_700_000_000.5, notification: notification(1))
        var bytes = record.encoded()
        #expect(SpoolRecord.parse(bytes[...]) == .record(record, length: bytes.count))
        #expect(SpoolRecord.parse(bytes.dropLast()) == .incomplete)
        bytes[bytes.count - 3] ^= 0x01
        #expect(SpoolRecord.parse(bytes[...]) == .corrupt)
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)  // the standard check value
    }

    @Test func eventsAreReadBackInOrderAcrossSegmentsAndDeliveredSegmentsDeleted() throws {
        defer { directory.remove() }
        let files = try open(segmentSize: 1_000)
        for number in 1...100 {
            #expect(try files.append(notification: notification(number), storedAt: 0) == UInt64(number))
        }
        #expect(files.segments.count > 5)
        var reader = SpoolReader()
        var read: [SpoolRecord] = []
        while read.count < 100 {
            let next = reader.read(
                from: UInt64(read.count + 1), end: files.nextSequence, limit: 7, segments: segments(files))
            guard !next.isEmpty else { break }
            read += next
        }
        #expect(read.map(\.sequence) == Array(1...100))
        #expect(read[41].notification == notification(42))
        let before = files.segments.count
        files.advanceCursor(to: 60)
        #expect(files.segments.count < before)
        #expect(files.segments.first.map { $0.first <= 60 } == true)
        // Rewinding (a retry) reads the same events again.
        #expect(reader.read(from: 60, end: 63, limit: 10, segments: segments(files)).map(\.sequence) == [60, 61, 62])
        files.close()
    }

    @Test func reopeningKeepsTheCursorAndCutsATornTail() throws {
        defer { directory.remove() }
        var files = try open()
        for number in 1...10 { _ = try files.append(notification: notification(number), storedAt: 0) }
        files.advanceCursor(to: 4)
        let path = files.path(of: try #require(files.segments.last))
        files.close()
        // A crash in the middle of writing the 11th record.
        let torn = SpoolRecord(sequence: 11, storedAt: 0, notification: notification(11)).encoded()
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(torn.prefix(torn.count / 2)))
        try handle.close()
        files = try open()
        #expect(files.cursor == 4)
        #expect(files.nextSequence == 11)
        #expect(files.pending == 7)
        #expect(try files.append(notification: notification(11), storedAt: 0) == 11)
        var reader = SpoolReader()
        #expect(
            reader.read(from: 4, end: files.nextSequence, limit: 100, segments: segments(files)).map(\.sequence)
                == Array(4...11))
        files.close()
    }

    @Test func deadLettersAreKeptCountedAndCleared() throws {
        defer { directory.remove() }
        var files = try open()
        let records = (1...3).map {
            SpoolRecord(sequence: UInt64($0), storedAt: Double($0), notification: notification($0))
        }
        try files.appendDead(records)
        #expect(files.deadCount == 3 && files.deadOldest == 1)
        files.close()
        files = try open()
        #expect(files.readDead() == records)
        #expect(files.deadCount == 3)
        #expect(files.clearDead() == 3)
        #expect(files.readDead().isEmpty)
        files.close()
    }
}
