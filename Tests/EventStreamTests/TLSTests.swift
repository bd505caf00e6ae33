import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventNIOSupport
import EventVirtual
import Foundation
import NIOPosix
import Testing

@testable import EventStream

let tlsRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Tests/Fixtures/tls/peer.py with /usr/bin/env python3 (the ssl module of the system's Python).
func tlsPeer(_ arguments: [String], directory: TemporaryDirectory, name: String) throws -> ChildProcess {
    try ChildProcess(
        executable: "/usr/bin/env",
        arguments: ["python3", tlsRoot.appendingPathComponent("Tests/Fixtures/tls/peer.py").path] + arguments,
        directory: directory.path, outputPath: directory.file("\(name).out"), errorPath: directory.file("\(name).err"))
}

@Suite(.serialized) struct TLSTests {
    func makeHub(tls options: TLSOptions, reliable: Bool = true) throws -> EventHub {
        var streamOptions = StreamOptions(reliableMode: reliable)
        streamOptions.tls = options
        let tls = try ReloadableTLS(options: options, key: "modules.event_stream")
        let hub = EventHub(transports: [
            StreamTransport(options: streamOptions, tls: tls), UDPTransport(),
            VirtualTransport(failoverTimeout: 30),
        ])
        try hub.publish("E_TLS")
        return hub
    }

    func port(of server: ChildProcess) async throws -> Int {
        guard await eventually(timeout: .seconds(10), { server.output.hasPrefix("port ") }),
            let port = Int(server.output.dropFirst(5).prefix { $0.isNumber })
        else { throw ReceiverError("the TLS peer did not start: \(server.errors)") }
        return port
    }

    @Test func aTLSSubscriberGetsTheExactBytesAndItsRepliesOverTLS() async throws {
        let certificates = try await TestCertificates()
        defer { certificates.directory.remove() }
        let received = certificates.directory.file("received")
        let server = try tlsPeer(
            ["server", certificates.serverCert, certificates.serverKey, received, "reliable"],
            directory: certificates.directory, name: "server")
        defer { server.signal(SIGKILL) }
        let port = try await port(of: server)
        var options = TLSOptions()
        options.caFile = certificates.ca
        let hub = try makeHub(tls: options)
        try await hub.subscribe(event: "E_TLS", socket: "tls:127.0.0.1:\(port)")
        #expect(try hub.subscribers(of: "E_TLS").first?.socket == "tls:127.0.0.1:\(port)")
        try hub.raise("E_TLS", ["n": 1])
        try hub.raise("E_TLS", ["name": "alice"])
        // Reliable mode: delivered only once the peer's replies came back over TLS.
        #expect(await eventually(timeout: .seconds(10)) { hub.statistics.snapshot().transports["tls"]?.delivered == 2 })
        let bytes = (try? String(contentsOfFile: received, encoding: .utf8)) ?? ""
        #expect(
            bytes
                == #"{"id":1,"jsonrpc":"2.0","method":"E_TLS","params":{"n":1}}{"id":2,"jsonrpc":"2.0","method":"E_TLS","params":{"name":"alice"}}"#,
            "\(bytes)")
        await hub.shutdown()
    }

    @Test func anUntrustedServerFailsTheDeliveryAndFailoverMovesOn() async throws {
        let certificates = try await TestCertificates()
        defer { certificates.directory.remove() }
        let server = try tlsPeer(
            ["server", certificates.serverCert, certificates.serverKey, certificates.directory.file("received")],
            directory: certificates.directory, name: "server")
        defer { server.signal(SIGKILL) }
        let port = try await port(of: server)
        var options = TLSOptions()
        options.caFile = certificates.otherCA
        let hub = try makeHub(tls: options, reliable: false)
        let backup = try DatagramReceiver()
        try await hub.subscribe(event: "E_TLS", socket: "virtual:FAILOVER tls:127.0.0.1:\(port) \(backup.socket)")
        try hub.raise("E_TLS", ["n": 1])
        #expect(await backup.waitFor(count: 1, timeout: .seconds(10)).count == 1)
        let member = try #require(try hub.subscribers(of: "E_TLS").first?.members?.first)
        #expect(member.state == .failed)
        #expect(!FileManager.default.fileExists(atPath: certificates.directory.file("received")))
        await backup.close()
        await hub.shutdown()
    }

    @Test func aTLSIngressTakesOnlyClientsWithACertificateFromItsCA() async throws {
        let certificates = try await TestCertificates()
        defer { certificates.directory.remove() }
        let transport = TestTransport()
        let hub = EventHub(transports: [transport])
        try hub.publish("E_TLS")
        try await hub.subscribe(event: "E_TLS", socket: "test:in")
        var options = TLSOptions()
        options.certFile = certificates.serverCert
        options.keyFile = certificates.serverKey
        let tls = try ReloadableTLS(options: options, key: "modules.event_stream")
        var settings = IngressSettings(socket: "tls:127.0.0.1:0")
        settings.clientCAFile = certificates.ca
        let sink = IngressSink(settings: settings, hub: hub)
        let ingress = try await StreamIngress.start(
            settings: settings, sink: sink, group: MultiThreadedEventLoopGroup.singleton, tls: tls)
        let port = try #require(Int(ingress.socket.split(separator: ":").last ?? ""))
        let message = #"{"jsonrpc":"2.0","method":"E_TLS","params":{"n":1}}"#
        let anonymous = try tlsPeer(
            ["client", certificates.ca, String(port), message], directory: certificates.directory, name: "anonymous")
        _ = await anonymous.waitForExit(timeout: .seconds(10))
        let trusted = try tlsPeer(
            ["client", certificates.ca, String(port), message, certificates.clientCert, certificates.clientKey],
            directory: certificates.directory, name: "trusted")
        _ = await trusted.waitForExit(timeout: .seconds(10))
        #expect(trusted.output.hasPrefix("sent"), "\(trusted.output) \(trusted.errors)")
        #expect(await eventually { transport.messages("in").count == 1 })
        try await Task.sleep(for: .milliseconds(200))
        #expect(transport.messages("in") == [message], "only the client with a certificate got through")
        #expect(sink.received == 1)
        await ingress.close()
        await hub.shutdown()
    }

    @Test func aReadableKeyOrAHalfPairIsRefused() async throws {
        let certificates = try await TestCertificates()
        defer { certificates.directory.remove() }
        chmod(certificates.serverKey, 0o644)
        var options = TLSOptions()
        options.certFile = certificates.serverCert
        options.keyFile = certificates.serverKey
        #expect(throws: ConfigurationError.self) { try TLSProfile(options: options, key: "modules.event_stream") }
        options.keyFile = nil
        #expect(throws: ConfigurationError.self) { try TLSProfile(options: options, key: "modules.event_stream") }
    }

    /// SIGHUP: files that no longer make a profile keep the old one (the reason is returned for
    /// the log); good files replace it.
    @Test func aReloadKeepsTheOldProfileWhenTheNewFilesAreBad() async throws {
        let certificates = try await TestCertificates()
        defer { certificates.directory.remove() }
        var options = TLSOptions()
        options.certFile = certificates.serverCert
        options.keyFile = certificates.serverKey
        let tls = try ReloadableTLS(options: options, key: "modules.event_stream")
        let before = try tls.current().client
        try "not a certificate".write(toFile: certificates.serverCert, atomically: true, encoding: .utf8)
        let failure = try #require(tls.reload())
        #expect(failure.contains("modules.event_stream"), "\(failure)")
        #expect(try tls.current().client === before)
        try FileManager.default.removeItem(atPath: certificates.serverCert)
        try FileManager.default.copyItem(atPath: certificates.clientCert, toPath: certificates.serverCert)
        try FileManager.default.removeItem(atPath: certificates.serverKey)
        try FileManager.default.copyItem(atPath: certificates.clientKey, toPath: certificates.serverKey)
        #expect(tls.reload() == nil)
        #expect(try tls.current().client !== before)
    }

    /// Without files (the system's trust roots) nothing is loaded until a connection needs it.
    @Test func aProfileWithoutFilesIsMadeAtFirstUseAndKept() throws {
        let tls = try ReloadableTLS(options: TLSOptions(), key: "modules.event_stream")
        let first = try tls.current().client
        #expect(try tls.current().client === first)
        #expect(tls.reload() == nil)
        #expect(try tls.current().client !== first)
    }
}
