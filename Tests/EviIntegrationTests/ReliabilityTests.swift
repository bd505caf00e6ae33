import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Dead, slow and killed subscribers, against the real daemon.
@Suite(.serialized) struct ReliabilityTests {
    static func rss(_ pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.filter(\.isNumber)) ?? 0) * 1024
    }

    /// Raises `count` events over MI in batches of 500.
    static func raise(_ daemon: Daemon, event: String, from first: Int, count: Int) throws {
        var index = first
        while index < first + count {
            let end = min(index + 500, first + count)
            let batch = (index..<end).map {
                #"{"jsonrpc":"2.0","method":"evi:raise","params":["\#(event)",{"n":\#($0)}],"id":\#($0)}"#
            }
            _ = try daemon.mi("[" + batch.joined(separator: ",") + "]")
            index = end
        }
    }

    /// The issue's case: a PARALLEL of a Unix socket nobody drains and a live member.
    @Test func anUndrainedUnixMemberKeepsMemoryBoundedWhileTheLiveMemberGetsEverything() async throws {
        try await blackholeRun(name: "unix blackhole", withNeverReadingTCP: false)
    }

    /// Harsher: a TCP peer that accepts and never reads as well (its queue fills, its writes time out).
    @Test func blackholedSubscribersKeepMemoryBoundedWhileOtherMembersGetEverything() async throws {
        try await blackholeRun(name: "unix and tcp blackholes", withNeverReadingTCP: true)
    }

    /// Raises over MI to `virtual:PARALLEL [tcp-never-read] unix-undrained flatstore-live`, sampling
    /// the daemon's RSS. CI raises 100,000 with the default queue_size; `EVI_BLACKHOLE_EVENTS=1000000`
    /// with `EVI_BINARY=.build/release/evi` is the issue's million (README figures), and
    /// `EVI_BLACKHOLE_QUEUE` sets queue_size.
    func blackholeRun(name: String, withNeverReadingTCP: Bool) async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-blackhole")
            teardown.add { directory.remove() }
            let environment = ProcessInfo.processInfo.environment
            let queueSize = environment["EVI_BLACKHOLE_QUEUE"].flatMap { Int($0) } ?? 10_000
            let daemon = try await Daemon.start(
                extra: "events: [E_X]\nqueue_size: \(queueSize)\nmodules:\n  event_stream: { timeout: 200 }\n")
            teardown.add { await daemon.stop() }
            let neverReads = try JSONRPCTestServer(mode: .neverRead)
            defer { neverReads.close() }
            let blackhole = try UndrainedUnixSocket(path: directory.file("blackhole.sock"))
            defer { blackhole.close() }
            // The live member is a file: a loopback UDP receiver may itself drop under load, a file does not.
            let live = directory.file("live.log")
            func lines() -> [String] {
                ((try? String(contentsOfFile: live, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            let members =
                (withNeverReadingTCP ? [neverReads.socket] : []) + ["unix:\(blackhole.path)", "flatstore:\(live)"]
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","virtual:PARALLEL \#(members.joined(separator: " "))"],"id":1}"#
            )
            let total = max(100_000, environment["EVI_BLACKHOLE_EVENTS"].flatMap { Int($0) } ?? 100_000)
            let warmUp = total / 10
            try Self.raise(daemon, event: "E_X", from: 0, count: warmUp)
            #expect(await eventually(timeout: .seconds(60)) { lines().count == warmUp })
            let before = Self.rss(daemon.process.child.pid)
            var samples: [Int] = []
            var raised = warmUp
            while raised < total {
                let count = min(max(5_000, total / 20), total - raised)
                try Self.raise(daemon, event: "E_X", from: raised, count: count)
                raised += count
                samples.append(Self.rss(daemon.process.child.pid))
            }
            _ = await eventually(timeout: .seconds(120)) { lines().count >= total }
            samples.append(Self.rss(daemon.process.child.pid))
            let got = lines()
            #expect(got.count == total)
            #expect(Set(got).count == total)
            let metrics = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
            let dropped = metrics.split(separator: "\n").filter {
                $0.hasPrefix("evi_dropped_total") && !$0.hasSuffix(" 0")
            }
            if withNeverReadingTCP {
                #expect(dropped.contains { $0.hasPrefix(#"evi_dropped_total{transport="tcp"}"#) }, "\(dropped)")
            }
            // The bound: queue_size events per stuck member (a queued event keeps its parameters and
            // encodings, some 600 bytes), whatever is raised. RSS climbs while those queues fill, then
            // stays: over the second half of a long run it may not grow by more than 10 % (a short
            // run's second half is still filling queues, so it is held to the absolute bound only).
            let middle = samples[(samples.count - 1) / 2]
            let latePeak = samples[((samples.count - 1) / 2)...].max() ?? 0
            let peak = samples.max() ?? 0
            if total >= 1_000_000 {
                #expect(
                    Double(latePeak) <= Double(middle) * 1.10,
                    "RSS grew from \(middle) to \(latePeak) bytes in the second half")
            }
            #expect(peak - before < 40 << 20, "RSS grew from \(before) to \(peak) bytes")
            print(
                "\(name), queue_size \(queueSize): \(total) events, live member got \(got.count); RSS at 10 % \(before >> 10) KiB, at half "
                    + "\(middle >> 10) KiB, peak \(peak >> 10) KiB (every \(max(5_000, total / 20)) events: "
                    + "\(samples.map { $0 >> 10 })); \(dropped.joined(separator: ", "))")
        }
    }

    @Test func aMemberKilledAndRestartedMidStreamLosesNothingUnderFailoverAndRoundRobin() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-killed")
            teardown.add { directory.remove() }
            let daemon = try await Daemon.start(
                extra: "events: [E_FO, E_RR]\nmodules:\n  event_virtual: { failover_timeout: 1 }\n")
            teardown.add { await daemon.stop() }
            let primaryPath = directory.file("primary.sock")
            var primary = try DatagramReceiver(unixPath: primaryPath)
            let backup = try DatagramReceiver()
            let rrPath = directory.file("rr.sock")
            var rrMember = try DatagramReceiver(unixPath: rrPath)
            let rrOther = try DatagramReceiver()
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_FO","virtual:FAILOVER unix:\#(primaryPath) \#(backup.socket)"],"id":1}"#
            )
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_RR","virtual:ROUND-ROBIN unix:\#(rrPath) \#(rrOther.socket)"],"id":1}"#
            )
            var killedPrimary: [String] = []
            var killedRR: [String] = []
            for round in 0..<30 {
                try Self.raise(daemon, event: "E_FO", from: round * 100, count: 100)
                try Self.raise(daemon, event: "E_RR", from: round * 100, count: 100)
                try await Task.sleep(for: .milliseconds(50))
                if round == 8 {  // killed
                    _ = await primary.waitFor(count: primary.count)
                    killedPrimary = primary.messages
                    killedRR = rrMember.messages
                    await primary.close()
                    await rrMember.close()
                }
                if round == 20 {  // restarted
                    primary = try DatagramReceiver(unixPath: primaryPath)
                    rrMember = try DatagramReceiver(unixPath: rrPath)
                }
            }
            try await Task.sleep(for: .milliseconds(1500))
            try Self.raise(daemon, event: "E_FO", from: 3_000, count: 100)
            try Self.raise(daemon, event: "E_RR", from: 3_000, count: 100)
            let everything = Set(0..<3_100)
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Set(numbered(killedPrimary + primary.messages + backup.messages)) == everything
                })
            #expect(
                await eventually(timeout: .seconds(10)) {
                    Set(numbered(killedRR + rrMember.messages + rrOther.messages)) == everything
                })
            // The restarted members took events again.
            #expect(!primary.messages.isEmpty)
            #expect(!rrMember.messages.isEmpty)
            print(
                "killed: FAILOVER and ROUND-ROBIN each delivered 3,100 of 3,100 events across a member's death and restart"
            )
            for receiver in [primary, backup, rrMember, rrOther] { await receiver.close() }
        }
    }
}

extension ReliabilityTests {
    /// SIGINT with events queued for a peer that never reads: the daemon exits 0 within its grace
    /// and says, per subscriber and in all, how many it delivered while draining and how many it
    /// abandoned (day-one issue: it used to log only "stopping" and "stopped").
    @Test func shutdownSaysWhatItDeliveredAndWhatItAbandoned() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(
                extra:
                    "events: [E_X]\nshutdown_grace: 1\nqueue_size: 100000\nmodules:\n  event_stream: { timeout: 60000 }\n",
                logLevel: "info")
            teardown.add { await daemon.stop() }
            let neverReads = try JSONRPCTestServer(mode: .neverRead)
            defer { neverReads.close() }
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","\#(neverReads.socket)"],"id":1}"#)
            // 20,000 events of about 1 KB: more than loopback socket buffers take.
            let padding = String(repeating: "x", count: 1000)
            for first in stride(from: 0, to: 20_000, by: 500) {
                let batch = (first..<first + 500).map {
                    #"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"n":\#($0),"pad":"\#(padding)"}],"id":\#($0)}"#
                }
                _ = try daemon.mi("[" + batch.joined(separator: ",") + "]")
            }
            daemon.process.signal(SIGINT)
            #expect(await daemon.process.waitForExit(timeout: .seconds(10)) == 0)
            let log = daemon.process.standardError
            func number(after marker: String, in line: Substring) -> Int? {
                guard let range = line.range(of: marker) else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }
            let drained = log.split(separator: "\n").first { $0.contains("queue drained on close") }
            let stopped = log.split(separator: "\n").first { $0.contains("stopped") }
            let abandoned = drained.flatMap { number(after: "abandoned=", in: $0) } ?? 0
            #expect(abandoned > 0, "\(log.suffix(2000))")
            #expect(drained?.contains("socket=\(neverReads.socket)") == true)
            #expect(drained.flatMap { number(after: "queued=", in: $0) }.map { $0 > 0 && $0 <= 20_000 } == true)
            #expect(stopped.flatMap { number(after: "abandoned=", in: $0) } == abandoned)
        }
    }
}

/// A Unix datagram socket that is bound and never read: its buffer fills and stays full.
final class UndrainedUnixSocket: Sendable {
    let path: String
    private let descriptor: Int32

    init(path: String) throws {
        self.path = path
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        unlink(path)
        let bound = unixSocketAddress(path).map { address in withSocketAddress(address) { bind(descriptor, $0, $1) } }
        guard bound == 0 else { throw ReceiverError("bind \(path)") }
    }

    func close() { Glibc.close(descriptor) }
}
