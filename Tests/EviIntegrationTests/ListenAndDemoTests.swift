import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

@Suite(.serialized) struct ListenAndDemoTests {
    @Test func demoShowsAllThreePoliciesInUnderAMinute() async throws {
        let started = ContinuousClock.now
        let demo = try EviProcess(["demo"])
        #expect(await demo.waitForExit(timeout: .seconds(60)) == 0, "\(demo.standardError)")
        #expect(ContinuousClock.now - started < .seconds(60))
        let output = demo.standardOutput
        for line in [
            "PARALLEL — every member gets every event; B is killed after event 3",
            "  4      got  -  got   ← B killed",
            "ROUND-ROBIN — turns 1, 2, 3, …",
            "FAILOVER — B first, A when B fails",
            "  3       -  got   ← B back, still marked",
            "  4      got  -    ← mark ran out",
            "E_VIRTUAL_MEMBER_UP  member B  of the E_DEMO_FAILOVER subscription",
        ] {
            #expect(output.contains(line), "missing: \(line)\n\(output)")
        }
        // ROUND-ROBIN loses nothing: every event went to A or C.
        let roundRobin = output.components(separatedBy: "ROUND-ROBIN —")[1].components(separatedBy: "members:")[0]
        let rows = roundRobin.split(separator: "\n").filter {
            $0.hasPrefix("  ") && $0.dropFirst(2).first?.isNumber == true
        }
        #expect(rows.count == 7)
        #expect(rows.allSatisfy { $0.contains("got") })
        await demo.stop()
    }

    @Test func listenSubscribesItselfRefreshesPrintsAndUnsubscribes() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let listener = try EviProcess([
                "listen", "udp:127.0.0.1:0", "--subscribe", "E_X", "--mi", daemon.miURL, "--expire", "4",
            ])
            teardown.add { await listener.stop() }
            let list = #"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#
            #expect(
                await eventually(timeout: .seconds(10)) { (try? daemon.mi(list))?.contains("udp:127.0.0.1:") == true })
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"who":"alice"}],"id":1}"#)
            #expect(
                await eventually {
                    listener.standardOutput == #"{"jsonrpc":"2.0","method":"E_X","params":{"who":"alice"}}"# + "\n"
                }, "\(listener.standardOutput)")
            // Past the first expire the subscription is still there: it was refreshed.
            try await Task.sleep(for: .seconds(5))
            #expect(try daemon.mi(list).contains("\"expire\":4"))
            listener.signal(SIGTERM)
            #expect(await listener.waitForExit() == 0)
            #expect(try daemon.mi(list) == #"{"jsonrpc":"2.0","result":{"Event":{}},"id":1}"#)
        }
    }

    /// A listener never pretends: a refresh that fails is printed (and retried), and an
    /// unsubscribe that does not happen ends it with status 1 and the reason.
    @Test func listenReportsFailedRefreshesAndAFailedUnsubscribe() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let list = #"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#
            let kept = try EviProcess([
                "listen", "udp:127.0.0.1:0", "--subscribe", "E_X", "--mi", daemon.miURL, "--expire", "60",
            ])
            teardown.add { await kept.stop() }
            #expect(
                await eventually(timeout: .seconds(10)) { (try? daemon.mi(list))?.contains("udp:127.0.0.1:") == true })
            let socket =
                "udp:127.0.0.1:"
                + kept.standardError.components(separatedBy: "udp:127.0.0.1:")[1].prefix { $0.isNumber }
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:unsubscribe","params":["E_X","\#(socket)"],"id":2}"#)
            kept.signal(SIGTERM)
            #expect(await kept.waitForExit() == 1)
            #expect(kept.standardError.contains("evi: cannot unsubscribe \(socket) from E_X"), "\(kept.standardError)")
            #expect(kept.standardError.contains("Subscriber does not exist"))

            let refreshing = try EviProcess([
                "listen", "udp:127.0.0.1:0", "--subscribe", "E_X", "--mi", daemon.miURL, "--expire", "2",
            ])
            teardown.add { await refreshing.stop() }
            #expect(await eventually(timeout: .seconds(10)) { refreshing.standardError.contains("subscribed udp:") })
            await daemon.stop()
            #expect(
                await eventually(timeout: .seconds(10)) {
                    refreshing.standardError.contains("cannot refresh the subscription")
                },
                "\(refreshing.standardError)")
            #expect(refreshing.isRunning)
            refreshing.signal(SIGTERM)
            #expect(await refreshing.waitForExit() == 1)
            #expect(refreshing.standardError.contains("cannot unsubscribe"))
        }
    }

    @Test func listenOnTCPSplitsBackToBackMessagesAndAnswersRequests() async throws {
        try await withTeardown { teardown in
            let listener = try EviProcess(["listen", "tcp:127.0.0.1:0"])
            teardown.add { await listener.stop() }
            #expect(await eventually { listener.standardError.contains("listening on tcp:127.0.0.1:") })
            let port =
                Int(listener.standardError.components(separatedBy: "tcp:127.0.0.1:")[1].prefix { $0.isNumber }) ?? 0
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            #expect(withLoopbackAddress(port: port) { connect(fd, $0, $1) } == 0)
            let stream =
                #"{"jsonrpc":"2.0","method":"E_A","params":{"s":"}{"}}{"id":17,"jsonrpc":"2.0","method":"E_B"}"#
            _ = Array(stream.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 1024)
            let count = recv(fd, &buffer, buffer.count, 0)
            #expect(
                String(decoding: buffer[0..<max(0, count)], as: UTF8.self)
                    == #"{"jsonrpc":"2.0","result":"OK","id":17}"#)
            #expect(
                await eventually {
                    listener.standardOutput
                        == #"{"jsonrpc":"2.0","method":"E_A","params":{"s":"}{"}}"# + "\n"
                        + #"{"id":17,"jsonrpc":"2.0","method":"E_B"}"# + "\n"
                }, "\(listener.standardOutput)")
        }
    }
}
