import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventNIOSupport
import EventVirtual
import Foundation
import NIOSSL
import Testing

@testable import EventSQS

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Runs Tests/Fixtures/sqs/sqs_tool.py (boto3, botocore) with the tests' venv; `input` is its stdin.
func sqsTool(_ arguments: [String], input: String? = nil, timeout: Duration = .seconds(120)) async throws -> String {
    let directory = TemporaryDirectory(prefix: "evi-sqs-tool")
    defer { directory.remove() }
    let python = repositoryRoot.appendingPathComponent(".venv/bin/python3").path
    let script = repositoryRoot.appendingPathComponent("Tests/Fixtures/sqs/sqs_tool.py").path
    var shell = "exec \"$0\" \"$@\""
    if let input {
        try input.write(toFile: directory.file("in"), atomically: true, encoding: .utf8)
        shell += " < \(directory.file("in"))"
    }
    let child = try ChildProcess(
        executable: "/bin/sh", arguments: ["-c", shell, python, script] + arguments, directory: directory.path,
        outputPath: directory.file("out"), errorPath: directory.file("err"))
    guard await child.waitForExit(timeout: timeout) == 0 else {
        child.signal(SIGKILL)
        throw ReceiverError("sqs_tool \(arguments.first ?? "") failed: \(child.errors.suffix(2000))")
    }
    return child.output
}

/// moto_server from the tests' venv, on a free loopback port of its own: with signature checking
/// on (`INITIAL_NO_AUTH_ACTION_COUNT`: the first calls make an IAM user and its key, everything
/// after is checked), or off for a server that is stopped and started again (its state, users
/// included, is in memory only).
final class Moto: @unchecked Sendable {
    let directory = TemporaryDirectory(prefix: "evi-moto")
    let port: Int
    let certificates: TestCertificates?
    let checksSignatures: Bool
    private(set) var child: ChildProcess?
    private(set) var key = "testing"
    private(set) var secret = "testing"
    private(set) var urls: [String: String] = [:]

    var endpoint: String { "\(certificates == nil ? "http" : "https")://127.0.0.1:\(port)" }
    var caArgument: [String] { certificates.map { ["--ca=\($0.ca)"] } ?? [] }

    init(queues: [String], checksSignatures: Bool = true, certificates: TestCertificates? = nil) async throws {
        port = try freeTCPPort()
        self.certificates = certificates
        self.checksSignatures = checksSignatures
        try await start(queues: queues)
    }

    func start(queues: [String]) async throws {
        let binary = repositoryRoot.appendingPathComponent(".venv/bin/moto_server").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw ReceiverError("\(binary) is missing: scripts/test.sh installs moto[server] in .venv")
        }
        var arguments = [binary, "-H", "127.0.0.1", "-p", String(port)]
        if let certificates { arguments += ["-c", certificates.serverCert, "-k", certificates.serverKey] }
        if checksSignatures { arguments = ["INITIAL_NO_AUTH_ACTION_COUNT=3"] + arguments }
        let started = try ChildProcess(
            executable: "/usr/bin/env", arguments: arguments, directory: directory.path,
            outputPath: directory.file("out"), errorPath: directory.file("err"))
        child = started
        let port = self.port
        guard
            await eventually(
                timeout: .seconds(30),
                {
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                    defer { close(fd) }
                    return withLoopbackAddress(port: port) { connect(fd, $0, $1) } == 0
                })
        else { throw ReceiverError("moto_server did not start: \(started.errors.suffix(2000))") }
        if checksSignatures {
            let output = try await sqsTool(["setup"] + caArgument + [endpoint] + queues)
            let made = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
            key = made["key"] as? String ?? ""
            secret = made["secret"] as? String ?? ""
            urls = made["urls"] as? [String: String] ?? [:]
        } else {
            let output = try await sqsTool(["setup-open"] + caArgument + [endpoint] + queues)
            let made = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
            urls = made["urls"] as? [String: String] ?? [:]
        }
    }

    /// What boto3 receives from the queue: bodies, message groups and deduplication ids.
    func receive(_ queue: String, count: Int) async throws -> [(body: String, group: String?, dedup: String?)] {
        let output = try await sqsTool(
            ["receive"] + caArgument + [endpoint, key, secret, urls[queue] ?? "", String(count)])
        let items = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] ?? []
        return items.map { ($0["body"] as? String ?? "", $0["group"] as? String, $0["dedup"] as? String) }
    }

    var environment: [String: String] { ["AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret] }

    func stop() async {
        guard let child else { return }
        child.signal(SIGTERM)
        if await child.waitForExit(timeout: .seconds(10)) == nil {
            child.signal(SIGKILL)
            _ = await child.waitForExit(timeout: .seconds(5))
        }
        self.child = nil
    }

    func remove() async {
        await stop()
        directory.remove()
    }
}

@Suite(.serialized) struct SQSTests {
    func makeHub(
        environment: [String: String], region: String? = "us-east-1", caFile: String? = nil,
        failoverTimeout: Double = 30, timeout: Duration = .seconds(5)
    ) throws -> EventHub {
        var options = SQSOptions()
        options.region = region
        options.caFile = caFile
        options.timeout = timeout
        var tls = TLSOptions()
        tls.caFile = caFile
        let hub = EventHub(transports: [
            SQSTransport(
                options: options, tls: try ReloadableTLS(options: tls, key: "modules.event_sqs"),
                environment: environment),
            UDPTransport(), VirtualTransport(failoverTimeout: failoverTimeout),
        ])
        try hub.publish("E_CALL")
        return hub
    }

    func deliverer(_ hub: EventHub, _ socket: String) async throws -> any EventDeliverer {
        let event = try hub.publish("E_CALL")
        let parsed = try #require(try await hub.registry.parseSocket(socket) as? any DeliverySocket)
        return parsed.makeDeliverer(
            context: DelivererContext(event: event, socket: socket, logger: hub.logger, clock: hub.clock))
    }

    @Test func eventsArriveByteForByteAndAFIFOQueueKeepsTheirOrder() async throws {
        try await withTeardown { teardown in
            let moto = try await Moto(queues: ["calls", "calls.fifo"])
            teardown.add { await moto.remove() }
            let hub = try makeHub(environment: moto.environment)
            let plain = try #require(moto.urls["calls"])
            let fifo = try #require(moto.urls["calls.fifo"])
            try await hub.subscribe(event: "E_CALL", socket: "sqs:\(plain)")
            try await hub.subscribe(event: "E_CALL", socket: "sqs:\(fifo)?group_param=callid")
            var expected: [String] = []
            for number in 0..<25 {
                let params: EventParams = [
                    "callid": .string("c\(number % 3)"), "n": .int(Int64(number)),
                    "note": .string("naïve \"quoted\" \\ \u{1F4DE}"),
                ]
                try hub.raise("E_CALL", params)
                expected.append(JSONRPCNotification.encode(method: "E_CALL", params: params).utf8String)
            }
            #expect(
                await eventually(timeout: .seconds(30)) {
                    hub.statistics.snapshot().transports["sqs"]?.delivered == 50
                },
                "\(hub.statistics.snapshot().transports["sqs"].map { "\($0)" } ?? "nothing")")
            let received = try await moto.receive("calls", count: 25)
            #expect(received.map(\.body).sorted() == expected.sorted())
            let ordered = try await moto.receive("calls.fifo", count: 25)
            // One message group per callid: within each, the raise order.
            for group in ["c0", "c1", "c2"] {
                #expect(
                    ordered.filter { $0.group == group }.map(\.body)
                        == expected.filter { $0.contains("\"callid\":\"\(group)\"") }, "\(group)")
            }
            #expect(Set(ordered.compactMap(\.dedup)).count == 25, "a deduplication id per event")
            await hub.shutdown()
        }
    }

    @Test func aWrongSecretIsA403ThatFailsTheDeliveryAndMarksTheMember() async throws {
        try await withTeardown { teardown in
            let moto = try await Moto(queues: ["calls"])
            teardown.add { await moto.remove() }
            let url = try #require(moto.urls["calls"])
            var environment = moto.environment
            environment["AWS_SECRET_ACCESS_KEY"] = "not-" + moto.secret
            let hub = try makeHub(environment: environment)
            let deliverer = try await deliverer(hub, "sqs:\(url)")
            let outcome = await deliverer.deliver(
                RaisedEvent(event: try hub.publish("E_CALL"), params: ["n": .int(1)]))
            guard case .failed(let failure) = outcome else {
                Issue.record("delivered with a wrong secret")
                return
            }
            #expect(failure.reason.hasPrefix("HTTP 403"), "\(failure.reason)")
            #expect(!failure.reason.contains(moto.secret))
            await deliverer.close()

            let backup = try DatagramReceiver()
            try await hub.subscribe(event: "E_CALL", socket: "virtual:FAILOVER sqs:\(url) \(backup.socket)")
            try hub.raise("E_CALL", ["n": 2])
            #expect(await backup.waitFor(count: 1, timeout: .seconds(10)).count == 1)
            let member = try hub.subscribers(of: "E_CALL").first?.members?.first
            #expect(member?.state == .failed, "\(String(describing: member))")
            #expect(try await moto.receive("calls", count: 1).isEmpty)
            await backup.close()
            await hub.shutdown()
        }
    }

    @Test func failoverGoesToUDPWhileSQSIsDownAndBackOnceItReturns() async throws {
        try await withTeardown { teardown in
            let moto = try await Moto(queues: ["calls"], checksSignatures: false)
            teardown.add { await moto.remove() }
            let url = try #require(moto.urls["calls"])
            let hub = try makeHub(environment: moto.environment, failoverTimeout: 1, timeout: .seconds(2))
            let backup = try DatagramReceiver()
            try await hub.subscribe(event: "E_CALL", socket: "virtual:FAILOVER sqs:\(url) \(backup.socket)")
            try hub.raise("E_CALL", ["n": 1])
            #expect(
                await eventually(timeout: .seconds(10)) { hub.statistics.snapshot().transports["sqs"]?.delivered == 1 })
            await moto.stop()
            for number in 2...4 { try hub.raise("E_CALL", ["n": .int(Int64(number))]) }
            #expect(await backup.waitFor(count: 3, timeout: .seconds(15)).count == 3)
            try await moto.start(queues: ["calls"])
            // Past the failed mark (1 s) and the reconnection backoff, SQS takes events again.
            var number = 5
            let back = await eventually(timeout: .seconds(30)) {
                try? hub.raise("E_CALL", ["n": .int(Int64(number))])
                number += 1
                try? await Task.sleep(for: .milliseconds(500))
                return (hub.statistics.snapshot().transports["sqs"]?.delivered ?? 0) >= 2
            }
            #expect(back)
            let received = try await moto.receive("calls", count: 1)
            #expect(received.first?.body.contains("\"method\":\"E_CALL\"") == true)
            await backup.close()
            await hub.shutdown()
        }
    }

    /// For the same inputs, evi's canonical request, string to sign and signature equal those
    /// botocore's SigV4Auth computes (run by the test, not pasted).
    @Test(arguments: [
        ("", "/", "", "AmazonSQS.SendMessageBatch"),
        ("FwoGZXIvYXdzEJr//////////session+token=", "/", "", "AmazonSQS.SendMessage"),
        ("", "/123456789012/my%20queue.fifo", "b=2&a=1&a=0&c=x%20y", "AmazonSQS.ReceiveMessage"),
    ])
    func signaturesEqualBotocores(token: String, path: String, query: String, target: String) async throws {
        let credentials = AWSCredentials(
            accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: token.isEmpty ? nil : token)
        let signer = SigV4(credentials: credentials, region: "eu-west-1", service: "sqs")
        let body = #"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/events","Entries":[]}"#
        let headers: [(name: String, value: String)] = [
            ("Content-Type", "application/x-amz-json-1.0"), ("X-Amz-Target", target),
        ]
        let stamp = SigV4.timestamp(1_795_000_000)
        let signed = signer.sign(
            method: "POST", authority: "sqs.eu-west-1.amazonaws.com:8443",
            path: path, query: query, headers: headers, body: Array(body.utf8), amzDate: stamp)
        var spec: [String: Any] = [
            "method": "POST",
            "url": "https://sqs.eu-west-1.amazonaws.com:8443\(path)" + (query.isEmpty ? "" : "?" + query),
            "headers": Dictionary(uniqueKeysWithValues: headers.map { ($0.name, $0.value) }), "body": body,
            "key": credentials.accessKeyID, "secret": credentials.secretAccessKey, "region": "eu-west-1",
            "service": "sqs", "timestamp": stamp,
        ]
        if let token = credentials.sessionToken { spec["token"] = token }
        let input = String(decoding: try JSONSerialization.data(withJSONObject: spec), as: UTF8.self)
        let output = try await sqsTool(["sigv4"], input: input)
        let botocore = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String] ?? [:]
        #expect(signed.canonicalRequest == botocore["canonical"])
        #expect(signed.stringToSign == botocore["string_to_sign"])
        #expect(signed.signature == botocore["signature"])
        #expect(signed.headers.first { $0.name == "Authorization" }?.value == botocore["authorization"])
    }

    @Test func badSocketsAreRefusedAtSubscribeTime() async throws {
        let hub = try makeHub(environment: ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"], region: nil)
        let cases: [(String, String)] = [
            ("sqs:http://127.0.0.1:9324", "ending in /ACCOUNT/QUEUE"),
            ("sqs:http://127.0.0.1:9324/123456789012", "ending in /ACCOUNT/QUEUE"),
            ("sqs:http://127.0.0.1:9324/123456789012/q", "no region for 127.0.0.1"),
            ("sqs:ftp://127.0.0.1/123456789012/q", "expected an http:// or https:// URL"),
            ("sqs:https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo", "a FIFO queue needs a message group"),
            ("sqs:https://sqs.eu-west-1.amazonaws.com/1/q?colour=red", "unknown sqs option 'colour'"),
            ("sqs:https://user:pw@sqs.eu-west-1.amazonaws.com/1/q", "user information"),
            ("sqs:http://127.0.0.1:99999/1/q", "bad port"),
        ]
        for (socket, message) in cases {
            do {
                try await hub.subscribe(event: "E_CALL", socket: socket)
                Issue.record("\(socket) was accepted")
            } catch {
                #expect("\(error)".contains(message), "\(socket): \(error)")
            }
        }
        let anonymous = try makeHub(environment: [:])
        do {
            try await anonymous.subscribe(event: "E_CALL", socket: "sqs:http://127.0.0.1:9324/1/q")
            Issue.record("accepted without credentials")
        } catch {
            #expect("\(error)".contains("no AWS credentials"), "\(error)")
        }
        #expect(try hub.subscribers(of: "E_CALL").isEmpty)
    }

    @Test func theRegionComesFromTheHostThenTheModuleThenTheEnvironment() async throws {
        // Names in AWS's two forms (parsed only: nothing here resolves them).
        #expect(try SQSAddress.parse("https://sqs.eu-west-3.amazonaws.com/123456789012/q").regionInHost == "eu-west-3")
        #expect(
            try SQSAddress.parse("https://ap-south-1.queue.amazonaws.com/123456789012/q").regionInHost == "ap-south-1")
        #expect(try SQSAddress.parse("https://sqs.cn-north-1.amazonaws.com.cn/1/q").regionInHost == "cn-north-1")
        #expect(try SQSAddress.parse("http://127.0.0.1:9324/123456789012/q").regionInHost == nil)
        let keys = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"]
        let byModule = try await makeHub(
            environment: keys.merging(["AWS_REGION": "sa-east-1"]) { $1 }, region: "ca-central-1"
        )
        .registry.parseSocket("sqs:http://127.0.0.1:9324/123456789012/q")
        #expect((byModule as? SQSSocket)?.region == "ca-central-1")
        let byEnvironment = try await makeHub(
            environment: keys.merging(["AWS_REGION": "sa-east-1"]) { $1 }, region: nil
        )
        .registry.parseSocket("sqs:http://127.0.0.1:9324/123456789012/q")
        #expect((byEnvironment as? SQSSocket)?.region == "sa-east-1")
        #expect(byEnvironment.description == "sqs:http://127.0.0.1:9324/123456789012/q")
    }

    /// What each kind of SendMessageBatch reply means for each entry, without a server.
    @Test func repliesMapToPerEventOutcomes() {
        let batch = (0..<3).map { SQSBatch.Entry(index: $0, body: Array("{}".utf8)) }
        func verdicts(_ status: Int, _ body: String) -> [SQSBatch.Verdict] {
            SQSBatch.verdicts(for: batch, reply: .success(HTTPReply(status: status, body: Array(body.utf8))))
        }
        #expect(
            verdicts(
                200,
                #"{"Successful":[{"Id":"0","MessageId":"m"},{"Id":"2","MessageId":"n"}],"Failed":[{"Id":"1","SenderFault":true,"Code":"InvalidMessageContents","Message":"bad"}]}"#
            ) == [.delivered, .failed("SQS InvalidMessageContents: bad"), .delivered])
        #expect(
            verdicts(
                200, #"{"Successful":[{"Id":"0"}],"Failed":[{"Id":"1","SenderFault":false,"Code":"InternalError"}]}"#)
                == [.delivered, .retry("SQS InternalError"), .failed("SQS reply does not mention this entry")])
        #expect(
            verdicts(400, #"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"slow down"}"#)
                == Array(repeating: .retry("HTTP 400 ThrottlingException: slow down"), count: 3))
        #expect(
            verdicts(400, #"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#)
                == Array(repeating: .failed("HTTP 400 QueueDoesNotExist: gone"), count: 3))
        #expect(verdicts(503, "") == Array(repeating: .retry("HTTP 503"), count: 3))
        #expect(
            verdicts(200, "<xml/>") == Array(repeating: .failed("HTTP 200 without a SendMessageBatch result"), count: 3)
        )
        let split = SQSBatch.split(
            (0..<25).map {
                SQSBatch.Entry(index: $0, body: [UInt8](repeating: 65, count: $0 == 12 ? 200_000 : 10_000))
            },
            count: 10, bytes: 256 * 1024)
        // 10 entries at most; the second request stops where the next body would pass 256 KiB.
        #expect(split.map(\.count) == [10, 7, 8])
    }

    @Test func credentialsComeFromTheEnvironmentThenTheFileThenTheModule() throws {
        let directory = TemporaryDirectory(prefix: "evi-aws")
        defer { directory.remove() }
        try """
        [default]
        aws_access_key_id = AKIDFILE
        aws_secret_access_key = file-secret

        [ops]
        aws_access_key_id=AKIDOPS
        aws_secret_access_key=ops-secret
        aws_session_token = ops-token
        """.write(toFile: directory.file("credentials"), atomically: true, encoding: .utf8)
        let module = AWSCredentials(accessKeyID: "AKIDMODULE", secretAccessKey: "module-secret")
        let file = ["AWS_SHARED_CREDENTIALS_FILE": directory.file("credentials")]
        let environment = file.merging(["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env"]) { $1 }
        #expect(
            AWSCredentialChain(environment: environment, configured: module).resolve()?.credentials.accessKeyID
                == "AKIDENV")
        #expect(
            AWSCredentialChain(environment: file, configured: module).resolve()?.credentials.accessKeyID == "AKIDFILE")
        let ops = AWSCredentialChain(environment: file.merging(["AWS_PROFILE": "ops"]) { $1 }, configured: module)
            .resolve()?.credentials
        #expect(ops == AWSCredentials(accessKeyID: "AKIDOPS", secretAccessKey: "ops-secret", sessionToken: "ops-token"))
        #expect(
            AWSCredentialChain(environment: ["HOME": directory.path], configured: module).resolve()?.credentials
                == module)
        #expect(AWSCredentialChain(environment: [:], configured: nil).resolve() == nil)
        #expect(!"\(module)".contains("module-secret"))
    }

    /// moto_server over TLS with a certificate from a test CA: trusted through ca_file it takes
    /// events; with another CA trusted the delivery fails with the TLS reason.
    @Test func httpsQueuesAreTrustedThroughCAFileAndOthersFail() async throws {
        try await withTeardown { teardown in
            let certificates = try await TestCertificates()
            defer { certificates.directory.remove() }
            let moto = try await Moto(queues: ["secure"], certificates: certificates)
            teardown.add { await moto.remove() }
            let url = try #require(moto.urls["secure"])
            #expect(url.hasPrefix("https://"))
            let hub = try makeHub(environment: moto.environment, caFile: certificates.ca)
            try await hub.subscribe(event: "E_CALL", socket: "sqs:\(url)")
            try hub.raise("E_CALL", ["n": 1])
            #expect(
                await eventually(timeout: .seconds(15)) { hub.statistics.snapshot().transports["sqs"]?.delivered == 1 })
            #expect(try await moto.receive("secure", count: 1).count == 1)
            await hub.shutdown()

            let untrusting = try makeHub(environment: moto.environment, caFile: certificates.otherCA)
            let deliverer = try await deliverer(untrusting, "sqs:\(url)")
            let outcome = await deliverer.deliver(
                RaisedEvent(event: try untrusting.publish("E_CALL"), params: ["n": .int(2)]))
            guard case .failed(let failure) = outcome else {
                Issue.record("delivered to an untrusted server")
                return
            }
            #expect(failure.reason.contains("TLS"), "\(failure.reason)")
            await deliverer.close()
        }
    }
}

extension Array where Element == UInt8 {
    var utf8String: String { String(decoding: self, as: UTF8.self) }
}
