import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// udp and unix over real loopback sockets.
@Suite struct DatagramTransportTests {
    func makeHub() throws -> EventHub {
        let hub = EventHub(transports: [UDPTransport(), UnixTransport()])
        try hub.publish("E_MY_EVENT")
        return hub
    }

    @Test func udpDeliversTheExactNotificationBytes() async throws {
        let hub = try makeHub()
        let receiver = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT", socket: receiver.socket)
        let result = try hub.raise("E_MY_EVENT", ["name": "alice", "count": 7])
        #expect(result.subscribers == 1)
        let got = await receiver.waitFor(count: 1)
        #expect(got == [#"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"name":"alice","count":7}}"#])
        await receiver.close()
        await hub.shutdown()
    }

    @Test func udpKeepsOrderPerSubscriber() async throws {
        let hub = try makeHub()
        let receiver = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT", socket: receiver.socket)
        for index in 0..<500 { try hub.raise("E_MY_EVENT", ["n": .int(Int64(index))]) }
        let got = await receiver.waitFor(count: 500)
        #expect(got.count == 500)
        #expect(got == (0..<500).map { #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"n":\#($0)}}"# })
        await receiver.close()
        await hub.shutdown()
    }

    @Test func hostNamesAreResolvedAtSubscribeTimeAndPrintedAsGiven() async throws {
        let hub = try makeHub()
        let receiver = try DatagramReceiver()
        let socket = "udp:localhost:\(receiver.port)"
        try await hub.subscribe(event: "E_MY_EVENT", socket: socket)
        #expect(try hub.subscribers(of: "E_MY_EVENT").map(\.socket) == [socket])
        try hub.raise("E_MY_EVENT", ["via": "name"])
        #expect(await receiver.waitFor(count: 1).count == 1)
        await receiver.close()
        await hub.shutdown()
    }

    @Test func ipv6LiteralsInBrackets() async throws {
        let hub = try makeHub()
        try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:[::1]:9000")
        #expect(try hub.subscribers(of: "E_MY_EVENT").map(\.socket) == ["udp:[::1]:9000"])
        await hub.shutdown()
    }

    @Test func unixDatagramDelivers() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let hub = try makeHub()
        let receiver = try DatagramReceiver(unixPath: directory.file("ev.sock"))
        try await hub.subscribe(event: "E_MY_EVENT", socket: receiver.socket)
        try hub.raise("E_MY_EVENT", ["alice", 7])
        #expect(await receiver.waitFor(count: 1) == [#"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":["alice",7]}"#])
        await receiver.close()
        await hub.shutdown()
    }

    @Test func unixPathWithoutListenerFailsEachDelivery() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let hub = try makeHub()
        try await hub.subscribe(event: "E_MY_EVENT", socket: "unix:" + directory.file("nobody.sock"))
        for _ in 0..<3 { try hub.raise("E_MY_EVENT") }
        #expect(await eventually { hub.statistics.snapshot().transports["unix"]?.failed == 3 })
        #expect(hub.statistics.snapshot().transports["unix"]?.delivered == 0)
        await hub.shutdown()
    }

    /// A batch goes out with `sendmmsg`, its payloads packed back to back, in calls of up to 256:
    /// 700 payloads of varying length arrive whole and in order. A dead unix path fails each event
    /// of a batch; a unix receiver that does not read takes what its queue holds
    /// (net.unix.max_dgram_qlen) and the rest of the batch fails with "receiver buffer full".
    @Test func batchesArriveWholeAndInOrderAndFailEventByEvent() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let hub = try makeHub()
        let event = try hub.publish("E_MY_EVENT")
        func deliverer(_ socket: String) async throws -> any EventDeliverer {
            let parsed = try #require(try await hub.registry.parseSocket(socket) as? any DeliverySocket)
            return parsed.makeDeliverer(
                context: DelivererContext(event: event, socket: socket, logger: hub.logger, clock: hub.clock))
        }
        let events = (0..<700).map { index in
            RaisedEvent(
                event: event,
                params: ["n": .int(Int64(index)), "pad": .string(String(repeating: "p", count: index % 37))])
        }
        let expected = (0..<700).map { index in
            #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"n":\#(index),"pad":"\#(String(repeating: "p", count: index % 37))"}}"#
        }

        let receiver = try DatagramReceiver()
        let udp = try await deliverer(receiver.socket)
        #expect(await udp.deliver(batch: events) == Array(repeating: .delivered, count: 700))
        #expect(await receiver.waitFor(count: 700) == expected)
        await udp.close()
        await receiver.close()

        let dead = try await deliverer("unix:" + directory.file("nobody.sock"))
        let noFile = DeliveryOutcome.failed(DeliveryFailure(.subscriberFailed, "no such socket file"))
        #expect(await dead.deliver(batch: Array(events.prefix(600))) == Array(repeating: noFile, count: 600))
        await dead.close()

        let path = directory.file("asleep.sock")
        let asleep = try BoundUnixSocket(path: path)
        let full = try await deliverer("unix:" + path)
        let outcomes = await full.deliver(batch: Array(events.prefix(300)))
        let taken = outcomes.prefix { $0 == .delivered }.count
        #expect(taken >= 1 && taken < 300)
        #expect(
            outcomes.dropFirst(taken).allSatisfy {
                $0 == .failed(DeliveryFailure(.subscriberFailed, "receiver buffer full"))
            })
        #expect(asleep.pending() == expected.prefix(taken).map { Array($0.utf8) })
        await full.close()
        asleep.close()
        await hub.shutdown()
    }

    @Test func refusedUDPPortFailsTheNextDelivery() async throws {
        let hub = try makeHub()
        // A port that was just free: bind, note it, close.
        let probe = try DatagramReceiver()
        let port = probe.port
        await probe.close()
        try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:\(port)")
        try hub.raise("E_MY_EVENT", ["n": 1])
        #expect(await eventually { hub.statistics.snapshot().transports["udp"]?.delivered == 1 })
        try await Task.sleep(for: .milliseconds(50))  // the ICMP port-unreachable comes back
        try hub.raise("E_MY_EVENT", ["n": 2])
        #expect(await eventually { hub.statistics.snapshot().transports["udp"]?.failed == 1 })
        await hub.shutdown()
    }

    @Test func oversizedPayloadFailsAndIsNotTruncated() async throws {
        let hub = try makeHub()
        let receiver = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT", socket: receiver.socket)
        // 65,457 bytes is the limit; this payload is just over it.
        let overhead = JSONRPCNotification.encode(method: "E_MY_EVENT", params: ["s": ""]).count
        try hub.raise(
            "E_MY_EVENT", ["s": .string(String(repeating: "x", count: maximumDatagramPayload - overhead + 1))])
        let fits = String(repeating: "y", count: maximumDatagramPayload - overhead)
        try hub.raise("E_MY_EVENT", ["s": .string(fits)])
        let got = await receiver.waitFor(count: 1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(receiver.count == 1)
        #expect(got.first?.utf8.count == maximumDatagramPayload)
        #expect(hub.statistics.snapshot().transports["udp"]?.failed == 1)
        await receiver.close()
        await hub.shutdown()
    }

    static let badSockets: [(String, String)] = [
        ("udp:127.0.0.1", "udp socket needs a port: udp:127.0.0.1"),
        ("udp:127.0.0.1:", "udp socket needs a port: udp:127.0.0.1:"),
        ("udp:127.0.0.1:abc", "bad port 'abc' in udp:127.0.0.1:abc (expected 1-65535)"),
        ("udp:127.0.0.1:0", "bad port '0' in udp:127.0.0.1:0 (expected 1-65535)"),
        ("udp:127.0.0.1:70000", "bad port '70000' in udp:127.0.0.1:70000 (expected 1-65535)"),
        ("udp::9000", "udp socket needs a host: udp::9000"),
        ("udp:[::1:9000", "unterminated '[' in IPv6 address: udp:[::1:9000"),
        ("udp:[zz]:9000", "bad IPv6 address 'zz' in udp:[zz]:9000"),
        ("udp:nonexistent.invalid:9000", "cannot resolve host 'nonexistent.invalid' in udp:nonexistent.invalid:9000"),
        ("unix:relative/path.sock", "unix socket path must be absolute: unix:relative/path.sock"),
        ("unix:", "unix socket needs a path: unix:"),
        ("unix:/tmp/a b", "unix socket path contains whitespace: unix:/tmp/a b"),
        ("foo:1.2.3.4:5", "unknown transport 'foo' in socket foo:1.2.3.4:5 (known: udp, unix)"),
        ("127.0.0.1", "socket has no transport: 127.0.0.1 (expected SCHEME:ADDRESS, e.g. udp:127.0.0.1:9000)"),
        ("", "empty socket"),
    ]

    @Test func badSocketsAreRejectedWithTheirReasonAndNothingIsStored() async throws {
        let hub = try makeHub()
        await expectRefused(Self.badSockets, event: "E_MY_EVENT", by: hub)
        #expect(try hub.subscribers(of: "E_MY_EVENT").isEmpty)
    }

    @Test func matchingIsSameHostAndPortAsGiven() async throws {
        let hub = try makeHub()
        try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:9001", expiry: .seconds(60))
        #expect(try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:9001") == .refreshed)
        #expect(try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:9002") == .subscribed)
        #expect(try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:localhost:9001") == .subscribed)
        #expect(try await hub.subscribe(event: "E_MY_EVENT", socket: "unix:/tmp/x.sock") == .subscribed)
        #expect(try await hub.subscribe(event: "E_MY_EVENT", socket: "unix:/tmp/x.sock") == .refreshed)
        #expect(try hub.subscribers(of: "E_MY_EVENT").count == 4)
        await hub.shutdown()
    }
}

@Suite struct DestinationPolicyTests {
    @Test func cidrMatching() async throws {
        let loopback = try #require(CIDR("127.0.0.0/8"))
        let six = try #require(CIDR("::1/128"))
        let hub = EventHub(transports: [UDPTransport()], configuration: .init(allowedDestinations: [loopback, six]))
        try hub.publish("E_X")
        try await hub.subscribe(event: "E_X", socket: "udp:127.1.2.3:9")
        try await hub.subscribe(event: "E_X", socket: "udp:[::1]:9")
        try await hub.subscribe(event: "E_X", socket: "udp:localhost:9")
        await #expect(
            throws: EventInterfaceError.badSocket(
                SocketError(
                    "destination 10.0.0.1 is outside allowed_destinations (127.0.0.0/8, ::1/128): udp:10.0.0.1:9"))
        ) {
            try await hub.subscribe(event: "E_X", socket: "udp:10.0.0.1:9")
        }
        await #expect(throws: EventInterfaceError.self) { try await hub.subscribe(event: "E_X", socket: "udp:[::2]:9") }
        #expect(try hub.subscribers(of: "E_X").count == 3)
        #expect(CIDR("300.0.0.0/8") == nil)
        #expect(CIDR("10.0.0.0/33") == nil)
        #expect(try #require(CIDR("10.1.0.0/16")).contains(family: AF_INET, bytes: [10, 1, 200, 3]))
        #expect(try !#require(CIDR("10.1.0.0/16")).contains(family: AF_INET, bytes: [10, 2, 0, 0]))
        await hub.shutdown()
    }
}

/// A Unix datagram socket bound at a path that reads nothing until asked.
final class BoundUnixSocket {
    let descriptor: Int32

    init(path: String) throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        let bound = unixSocketAddress(path).map { address in withSocketAddress(address) { bind(descriptor, $0, $1) } }
        guard bound == 0 else { throw ReceiverError("cannot bind \(path)") }
    }

    /// Everything queued so far, without waiting.
    func pending() -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes {
                recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT))
            }
            guard count > 0 else { return datagrams }
            datagrams.append(Array(buffer[0..<count]))
        }
    }

    func close() { _ = Glibc.close(descriptor) }

}

@Suite struct UnixPathPolicyTests {
    /// Hardening: with `modules.event_datagram.allowed_dirs`, unix sockets follow flatstore's rule.
    @Test func unixAllowedDirsAreEnforcedThroughLinks() async throws {
        let allowed = TemporaryDirectory(prefix: "evi-unix-allowed")
        defer { allowed.remove() }
        let outside = TemporaryDirectory(prefix: "evi-unix-outside")
        defer { outside.remove() }
        try FileManager.default.createSymbolicLink(atPath: allowed.file("link"), withDestinationPath: outside.path)
        let hub = EventHub(transports: [UnixTransport(allowedDirs: [allowed.path])])
        try hub.publish("E_X")
        await expectRefused(
            [
                ("unix:/tmp/x.sock", "unix path is outside allowed_dirs (\(allowed.path)): unix:/tmp/x.sock"),
                (
                    "unix:\(allowed.path)/link/x.sock",
                    "unix path is outside allowed_dirs (\(allowed.path)): unix:\(allowed.path)/link/x.sock"
                ),
            ], event: "E_X", by: hub)
        try await hub.subscribe(event: "E_X", socket: "unix:\(allowed.path)/ok.sock")
        await hub.shutdown()
    }
}
