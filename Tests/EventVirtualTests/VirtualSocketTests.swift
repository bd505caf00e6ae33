import EventDatagram
import EventInterface
import EventVirtual
import Testing

/// Syntax, validation, printing and matching of `virtual:` sockets.
@Suite struct VirtualSocketTests {
    let registry: TransportRegistry = {
        let registry = TransportRegistry()
        registry.register(UDPTransport())
        registry.register(UnixTransport())
        registry.register(VirtualTransport())
        return registry
    }()

    func parse(_ text: String) async throws(SocketError) -> any EventSocket {
        try await registry.parseSocket(text)
    }

    static let rejected: [(String, String)] = [
        (
            "virtual:parallel udp:127.0.0.1:9001 udp:127.0.0.1:9002",
            "unknown virtual policy 'parallel' in virtual:parallel udp:127.0.0.1:9001 udp:127.0.0.1:9002 (expected PARALLEL, FAILOVER or ROUND-ROBIN, upper case)"
        ),
        (
            "virtual:Parallel udp:127.0.0.1:9001",
            "unknown virtual policy 'Parallel' in virtual:Parallel udp:127.0.0.1:9001 (expected PARALLEL, FAILOVER or ROUND-ROBIN, upper case)"
        ),
        (
            "virtual:RANDOM udp:127.0.0.1:9001",
            "unknown virtual policy 'RANDOM' in virtual:RANDOM udp:127.0.0.1:9001 (expected PARALLEL, FAILOVER or ROUND-ROBIN, upper case)"
        ),
        ("virtual:PARALLEL", "virtual socket has no members: virtual:PARALLEL"),
        ("virtual:PARALLEL \t ", "virtual socket has no members: virtual:PARALLEL \t "),
        ("virtual:", "virtual socket needs a policy and members: virtual:"),
        (
            "virtual:FAILOVERudp:127.0.0.1:9001 udp:127.0.0.1:9002",
            "virtual policy FAILOVER must be followed by whitespace before the first member: virtual:FAILOVERudp:127.0.0.1:9001 udp:127.0.0.1:9002"
        ),
        (
            "virtual:ROUND-ROBIN foo:1.2.3.4:5 udp:127.0.0.1",
            "member 1 of virtual:ROUND-ROBIN foo:1.2.3.4:5 udp:127.0.0.1: unknown transport 'foo' in socket foo:1.2.3.4:5 (known: udp, unix, virtual)"
        ),
        (
            "virtual:ROUND-ROBIN udp:127.0.0.1:9001 udp:127.0.0.1",
            "member 2 of virtual:ROUND-ROBIN udp:127.0.0.1:9001 udp:127.0.0.1: udp socket needs a port: udp:127.0.0.1"
        ),
        (
            "virtual:FAILOVER unix:relative.sock",
            "member 1 of virtual:FAILOVER unix:relative.sock: unix socket path must be absolute: unix:relative.sock"
        ),
        (
            "virtual:PARALLEL virtual:FAILOVER",
            "member 1 of virtual:PARALLEL virtual:FAILOVER: a virtual socket cannot be a member of another"
        ),
    ]

    @Test func badVirtualSocketsAreRejectedWithTheirReason() async {
        for (text, reason) in Self.rejected {
            await #expect(throws: SocketError(reason), "\(text)") { try await parse(text) }
        }
    }

    @Test func tooManyMembersAreRejected() async {
        let members = (1...65).map { "udp:127.0.0.1:\(9000 + $0)" }.joined(separator: " ")
        await #expect(throws: SocketError.self) { try await parse("virtual:PARALLEL " + members) }
    }

    @Test func whitespaceIsFreeAndThePrintedFormIsCanonical() async throws {
        let socket = try await parse(
            "virtual: \t PARALLEL \t udp:127.0.0.1:9001\t\tudp:127.0.0.1:9002   udp:127.0.0.1:9003  \t")
        #expect(socket.description == "virtual:PARALLEL udp:127.0.0.1:9001 udp:127.0.0.1:9002 udp:127.0.0.1:9003")
        let virtual = try #require(socket as? VirtualSocket)
        #expect(virtual.policy == .parallel)
        #expect(virtual.members.count == 3)
    }

    @Test func theSameMemberMayAppearTwice() async throws {
        let socket = try #require(
            try await parse("virtual:ROUND-ROBIN udp:127.0.0.1:9001 udp:127.0.0.1:9001") as? VirtualSocket)
        #expect(socket.members.count == 2)
    }

    @Test func parallelMatchesAsAMultiset() async throws {
        let abc = try await parse("virtual:PARALLEL udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:3")
        #expect(abc.matches(try await parse("virtual:PARALLEL udp:127.0.0.1:3 udp:127.0.0.1:1 udp:127.0.0.1:2")))
        #expect(!abc.matches(try await parse("virtual:PARALLEL udp:127.0.0.1:1 udp:127.0.0.1:2")))
        #expect(!abc.matches(try await parse("virtual:FAILOVER udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:3")))
        let aab = try await parse("virtual:PARALLEL udp:127.0.0.1:1 udp:127.0.0.1:1 udp:127.0.0.1:2")
        #expect(!aab.matches(try await parse("virtual:PARALLEL udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:2")))
        #expect(aab.matches(try await parse("virtual:PARALLEL udp:127.0.0.1:2 udp:127.0.0.1:1 udp:127.0.0.1:1")))
        #expect(!abc.matches(try await parse("udp:127.0.0.1:1")))
    }

    @Test func failoverAndRoundRobinMatchInOrder() async throws {
        for policy in ["FAILOVER", "ROUND-ROBIN"] {
            let ab = try await parse("virtual:\(policy) udp:127.0.0.1:1 unix:/tmp/b")
            #expect(ab.matches(try await parse("virtual:\(policy)\tudp:127.0.0.1:1  unix:/tmp/b ")))
            #expect(!ab.matches(try await parse("virtual:\(policy) unix:/tmp/b udp:127.0.0.1:1")))
        }
    }
}
