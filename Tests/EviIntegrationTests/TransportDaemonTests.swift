import EventInterfaceTestKit
import Foundation
import Testing

/// tcp and xmlrpc through the daemon, with their options from the configuration file.
@Suite(.serialized) struct TransportDaemonTests {
    /// A webhook subscription of the configuration file with its own secret: the receiver
    /// (standardwebhooks, PyPI) verifies it; the secret is in no MI reply.
    @Test func aConfiguredWebhookSecretSignsAndStaysSecret() async throws {
        try await withTeardown { teardown in
            let secret = "whsec_c2Vjb25kIHNlY3JldCBmb3IgdGhpcyBvbmU="
            let directory = TemporaryDirectory(prefix: "evi-hook")
            teardown.add { directory.remove() }
            let receiver = try ChildProcess(
                executable: repositoryRoot.appendingPathComponent(".venv/bin/python3").path,
                arguments: [
                    repositoryRoot.appendingPathComponent("Tests/Fixtures/webhook/receiver.py").path, "--secret",
                    secret,
                ], directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
            defer { receiver.signal(SIGKILL) }
            guard await eventually(timeout: .seconds(20), { receiver.output.hasPrefix("port ") }),
                let port = Int(receiver.output.dropFirst(5).prefix { $0.isNumber })
            else { throw DaemonError(message: "receiver did not start: \(receiver.errors)") }
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_X]
                    modules:
                      event_webhook: { secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
                    subscriptions:
                      - { event: E_X, socket: "http://127.0.0.1:\(port)/in", secret: "\(secret)" }

                    """)
            teardown.add { await daemon.stop() }
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"a":1}],"id":1}"#)
            #expect(
                await eventually(timeout: .seconds(10)) { receiver.output.contains(#""verdict": "ok""#) },
                "\(receiver.output)")
            let listing = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#)
            #expect(listing.contains("http://127.0.0.1:\(port)/in"), "\(listing)")
            #expect(!listing.contains("whsec_") && !daemon.process.standardError.contains("whsec_"))
        }
    }

    @Test func tcpOptionsFromTheConfigurationFile() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(
                extra:
                    "events: [E_X]\nmodules:\n  event_stream: { reliable_mode: true, timeout: 500, event_param: ev }\n")
            teardown.add { await daemon.stop() }
            let server = try JSONRPCTestServer(mode: .replyOK)
            defer { server.close() }
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","\#(server.socket)/notify"],"id":1}"#)
            _ = try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:raise","params":["E_X",{"a":1}],"id":1}"#)
            #expect(
                await server.waitFor(count: 1) == [
                    #"{"id":1,"jsonrpc":"2.0","method":"notify","params":{"ev":"E_X","a":1}}"#
                ])
            let metrics = {
                (try? RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/metrics").bodyText) ?? ""
            }
            #expect(
                await eventually { metrics().contains(#"evi_deliveries_total{transport="tcp",result="success"} 1"#) })
        }
    }

    @Test func xmlrpcSocketsAreAcceptedOverMI() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(
                extra: "events: [E_X]\nmodules:\n  event_xmlrpc: { use_struct_param: true }\n")
            teardown.add { await daemon.stop() }
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","xmlrpc:127.0.0.1:9201:m"],"id":1}"#)
                    == #"{"jsonrpc":"2.0","result":"OK","id":1}"#)
            #expect(
                try daemon.mi(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#).contains(
                    #""socket":"xmlrpc:127.0.0.1:9201:m""#))
        }
    }
}
