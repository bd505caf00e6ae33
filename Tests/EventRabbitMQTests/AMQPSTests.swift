import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventNIOSupport
import EventVirtual
import Foundation
import Testing

@testable import EventRabbitMQ

/// amqps against the private broker's TLS listener (scripts/rabbitmq.sh makes its certificates in
/// $EVI_RABBITMQ_DIR/tls), read back with pika over TLS.
@Suite(.serialized) struct AMQPSTests {
    func makeHub(caFile: String) throws -> EventHub {
        var options = RabbitMQOptions()
        options.tls.caFile = caFile
        let profile = try ReloadableTLS(options: options.tls, key: "modules.event_rabbitmq")
        let hub = EventHub(transports: [
            RabbitMQTransport(options: options, tlsProfiles: ["": profile]), UDPTransport(),
            VirtualTransport(failoverTimeout: 30),
        ])
        try hub.publish("E_PIKE_BLOCKED")
        return hub
    }

    /// pika over TLS: declares `queue`, prints "ready", then each body.
    static let reader = """
        import ssl, sys, pika
        queue, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        context = ssl.create_default_context(cafile=ca)
        parameters = pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(context, "127.0.0.1"))
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.queue_delete(queue=queue)
        channel.queue_declare(queue=queue, auto_delete=True)
        print("ready", flush=True)
        for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=30):
            if method is None:
                break
            print(body.decode(), flush=True)
        """

    @Test func eventsPublishedOverAMQPSAreReadOverTLS() async throws {
        let directory = TemporaryDirectory(prefix: "evi-amqps")
        defer { directory.remove() }
        let script = directory.file("read.py")
        try Self.reader.write(toFile: script, atomically: true, encoding: .utf8)
        let ca = try TestBroker.certificates + "/ca.pem"
        let reader = try ChildProcess(
            executable: repositoryRoot.appendingPathComponent(".venv/bin/python3").path,
            arguments: [script, "evi_amqps", String(try TestBroker.tlsPort), ca], directory: directory.path,
            outputPath: directory.file("out"), errorPath: directory.file("err"))
        defer { reader.signal(SIGKILL) }
        #expect(await eventually(timeout: .seconds(20)) { reader.output.hasPrefix("ready") }, "\(reader.errors)")
        let hub = try makeHub(caFile: ca)
        let socket = "rabbitmq:guest:guest@127.0.0.1:\(try TestBroker.tlsPort)/tls?evi_amqps"
        try await hub.subscribe(event: "E_PIKE_BLOCKED", socket: socket)
        #expect(
            try hub.subscribers(of: "E_PIKE_BLOCKED").first?.socket
                == "rabbitmq:guest@127.0.0.1:\(try TestBroker.tlsPort)/tls?evi_amqps")
        try hub.raise("E_PIKE_BLOCKED", ["ip": "10.0.0.1", "count": 42])
        #expect(
            await eventually(timeout: .seconds(10)) {
                reader.output.contains(
                    #"{"jsonrpc":"2.0","method":"E_PIKE_BLOCKED","params":{"ip":"10.0.0.1","count":42}}"#)
            }, "\(reader.output) \(reader.errors)")
        #expect(hub.statistics.snapshot().transports["rabbitmq"]?.delivered == 1)
        await hub.shutdown()
    }

    /// A broker whose certificate the CA does not vouch for, or that is reached by a name its
    /// certificate does not carry: the delivery fails with the reason, FAILOVER moves to udp.
    @Test func anUntrustedOrMisnamedBrokerFailsAndFailoverMovesOn() async throws {
        let directory = TemporaryDirectory(prefix: "evi-amqps")
        defer { directory.remove() }
        let otherCA = directory.file("other-ca.pem")
        let made = try ChildProcess(
            executable: "/usr/bin/openssl",
            arguments: [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory.file("other-ca.key"), "-out",
                otherCA, "-days", "2", "-subj", "/CN=nobody's CA",
            ], directory: directory.path, outputPath: directory.file("out"), errorPath: directory.file("err"))
        #expect(await made.waitForExit(timeout: .seconds(30)) == 0)
        for (ca, host) in [(otherCA, "127.0.0.1"), (try TestBroker.certificates + "/ca.pem", "localhost")] {
            let hub = try makeHub(caFile: ca)
            let backup = try DatagramReceiver()
            try await hub.subscribe(
                event: "E_PIKE_BLOCKED",
                socket: "virtual:FAILOVER rabbitmq:\(host):\(try TestBroker.tlsPort)/tls?evi_nowhere \(backup.socket)")
            try hub.raise("E_PIKE_BLOCKED", ["n": 1])
            #expect(await backup.waitFor(count: 1, timeout: .seconds(10)).count == 1, "\(host)")
            let member = try hub.subscribers(of: "E_PIKE_BLOCKED").first?.members?.first
            #expect(member?.state == .failed, "\(host): \(String(describing: member))")
            await backup.close()
            await hub.shutdown()
        }
    }

    @Test func anUnknownTLSDomainIsRefusedAtSubscribeTime() async throws {
        let hub = try makeHub(caFile: try TestBroker.certificates + "/ca.pem")
        do {
            try await hub.subscribe(event: "E_PIKE_BLOCKED", socket: "rabbitmq:127.0.0.1/tls_domain=nope?q")
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains("no TLS domain 'nope'"), "\(error)")
        }
    }
}
