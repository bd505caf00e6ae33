import EventDatagram
import EventDatagramTestKit
import EventFlatstore
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import Foundation
import Synchronization
import Testing

/// flatstore against real files.
@Suite struct FlatstoreTests {
    let directory = TemporaryDirectory(prefix: "evi-flat")

    func makeHub(_ options: FlatstoreOptions = FlatstoreOptions(), wallClock: (@Sendable () -> Double)? = nil) throws
        -> (EventHub, FlatstoreTransport)
    {
        let transport =
            wallClock.map { FlatstoreTransport(options: options, wallClock: $0) }
            ?? FlatstoreTransport(options: options)
        let hub = EventHub(transports: [transport, UDPTransport(), UnixTransport(), VirtualTransport()])
        try hub.publish("E_MY_EVENT2")
        return (hub, transport)
    }

    func lines(_ path: String) -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    @Test func writesTheOpenSIPSLineFormatWithEscapes() async throws {
        defer { directory.remove() }
        let (hub, _) = try makeHub()
        let path = directory.file("events.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try hub.raise("E_MY_EVENT2", ["name": "alice", "count": 7])
        try hub.raise("E_MY_EVENT2", ["s": "a,b\nc|d\"e", "n": -1])
        try hub.raise("E_MY_EVENT2", ["f": 2.5, "t": true, "n": nil, "o": ["x": [1, 2]], "cr": "a\r\nb"])
        try hub.raise("E_MY_EVENT2", ["positional", 9_999_999_999])
        await hub.shutdown()
        #expect(
            lines(path) == [
                "E_MY_EVENT2,alice,7",
                #"E_MY_EVENT2,a b\nc|d"e,-1"#,
                #"E_MY_EVENT2,2.5,true,,{"x":[1,2]},a\r\nb"#,
                "E_MY_EVENT2,positional,9999999999",
            ])
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o644)
    }

    @Test func optionsChangeTheLine() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.delimiter = "|"
        options.escapeDelimiter = "_"
        options.suppressEventName = true
        options.filePermissions = 0o600
        let (hub, _) = try makeHub(options)
        let path = directory.file("custom.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try hub.raise("E_MY_EVENT2", ["a|b", 1])
        await hub.shutdown()
        #expect(lines(path) == ["a_b|1"])
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    @Test func jsonlFormatWritesTheNotification() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.format = .jsonl
        let (hub, _) = try makeHub(options)
        let path = directory.file("events.jsonl")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try hub.raise("E_MY_EVENT2", ["s": "a\nb"])
        await hub.shutdown()
        #expect(lines(path) == [#"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"s":"a\nb"}}"#])
    }

    @Test func theValueIsNotChangedForOtherSubscribers() async throws {
        defer { directory.remove() }
        let (hub, _) = try makeHub()
        let receiver = try DatagramReceiver()
        try await hub.subscribe(
            event: "E_MY_EVENT2", socket: "virtual:PARALLEL flatstore:\(directory.file("v.log")) \(receiver.socket)")
        try hub.raise("E_MY_EVENT2", ["s": "a,b"])
        #expect(await receiver.waitFor(count: 1) == [#"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"s":"a,b"}}"#])
        await receiver.close()
        await hub.shutdown()
    }

    @Test func badPathsAreRejected() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.allowedDirs = [directory.path]
        let (hub, _) = try makeHub(options)
        let cases: [(String, String)] = [
            ("flatstore:relative.log", "flatstore path must be absolute: flatstore:relative.log"),
            ("flatstore:", "flatstore socket needs a file path: flatstore:"),
            ("flatstore:\(directory.path)/", "flatstore path is a directory: flatstore:\(directory.path)/"),
            // Outside allowed_dirs is checked first, so nothing is probed outside them.
            (
                "flatstore:\(directory.path)",
                "flatstore path is outside allowed_dirs (\(directory.path)): flatstore:\(directory.path)"
            ),
            (
                "flatstore:\(directory.path)/missing/x.log",
                "flatstore directory does not exist: \(directory.path)/missing (flatstore:\(directory.path)/missing/x.log)"
            ),
            (
                "flatstore:\(directory.path)/../etc/x.log",
                "flatstore path must not contain '.' or '..' components: flatstore:\(directory.path)/../etc/x.log"
            ),
            (
                "flatstore:/tmp/outside.log",
                "flatstore path is outside allowed_dirs (\(directory.path)): flatstore:/tmp/outside.log"
            ),
        ]
        await expectRefused(cases, event: "E_MY_EVENT2", by: hub)
        // "flatstore:/DIR" passes the allowed_dirs check only when it is a file inside it.
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:\(directory.path)/ok.log")
        #expect(try hub.subscribers(of: "E_MY_EVENT2").count == 1)
        await hub.shutdown()
    }

    /// Hardening: links cannot take a file outside `allowed_dirs` — a directory link, a file link,
    /// or a link put in place after subscribing (the open refuses to follow it).
    @Test func symbolicLinksDoNotEscapeAllowedDirs() async throws {
        defer { directory.remove() }
        let outside = TemporaryDirectory(prefix: "evi-outside")
        defer { outside.remove() }
        let allowed = directory.file("allowed")
        try FileManager.default.createDirectory(atPath: allowed, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: allowed + "/dirlink", withDestinationPath: outside.path)
        try "before\n".write(toFile: outside.file("victim.log"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: allowed + "/file.log", withDestinationPath: outside.file("victim.log"))
        var options = FlatstoreOptions()
        options.allowedDirs = [allowed]
        let (hub, _) = try makeHub(options)
        await expectRefused(
            [
                (
                    "flatstore:\(allowed)/dirlink/x.log",
                    "flatstore path is outside allowed_dirs (\(allowed)): flatstore:\(allowed)/dirlink/x.log"
                ),
                ("flatstore:\(allowed)/file.log", "flatstore path is a symbolic link: flatstore:\(allowed)/file.log"),
            ], event: "E_MY_EVENT2", by: hub)
        // A link swapped in after subscribing is not followed either.
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:\(allowed)/later.log")
        try FileManager.default.createSymbolicLink(
            atPath: allowed + "/later.log", withDestinationPath: outside.file("victim.log"))
        try hub.raise("E_MY_EVENT2", ["n": 1])
        #expect(await eventually { hub.statistics.snapshot().transports["flatstore"]?.failed == 1 })
        #expect(lines(outside.file("victim.log")) == ["before"])
        #expect(!FileManager.default.fileExists(atPath: outside.file("x.log")))
        await hub.shutdown()
    }

    /// Hardening: a FIFO at a flatstore path used to block the writer on open (with two such
    /// subscriptions, every delivery stopped). Refused at subscribe time, and failing at once
    /// when one appears later, while the other subscribers get everything.
    @Test func aFIFOIsRefusedAndNeverBlocks() async throws {
        defer { directory.remove() }
        let (hub, _) = try makeHub()
        let fifo = directory.file("fifo.log")
        #expect(mkfifo(fifo, 0o644) == 0)
        await expectRefused(
            [("flatstore:\(fifo)", "flatstore path is not a regular file: flatstore:\(fifo)")], event: "E_MY_EVENT2",
            by: hub)
        let receiver = try DatagramReceiver()
        let later = [directory.file("later1.log"), directory.file("later2.log")]
        for path in later { try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:\(path)") }
        try await hub.subscribe(event: "E_MY_EVENT2", socket: receiver.socket)
        for path in later { #expect(mkfifo(path, 0o644) == 0) }
        for index in 1...20 { try hub.raise("E_MY_EVENT2", ["n": .int(Int64(index))]) }
        #expect(await receiver.waitFor(count: 20).count == 20)
        #expect(await eventually { hub.statistics.snapshot().transports["flatstore"]?.failed == 40 })
        await receiver.close()
        await hub.shutdown(grace: .seconds(1))
    }

    @Test func oneDescriptorPerPathHoweverManySubscriptions() async throws {
        defer { directory.remove() }
        let (hub, transport) = try makeHub()
        try hub.publish("E_OTHER")
        let path = directory.file("shared.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try await hub.subscribe(event: "E_OTHER", socket: "flatstore:" + path)
        try hub.raise("E_MY_EVENT2", [1])
        try hub.raise("E_OTHER", [2])
        #expect(await eventually { lines(path).count == 2 })
        #expect(transport.openPaths == [path])
        #expect(transport.openDescriptors == 1)
        _ = try await hub.unsubscribe(event: "E_OTHER", socket: "flatstore:" + path)
        try await Task.sleep(for: .milliseconds(100))
        #expect(transport.openPaths == [path])
        await hub.shutdown()
        #expect(transport.openPaths.isEmpty)
    }

    @Test func maxOpenFilesBoundsDescriptors() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.maxOpenFiles = 2
        let (hub, transport) = try makeHub(options)
        for index in 0..<4 {
            try hub.publish("E_\(index)")
            try await hub.subscribe(event: "E_\(index)", socket: "flatstore:" + directory.file("f\(index).log"))
        }
        for round in 0..<3 {
            for index in 0..<4 { try hub.raise("E_\(index)", [.int(Int64(round))]) }
        }
        #expect(await eventually { (0..<4).allSatisfy { lines(directory.file("f\($0).log")).count == 3 } })
        #expect(transport.openDescriptors <= 2)
        await hub.shutdown()
    }

    @Test func rotatesBySizeKeepingRotateKeepFilesAndLosingNothing() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.rotateSize = 100
        options.rotateKeep = 3
        let (hub, _) = try makeHub(options)
        let path = directory.file("rot.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        for index in 0..<30 { try hub.raise("E_MY_EVENT2", [.int(Int64(100 + index))]) }  // 16 bytes a line
        await hub.shutdown()
        let files = [path, path + ".1", path + ".2", path + ".3"]
        #expect(!FileManager.default.fileExists(atPath: path + ".4"))
        var all: [String] = []
        for file in files.reversed() {
            let content = lines(file)
            #expect(content.reduce(0) { $0 + $1.utf8.count + 1 } <= 100, "\(file)")
            all += content
        }
        // 30 lines of 16 bytes, 6 per file: the newest 4 files hold the last 24, in order.
        #expect(all == (106..<130).map { "E_MY_EVENT2,\($0)" })
    }

    @Test func rotatesByCountAndByPeriodAndAnnouncesIt() async throws {
        defer { directory.remove() }
        final class Box: Sendable { let time = Mutex<Double>(1_000_000) }
        let box = Box()
        var options = FlatstoreOptions()
        options.rotateCount = 2
        options.rotatePeriod = 60
        let (hub, _) = try makeHub(options, wallClock: { box.time.withLock { $0 } })
        let notices = try DatagramReceiver()
        try await hub.subscribe(event: FlatstoreTransport.rotationEvent, socket: notices.socket)
        let path = directory.file("count.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        for index in 1...3 { try hub.raise("E_MY_EVENT2", [.int(Int64(index))]) }
        #expect(await eventually { lines(path) == ["E_MY_EVENT2,3"] })
        #expect(lines(path + ".1") == ["E_MY_EVENT2,1", "E_MY_EVENT2,2"])
        #expect(
            await notices.waitFor(count: 1) == [
                #"{"jsonrpc":"2.0","method":"E_FLATSTORE_ROTATION","params":{"timestamp":"1000000","reason":"count","filename":"\#(path)","old_filename":"\#(path).1"}}"#
            ])
        box.time.withLock { $0 += 60 }
        try hub.raise("E_MY_EVENT2", [4])
        #expect(await eventually { lines(path) == ["E_MY_EVENT2,4"] })
        #expect(lines(path + ".1") == ["E_MY_EVENT2,3"])
        #expect(lines(path + ".2") == ["E_MY_EVENT2,1", "E_MY_EVENT2,2"])
        #expect(await notices.waitFor(count: 2).last?.contains(#""reason":"period""#) == true)
        await notices.close()
        await hub.shutdown()
    }

    @Test func miRotateAfterALogrotateMoveReopensThePath() async throws {
        defer { directory.remove() }
        let (hub, transport) = try makeHub()
        let notices = try DatagramReceiver()
        try await hub.subscribe(event: FlatstoreTransport.rotationEvent, socket: notices.socket)
        let path = directory.file("moved.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try hub.raise("E_MY_EVENT2", ["before"])
        #expect(await eventually { lines(path) == ["E_MY_EVENT2,before"] })
        #expect(rename(path, path + ".moved") == 0)
        try hub.raise("E_MY_EVENT2", ["while moved"])  // still the old descriptor: lands in the moved file
        #expect(await eventually { lines(path + ".moved").count == 2 })
        try transport.rotate(path: path)
        try hub.raise("E_MY_EVENT2", ["after"])
        #expect(await eventually { lines(path) == ["E_MY_EVENT2,after"] })
        #expect(lines(path + ".moved") == ["E_MY_EVENT2,before", "E_MY_EVENT2,while moved"])
        let notice = await notices.waitFor(count: 1).first ?? ""
        #expect(notice.contains(#""reason":"mi","filename":"\#(path)","old_filename":"\#(path)""#))
        #expect(throws: SocketError("File not found")) { try transport.rotate(path: directory.file("unknown.log")) }
        await notices.close()
        await hub.shutdown()
    }

    @Test func concurrentRaisesWhileRotatingBySizeLoseAndDuplicateNothing() async throws {
        defer { directory.remove() }
        var options = FlatstoreOptions()
        options.rotateSize = 4096
        options.rotateKeep = 1000
        let (hub, _) = try makeHub(options)
        try hub.publish("E_OTHER")
        let path = directory.file("stress.log")
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "flatstore:" + path)
        try await hub.subscribe(event: "E_OTHER", socket: "flatstore:" + path)
        let producers = 4
        let perProducer = 2500
        await withTaskGroup(of: Void.self) { group in
            for producer in 0..<producers {
                group.addTask {
                    for index in 0..<perProducer {
                        _ = try? hub.raise(
                            producer % 2 == 0 ? "E_MY_EVENT2" : "E_OTHER",
                            [.string("p\(producer)"), .int(Int64(index))])
                    }
                }
            }
        }
        await hub.shutdown(grace: .seconds(30))
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
            $0.hasPrefix("stress.log")
        }
        #expect(names.count > 10)
        var seen = Set<String>()
        var total = 0
        for name in names {
            for line in lines(directory.file(name)) {
                let fields = line.split(separator: ",")
                #expect(fields.count == 3, "torn line: \(line)")
                #expect(fields.first == "E_MY_EVENT2" || fields.first == "E_OTHER")
                seen.insert(fields.dropFirst().joined(separator: ","))
                total += 1
            }
        }
        #expect(total == producers * perProducer)
        #expect(seen.count == producers * perProducer)
    }

    @Test func failoverAndRoundRobinMoveOnFromADeadFlatstoreMember() async throws {
        defer { directory.remove() }
        let (hub, _) = try makeHub()
        let deadDirectory = directory.file("gone")
        mkdir(deadDirectory, 0o700)
        let dead = "flatstore:\(deadDirectory)/dead.log"
        let live = directory.file("live.log")
        let other = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT2", socket: "virtual:FAILOVER \(dead) flatstore:\(live)")
        try hub.publish("E_RR")
        try await hub.subscribe(event: "E_RR", socket: "virtual:ROUND-ROBIN \(dead) \(other.socket)")
        rmdir(deadDirectory)  // the member dies after subscribing
        for index in 1...5 {
            try hub.raise("E_MY_EVENT2", [.int(Int64(index))])
            try hub.raise("E_RR", ["n": .int(Int64(index))])
        }
        #expect(await eventually { lines(live).count == 5 })
        #expect(lines(live) == (1...5).map { "E_MY_EVENT2,\($0)" })
        #expect(await other.waitFor(count: 5).count == 5)
        #expect(try hub.subscribers(of: "E_MY_EVENT2").first?.members?.first?.state == .failed)
        await other.close()
        await hub.shutdown()
    }
}
