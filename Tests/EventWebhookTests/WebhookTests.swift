import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventNIOSupport
import EventVirtual
import Foundation
import NIOSSL
import Testing

@testable import EventWebhook

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Tests/Fixtures/webhook/receiver.py with the tests' venv (standardwebhooks from PyPI): an HTTP/1.1
/// receiver, over TLS with a test CA's certificate, that checks every signature with the Standard
/// Webhooks library and answers as told.
final class Receiver: @unchecked Sendable {
    let directory = TemporaryDirectory(prefix: "evi-webhook")
    let child: ChildProcess
    let port: Int
    let isTLS: Bool

    init(certificates: TestCertificates? = nil, secret: String? = nil) async throws {
        var arguments = [repositoryRoot.appendingPathComponent("Tests/Fixtures/webhook/receiver.py").path]
        if let certificates { arguments += ["--cert", certificates.serverCert, "--key", certificates.serverKey] }
        if let secret { arguments += ["--secret", secret] }
        isTLS = certificates != nil
        let started = try ChildProcess(
            executable: repositoryRoot.appendingPathComponent(".venv/bin/python3").path, arguments: arguments,
            directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
        guard await eventually(timeout: .seconds(20), { started.output.hasPrefix("port ") }),
            let port = Int(started.output.dropFirst(5).prefix { $0.isNumber })
        else {
            started.signal(SIGKILL)
            throw ReceiverError("the webhook receiver did not start: \(started.errors)")
        }
        child = started
        self.port = port
    }

    var url: String { "\(isTLS ? "https" : "http")://127.0.0.1:\(port)/hooks/evi" }

    struct Record: Decodable {
        var path: String
        var body: String
        var verdict: String?
        var id: String?
        var contentType: String?
        var answer: String

        enum CodingKeys: String, CodingKey {
            case path, body, verdict, id, answer
            case contentType = "content_type"
        }
    }

    var records: [Record] {
        child.output.split(separator: "\n").dropFirst().compactMap {
            try? JSONDecoder().decode(Record.self, from: Data($0.utf8))
        }
    }

    func waitFor(count: Int, timeout: Duration = .seconds(15)) async -> [Record] {
        _ = await eventually(timeout: timeout) { self.records.count >= count }
        return records
    }

    /// How the following webhooks are answered: "200", "500", "410" or "silent".
    func answer(_ mode: String, ca: String? = nil) async throws {
        var arguments = ["-s", "-X", "POST", "--data", mode, "\(isTLS ? "https" : "http")://127.0.0.1:\(port)/control"]
        if let ca { arguments += ["--cacert", ca] }
        let curl = try ChildProcess(
            executable: "/usr/bin/curl", arguments: arguments, directory: directory.path,
            outputPath: directory.file("curl.out"), errorPath: directory.file("curl.err"))
        guard await curl.waitForExit(timeout: .seconds(10)) == 0 else { throw ReceiverError("curl: \(curl.errors)") }
    }

    func stop() async {
        child.signal(SIGKILL)
        _ = await child.waitForExit(timeout: .seconds(5))
        directory.remove()
    }
}

@Suite(.serialized) struct WebhookTests {
    static let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    func makeHub(
        secret: String? = WebhookTests.secret, caFile: String? = nil, secrets: WebhookSecrets = WebhookSecrets(),
        failoverTimeout: Double = 30, timeout: Duration = .seconds(5)
    ) throws -> EventHub {
        var options = WebhookOptions()
        options.secret = try secret.map { text throws(ConfigurationError) in try WebhookSecret(text, key: "secret") }
        options.timeout = timeout
        var tls = TLSOptions()
        tls.caFile = caFile
        let profile = try ReloadableTLS(options: tls, key: "modules.event_webhook")
        let hub = EventHub(transports: [
            WebhookTransport(isTLS: false, options: options, secrets: secrets),
            WebhookTransport(isTLS: true, options: options, secrets: secrets, tls: profile),
            UDPTransport(), VirtualTransport(failoverTimeout: failoverTimeout),
        ])
        try hub.publish("E_HOOK")
        return hub
    }

    @Test func signedWebhooksOverTLSVerifyWithTheStandardWebhooksLibrary() async throws {
        try await withTeardown { teardown in
            let certificates = try await TestCertificates()
            defer { certificates.directory.remove() }
            let receiver = try await Receiver(certificates: certificates, secret: Self.secret)
            teardown.add { await receiver.stop() }
            let hub = try makeHub(caFile: certificates.ca)
            try await hub.subscribe(event: "E_HOOK", socket: receiver.url)
            var expected: [String] = []
            for number in 0..<40 {
                let params: EventParams = ["n": .int(Int64(number)), "note": .string("naïve \"quoted\" \u{1F4DE}")]
                try hub.raise("E_HOOK", params)
                expected.append(
                    String(decoding: JSONRPCNotification.encode(method: "E_HOOK", params: params), as: UTF8.self))
            }
            let records = await receiver.waitFor(count: 40)
            #expect(records.map(\.body) == expected)
            #expect(records.allSatisfy { $0.verdict == "ok" }, "\(records.compactMap(\.verdict).filter { $0 != "ok" })")
            #expect(records.allSatisfy { $0.path == "/hooks/evi" && $0.contentType == "application/json" })
            #expect(Set(records.compactMap(\.id)).count == 40)
            #expect(
                await eventually { hub.statistics.snapshot().transports["https"]?.delivered == 40 },
                "\(String(describing: hub.statistics.snapshot().transports["https"]))")
            #expect(try hub.subscribers(of: "E_HOOK").first?.socket == receiver.url)
            await hub.shutdown()
        }
    }

    @Test func aTamperedSecretFailsTheReceiversVerification() async throws {
        try await withTeardown { teardown in
            let receiver = try await Receiver(secret: Self.secret)
            teardown.add { await receiver.stop() }
            let hub = try makeHub(secret: "whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            try await hub.subscribe(event: "E_HOOK", socket: receiver.url)
            try hub.raise("E_HOOK", ["n": 1])
            let records = await receiver.waitFor(count: 1)
            #expect(records.first?.verdict?.contains("WebhookVerificationError") == true, "\(records.map(\.verdict))")
            await hub.shutdown()
        }
    }

    @Test func failoverMovesFromAFailingWebhookToUDPAndBack() async throws {
        try await withTeardown { teardown in
            let receiver = try await Receiver(secret: Self.secret)
            teardown.add { await receiver.stop() }
            let backup = try DatagramReceiver()
            let hub = try makeHub(failoverTimeout: 1)
            try await hub.subscribe(event: "E_HOOK", socket: "virtual:FAILOVER \(receiver.url) \(backup.socket)")
            try await receiver.answer("500")
            try hub.raise("E_HOOK", ["n": 1])
            #expect(await backup.waitFor(count: 1, timeout: .seconds(10)).count == 1)
            let member = try hub.subscribers(of: "E_HOOK").first?.members?.first
            #expect(member?.state == .failed, "\(String(describing: member))")
            try await receiver.answer("200")
            try await Task.sleep(for: .milliseconds(1200))
            try hub.raise("E_HOOK", ["n": 2])
            let records = await receiver.waitFor(count: 2)
            #expect(records.last?.body.contains("\"n\":2") == true)
            #expect(records.last?.answer == "200")
            #expect(try hub.subscribers(of: "E_HOOK").first?.members?.first?.state == .up)
            await backup.close()
            await hub.shutdown()
        }
    }

    @Test func gone410RemovesAPlainSubscriptionAndMarksAVirtualMember() async throws {
        try await withTeardown { teardown in
            let receiver = try await Receiver(secret: Self.secret)
            teardown.add { await receiver.stop() }
            let backup = try DatagramReceiver()
            let hub = try makeHub()
            try hub.publish("E_OTHER")
            try await hub.subscribe(event: "E_HOOK", socket: receiver.url)
            try await hub.subscribe(event: "E_OTHER", socket: "virtual:FAILOVER \(receiver.url) \(backup.socket)")
            try await receiver.answer("410")
            try hub.raise("E_HOOK", ["n": 1])
            #expect(await eventually(timeout: .seconds(10)) { (try? hub.subscribers(of: "E_HOOK").isEmpty) == true })
            try hub.raise("E_OTHER", ["n": 2])
            #expect(await backup.waitFor(count: 1, timeout: .seconds(10)).count == 1)
            #expect(try hub.subscribers(of: "E_OTHER").first?.members?.first?.state == .failed)
            await backup.close()
            await hub.shutdown()
        }
    }

    @Test func aSilentReceiverTimesOutAndAnUntrustedOneFailsOnTLS() async throws {
        try await withTeardown { teardown in
            let receiver = try await Receiver()
            teardown.add { await receiver.stop() }
            let hub = try makeHub(timeout: .milliseconds(500))
            try await receiver.answer("silent")
            let event = try hub.publish("E_HOOK")
            let socket = try #require(try await hub.registry.parseSocket(receiver.url) as? any DeliverySocket)
            let deliverer = socket.makeDeliverer(
                context: DelivererContext(event: event, socket: receiver.url, logger: hub.logger, clock: hub.clock))
            let outcome = await deliverer.deliver(RaisedEvent(event: event, params: ["n": .int(1)]))
            #expect(outcome == .failed(DeliveryFailure(.subscriberFailed, "reply timeout")))
            await deliverer.close()

            let certificates = try await TestCertificates()
            defer { certificates.directory.remove() }
            let secure = try await Receiver(certificates: certificates)
            teardown.add { await secure.stop() }
            let untrusting = try makeHub(caFile: certificates.otherCA)
            let tlsSocket = try #require(try await untrusting.registry.parseSocket(secure.url) as? any DeliverySocket)
            let tlsDeliverer = tlsSocket.makeDeliverer(
                context: DelivererContext(event: event, socket: secure.url, logger: hub.logger, clock: hub.clock))
            guard
                case .failed(let failure) = await tlsDeliverer.deliver(
                    RaisedEvent(event: event, params: ["n": .int(2)]))
            else {
                Issue.record("delivered to an untrusted receiver")
                return
            }
            #expect(failure.reason.contains("TLS"), "\(failure.reason)")
            await tlsDeliverer.close()
        }
    }

    @Test func aSubscriptionsOwnSecretOverridesTheModules() async throws {
        try await withTeardown { teardown in
            let own = "whsec_" + "c2Vjb25kIHNlY3JldCBmb3IgdGhpcyBvbmU="
            let receiver = try await Receiver(secret: own)
            teardown.add { await receiver.stop() }
            let secrets = WebhookSecrets()
            try secrets.assign(
                try WebhookSecret(own, key: "s"), socket: "virtual:PARALLEL \(receiver.url) udp:127.0.0.1:9")
            let hub = try makeHub(secrets: secrets)
            try await hub.subscribe(event: "E_HOOK", socket: receiver.url)
            try hub.raise("E_HOOK", ["n": 1])
            #expect(await receiver.waitFor(count: 1).first?.verdict == "ok")
            #expect(throws: ConfigurationError.self) {
                try secrets.assign(try WebhookSecret(Self.secret, key: "s"), socket: receiver.url)
            }
            #expect(throws: ConfigurationError.self) {
                try secrets.assign(try WebhookSecret(Self.secret, key: "s"), socket: "udp:127.0.0.1:9")
            }
            await hub.shutdown()
        }
    }

    @Test func badSocketsAndSecretsAreRefused() async throws {
        let hub = try makeHub()
        let cases: [(String, String)] = [
            ("http://", "http URL needs a host"),
            ("https://user:pw@127.0.0.1/x", "user information"),
            ("http://127.0.0.1:0/x", "bad port"),
            ("http://127.0.0.1/a b", "spaces"),
            ("http://127.0.0.1/x#frag", "fragment"),
        ]
        for (socket, message) in cases {
            do {
                try await hub.subscribe(event: "E_HOOK", socket: socket)
                Issue.record("\(socket) was accepted")
            } catch {
                #expect("\(error)".contains(message), "\(socket): \(error)")
            }
        }
        for bad in ["secret", "whsec_", "whsec_!!!!", "whsec_c2hvcnQ="] {
            #expect(throws: ConfigurationError.self) { try WebhookSecret(bad, key: "k") }
        }
        #expect("\(try WebhookSecret(Self.secret, key: "k"))" == "whsec_***")
        #expect(Base64.decode(Base64.encode(Array(0...255))) == Array(0...255))
        #expect(Base64.encode(Array("any carnal pleas".utf8)) == "YW55IGNhcm5hbCBwbGVhcw==")
    }
}
