import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// The cluster's state store over TLS, against a PostgreSQL of the test's own started by
/// `scripts/postgres.sh start-tls` (a test CA made by openssl, `ssl = on`, `hostssl` lines only),
/// and what a peer on the path sees: a relay between evi and PostgreSQL records every byte.
@Suite(.serialized) struct ClusterTLSTests {
    /// A TLS-only PostgreSQL in a directory of its own: its URL (without a query) and directory.
    static func tlsPostgres(_ teardown: Teardown) async throws -> (url: String, directory: String) {
        let directory = TemporaryDirectory(prefix: "evi-pg-tls")
        let script = repositoryRoot.appendingPathComponent("scripts/postgres.sh").path
        let started = try await run("/bin/bash", [script, "start-tls", directory.path], timeout: .seconds(90))
        teardown.add {
            _ = try? await run("/bin/bash", [script, "stop", directory.path], timeout: .seconds(60))
            directory.remove()
        }
        guard started.status == 0 else { throw DaemonError(message: "postgres.sh start-tls: \(started.errors)") }
        return (started.output.trimmingCharacters(in: .whitespacesAndNewlines), directory.path)
    }

    /// `url` with its port replaced (to go through a relay) and `query` appended.
    static func url(_ url: String, port: Int? = nil, query: String) -> String {
        var text = url
        if let port, let range = text.range(of: #":[0-9]+/"#, options: .regularExpression) {
            text.replaceSubrange(range, with: ":\(port)/")
        }
        return text + "?" + query
    }

    static func port(of url: String) -> Int {
        guard let range = url.range(of: #":[0-9]+/"#, options: .regularExpression) else { return 0 }
        return Int(url[range].dropFirst().dropLast()) ?? 0
    }

    static func node(_ name: String, url: String, cluster: String = "") async throws -> Daemon {
        try await Daemon.start(
            extra: "state: \"\(url)\"\ncluster: { node: \(name)\(cluster) }\nevents: [E_CL]\n", state: "",
            logLevel: "info")
    }

    static func ready(_ daemon: Daemon) -> String {
        (try? RawHTTP.request(port: daemon.httpPort, method: "GET", path: "/ready").bodyText) ?? ""
    }

    /// `verify-full` with the server's CA: connected, encrypted (evi:nodes and /ready say so),
    /// and a socket's password crosses the path only inside TLS.
    @Test func verifyFullWithTheTestCAConnectsEncryptedAndCarriesSecretsUnseen() async throws {
        try await withTeardown { teardown in
            let (base, directory) = try await Self.tlsPostgres(teardown)
            let relay = try RecordingRelay(to: Self.port(of: base))
            teardown.add { relay.close() }
            let url = Self.url(base, port: relay.port, query: "sslmode=verify-full&sslrootcert=\(directory)/ca.pem")
            let a = try await Self.node("A", url: url)
            teardown.add { await a.stop() }
            #expect(await eventually(timeout: .seconds(10)) { Self.ready(a).contains(#""state_store":"up""#) })
            #expect(Self.ready(a).contains(#""state_store_tls":true"#), "\(Self.ready(a))")
            let nodes = try ClusterTests.call(a, "evi:nodes")
            #expect(nodes.contains(#""name":"A""#) && nodes.contains(#""tls":true"#), "\(nodes)")
            let secret = "rabbitmq:ops:Secret-Pass-4711@127.0.0.1:5999/pike"
            let reply = try ClusterTests.call(a, "evi:subscribe", #"["E_CL","\#(secret)"]"#)
            #expect(reply.contains(#""result":"OK""#), "\(reply)")
            #expect(!relay.captured.contains("Secret-Pass-4711"), "the password crossed in clear")
            #expect(!relay.captured.contains("evi_subscriptions"), "SQL crossed in clear")
            #expect(relay.capturedBytes.count > 1000, "nothing went through the relay")
        }
    }

    /// `require` encrypts without checking the certificate; another CA is refused with the
    /// reason; `disable` against `hostssl` only is refused by PostgreSQL, in its own words.
    @Test func requireEncryptsAnotherCAIsRefusedAndPlaintextIsRefusedByTheServer() async throws {
        try await withTeardown { teardown in
            let (base, _) = try await Self.tlsPostgres(teardown)
            let required = try await Self.node("R", url: Self.url(base, query: "sslmode=require"))
            teardown.add { await required.stop() }
            #expect(
                await eventually(timeout: .seconds(10)) { Self.ready(required).contains(#""state_store_tls":true"#) })

            let certificates = try await TestCertificates()
            teardown.add { certificates.directory.remove() }
            let wrongCA = try await Self.node(
                "W", url: Self.url(base, query: "sslmode=verify-full&sslrootcert=\(certificates.otherCA)"))
            teardown.add { await wrongCA.stop() }
            #expect(
                await eventually(timeout: .seconds(10)) {
                    wrongCA.process.standardError.contains("state store unreachable")
                })
            #expect(
                wrongCA.process.standardError.contains("CERTIFICATE_VERIFY_FAILED"),
                "\(wrongCA.process.standardError)")
            #expect(Self.ready(wrongCA).contains(#""state_store":"unreachable""#))

            let plain = try await Self.node("P", url: Self.url(base, query: "sslmode=disable"))
            teardown.add { await plain.stop() }
            #expect(
                await eventually(timeout: .seconds(10)) {
                    plain.process.standardError.contains("no pg_hba.conf entry")
                })
            #expect(plain.process.standardError.contains("no encryption"), "\(plain.process.standardError)")
        }
    }
}
