import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// evi as the one subscriber an OpenSIPS needs: OpenSIPS' own datagrams (recorded) into the real
/// daemon's ingress, fanned out to evi's subscribers exactly as a local raise.
@Suite(.serialized) struct IngressTests {
    static func recorded(_ file: String) throws -> String {
        let url = repositoryRoot.appendingPathComponent("Tests/Fixtures/opensips/\(file)")
        let top = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
        let log = (top?["receiver_log"] as? [[String: Any]]) ?? []
        return try #require(log.compactMap { $0["data"] as? String }.first)
    }

    static func send(_ text: String, toUnix path: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        let bytes = Array(text.utf8)
        if let address = unixSocketAddress(path) {
            _ = withSocketAddress(address) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
        }
    }

    static func send(_ text: String, toUDP port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        let bytes = Array(text.utf8)
        _ = withLoopbackAddress(port: port) { sendto(fd, bytes, bytes.count, 0, $0, $1) }
    }

    @Test func openSIPSDatagramsAreRaisedAsLocalEventsAndMalformedOnesCounted() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-ingress")
            teardown.add { directory.remove() }
            let unixPath = directory.file("ingress.sock")
            let log = directory.file("events.log")
            let direct = try DatagramReceiver()
            let failoverBackup = try DatagramReceiver()
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_MY_EVENT2]
                    ingress:
                      - udp:127.0.0.1:0
                      - "unix:\(unixPath)"
                    subscriptions:
                      - { event: E_MY_EVENT2, socket: "\(direct.socket)" }
                      - { event: E_MY_EVENT2, socket: "flatstore:\(log)" }
                      - { event: E_MY_EVENT2, socket: "virtual:FAILOVER unix:\(directory.file("nobody.sock")) \(failoverBackup.socket)" }

                    """)
            teardown.add { await daemon.stop() }
            let udpPort = try daemon.ingressPort("udp")

            let udpBytes = try Self.recorded("transport_udp.json")
            let unixBytes = try Self.recorded("transport_unix.json")
            Self.send(udpBytes, toUDP: udpPort)
            Self.send(unixBytes, toUnix: unixPath)
            // The notification a local raise of the same event produces, byte for byte.
            let expected = #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"name":"alice","count":7}}"#
            #expect(await direct.waitFor(count: 2) == [expected, expected])
            #expect(await failoverBackup.waitFor(count: 2) == [expected, expected])
            #expect(
                await eventually {
                    (try? String(contentsOfFile: log, encoding: .utf8)) == "E_MY_EVENT2,alice,7\nE_MY_EVENT2,alice,7\n"
                })

            for bad in ["{not json", "[1]", #"{"jsonrpc":"2.0","method":"E_NOBODY_PUBLISHED"}"#] {
                Self.send(bad, toUDP: udpPort)
            }
            #expect(
                await eventually {
                    (try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":2}"#))?.contains(
                        #""rejected":{"not_json":1,"not_an_object":1,"unknown_event":1}"#) == true
                }, "\((try? daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":3}"#)) ?? "")")
            let metrics = try RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText
            #expect(metrics.contains(#"evi_ingress_received_total{ingress="udp:127.0.0.1:0"} 1"#), "\(metrics)")
            // evi's own ingress is no destination: subscribing it would loop.
            let loop = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_MY_EVENT2","udp:127.0.0.1:\#(udpPort)"],"id":4}"#
            )
            #expect(loop.contains("one of evi's own ingress or MI addresses"), "\(loop)")
            let unixLoop = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_MY_EVENT2","virtual:PARALLEL \#(direct.socket) unix:\#(unixPath)"],"id":5}"#
            )
            #expect(unixLoop.contains("one of evi's own ingress addresses"), "\(unixLoop)")
            await direct.close()
            await failoverBackup.close()
        }
    }

    /// The peer of OpenSIPS' event_stream: notifications and reliable-mode requests back to back
    /// on one connection, pipelined; each request answered in order with its id echoed exactly, an
    /// error (with the same id) for one whose event nobody published.
    @Test func aStreamIngressRaisesNotificationsAndAnswersRequestsInOrder() async throws {
        try await withTeardown { teardown in
            let receiver = try DatagramReceiver()
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_MY_EVENT2]
                    ingress: ["tcp:127.0.0.1:0"]
                    subscriptions:
                      - { event: E_MY_EVENT2, socket: "\(receiver.socket)" }

                    """)
            teardown.add { await daemon.stop() }
            let port = try daemon.ingressPort("tcp")
            let connection = try RawConnection(port: port)
            defer { connection.close() }
            let notification = try Self.recorded("transport_tcp_noreply.json")
            // As OpenSIPS writes reliable-mode requests: the id first.
            let requests = [
                #"{"id":1,"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"n":1}}"#,
                #"{"id":2,"jsonrpc":"2.0","method":"E_NOBODY","params":{"n":2}}"#,
                #"{"id":"third","jsonrpc":"2.0","method":"E_MY_EVENT2","params":[3]}"#,
            ]
            try connection.send(notification + requests.joined())
            var replies = ""
            _ = await eventually {
                replies += connection.read(timeoutMilliseconds: 100)
                return replies.components(separatedBy: "\"jsonrpc\"").count - 1 >= 3
            }
            #expect(
                replies
                    == #"{"jsonrpc":"2.0","result":"OK","id":1}"#
                    + #"{"jsonrpc":"2.0","error":{"code":404,"message":"Event not published","data":"unknown_event"},"id":2}"#
                    + #"{"jsonrpc":"2.0","result":"OK","id":"third"}"#, "\(replies)")
            #expect(
                await receiver.waitFor(count: 3) == [
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"name":"alice","count":7}}"#,
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":{"n":1}}"#,
                    #"{"jsonrpc":"2.0","method":"E_MY_EVENT2","params":[3]}"#,
                ])
            let after = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":2}"#)
            #expect(after.contains(#""received":3,"rejected":{"unknown_event":1},"connections":1"#), "\(after)")
            await receiver.close()
        }
    }

    @Test func anIngressOffLoopbackNeedsAllowedSources() async throws {
        try await withTeardown { teardown in
            let evi = try EviProcess(
                ["serve"],
                config: "mi: { http: 127.0.0.1:0, datagram: off }\nstate: memory\ningress: [\"udp:0.0.0.0:0\"]\n"
            )
            teardown.add { await evi.stop() }
            #expect(await evi.waitForExit() == 2)
            #expect(
                evi.standardError.contains("ingress[0]: listening on 0.0.0.0:0, not loopback, requires allowed_sources")
            )
        }
    }
}
