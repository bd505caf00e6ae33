import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real Kamailio (Debian's `kamailio` and `kamailio-extra-modules`, installed by
/// scripts/test.sh) relaying events to evi through its `evapi` module.
@Suite(.serialized) struct KamailioTests {
    /// Kamailio on two free loopback ports, in a session of its own (stopped as a group: it forks
    /// workers), with the repository's minimal configuration.
    final class Kamailio: @unchecked Sendable {
        let directory = TemporaryDirectory(prefix: "evi-kamailio")
        let sipPort: Int
        let evapiPort: Int
        private(set) var child: ChildProcess?

        init() throws {
            sipPort = try Self.freePort(type: SOCK_DGRAM)
            evapiPort = try Self.freePort(type: SOCK_STREAM)
            let template = try String(
                contentsOf: repositoryRoot.appendingPathComponent("Tests/Fixtures/kamailio/evapi.cfg"), encoding: .utf8)
            try template.replacingOccurrences(of: "SIP_PORT", with: String(sipPort))
                .replacingOccurrences(of: "EVAPI_PORT", with: String(evapiPort))
                .write(toFile: directory.file("kamailio.cfg"), atomically: true, encoding: .utf8)
        }

        static func freePort(type: __socket_type) throws -> Int {
            let fd = socket(AF_INET, Int32(type.rawValue), 0)
            defer { close(fd) }
            guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, let port = localPort(of: fd) else {
                throw ReceiverError("no free port")
            }
            return port
        }

        func start() async throws {
            guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/kamailio") else {
                throw ReceiverError("/usr/sbin/kamailio is missing: run scripts/test.sh, which installs it")
            }
            let started = try ChildProcess(
                executable: "/usr/bin/setsid",
                arguments: [
                    "/usr/sbin/kamailio", "-f", directory.file("kamailio.cfg"), "-DD", "-E", "-Y", directory.path,
                ],
                directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
            child = started
            let port = evapiPort
            let listening = await eventually(timeout: .seconds(20)) {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                return withLoopbackAddress(port: port) { connect(fd, $0, $1) } == 0
            }
            guard listening else { throw ReceiverError("kamailio did not start: \(started.errors.suffix(800))") }
        }

        /// Stops the whole group (the main process and its workers) and waits for it.
        func stop() async {
            guard let child else { return }
            kill(-child.pid, SIGTERM)
            if await child.waitForExit(timeout: .seconds(10)) == nil { kill(-child.pid, SIGKILL) }
            _ = await child.waitForExit(timeout: .seconds(5))
            self.child = nil
        }

        /// Sends a SIP OPTIONS over UDP; the script relays an `E_SIP_OPTIONS` notification.
        func sendOptions(from user: String, callID: String) {
            let message =
                "OPTIONS sip:evi@127.0.0.1:\(sipPort) SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-\(callID)\r\n"
                + "From: <sip:\(user)@127.0.0.1>;tag=\(callID)\r\nTo: <sip:evi@127.0.0.1>\r\nCall-ID: \(callID)\r\n"
                + "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            let bytes = Array(message.utf8)
            _ = withLoopbackAddress(port: sipPort) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
        }
    }

    @Test func kamailioEvapiEventsReachAVirtualParallelAndSurviveAKamailioRestart() async throws {
        try await withTeardown { teardown in
            let kamailio = try Kamailio()
            defer { kamailio.directory.remove() }
            try await kamailio.start()
            let first = try DatagramReceiver()
            let second = try DatagramReceiver()
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_SIP_OPTIONS]
                    ingress: ["evapi:127.0.0.1:\(kamailio.evapiPort)"]
                    subscriptions:
                      - { event: E_SIP_OPTIONS, socket: "virtual:PARALLEL \(first.socket) \(second.socket)" }

                    """)
            teardown.add { await daemon.stop() }
            #expect(
                await eventually {
                    (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#))?.contains(#""connections":1"#)
                        == true
                })
            kamailio.sendOptions(from: "alice", callID: "call-1")
            let expected = #"{"jsonrpc":"2.0","method":"E_SIP_OPTIONS","params":{"from":"alice","call_id":"call-1"}}"#
            #expect(await first.waitFor(count: 1) == [expected])
            #expect(await second.waitFor(count: 1) == [expected])

            // Kamailio restarted: evi reconnects by itself (backoff at most 5 s) and the next event arrives.
            await kamailio.stop()
            try await kamailio.start()
            var attempt = 0
            while first.messages.count < 2, attempt < 30 {
                attempt += 1
                kamailio.sendOptions(from: "bob", callID: "call-\(attempt + 1)")
                try await Task.sleep(for: .milliseconds(500))
            }
            #expect(first.messages.count >= 2, "no event after the restart: \(first.messages)")
            #expect(first.messages.dropFirst().first?.contains(#""from":"bob""#) == true)
            await kamailio.stop()
            await first.close()
            await second.close()
        }
    }
}
