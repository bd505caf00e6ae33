import EventDatagram
import EventInterface
import EventInterfaceTestKit
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
            "unknown virtual policy 'parallel' in virtual:parallel udp:127.0.0.1:9001 udp:127.0.0.1:9002 (expected PARALLEL, FAILOVER, ROUND-ROBIN or HASH(PARAM), upper case)"
        ),
        (
            "virtual:Parallel udp:127.0.0.1:9001",
            "unknown virtual policy 'Parallel' in virtual:Parallel udp:127.0.0.1:9001 (expected PARALLEL, FAILOVER, ROUND-ROBIN or HASH(PARAM), upper case)"
        ),
        (
            "virtual:RANDOM udp:127.0.0.1:9001",
            "unknown virtual policy 'RANDOM' in virtual:RANDOM udp:127.0.0.1:9001 (expected PARALLEL, FAILOVER, ROUND-ROBIN or HASH(PARAM), upper case)"
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

/// `virtual:HASH(PARAM) …`: syntax, printing and matching.
@Suite struct HashSocketTests {
    let registry: TransportRegistry = {
        let registry = TransportRegistry()
        registry.register(UDPTransport())
        registry.register(VirtualTransport())
        return registry
    }()

    func parse(_ text: String) async throws(SocketError) -> any EventSocket {
        try await registry.parseSocket(text)
    }

    @Test func refusedWithTheirReason() async {
        let member = "udp:127.0.0.1:9001"
        let cases: [(String, String)] = [
            ("virtual:HASH() \(member)", "HASH() needs a parameter name or index: virtual:HASH() \(member)"),
            (
                "virtual:hash(x) \(member)",
                "unknown virtual policy 'hash(x)' in virtual:hash(x) \(member) (expected PARALLEL, FAILOVER, ROUND-ROBIN or HASH(PARAM), upper case)"
            ),
            (
                "virtual:HASH(x)\(member)",
                "virtual policy HASH(x) must be followed by whitespace before the first member: virtual:HASH(x)\(member)"
            ),
            ("virtual:HASH \(member)", "HASH needs a parameter: HASH(PARAM) in virtual:HASH \(member)"),
            (
                "virtual:HASH(call id) \(member)",
                "HASH( without its ')' (PARAM has no whitespace or parentheses): virtual:HASH(call id) \(member)"
            ),
            ("virtual:HASH(a(b) \(member)", "HASH parameter 'a(b' contains '(': virtual:HASH(a(b) \(member)"),
            (
                "virtual:HASH(\(String(repeating: "k", count: 65))) \(member)",
                "HASH parameter longer than 64 characters: virtual:HASH(\(String(repeating: "k", count: 65))) \(member)"
            ),
            ("virtual:HASH(callid)", "virtual socket has no members: virtual:HASH(callid)"),
        ]
        for (text, reason) in cases {
            await #expect(throws: SocketError(reason), "\(text)") { try await parse(text) }
        }
    }

    @Test func printsAndMatchesAsAMultisetWithTheSameParameter() async throws {
        let socket = try #require(
            try await parse("virtual:HASH(callid)\tudp:127.0.0.1:1  udp:127.0.0.1:2 udp:127.0.0.1:3") as? VirtualSocket)
        #expect(socket.description == "virtual:HASH(callid) udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:3")
        #expect(socket.policy == .hash)
        #expect(socket.hashParameter == "callid")
        #expect(socket.matches(try await parse("virtual:HASH(callid) udp:127.0.0.1:3 udp:127.0.0.1:1 udp:127.0.0.1:2")))
        #expect(
            !socket.matches(try await parse("virtual:HASH(CallID) udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:3")))
        #expect(!socket.matches(try await parse("virtual:HASH(callid) udp:127.0.0.1:1 udp:127.0.0.1:2")))
        #expect(!socket.matches(try await parse("virtual:PARALLEL udp:127.0.0.1:1 udp:127.0.0.1:2 udp:127.0.0.1:3")))
        let reordered = try await parse("virtual:HASH(callid) udp:127.0.0.1:2 udp:127.0.0.1:3 udp:127.0.0.1:1")
        #expect(socket.identity == reordered.identity)
        let positional = try #require(try await parse("virtual:HASH(0) udp:127.0.0.1:1") as? VirtualSocket)
        #expect(positional.hashParameter == "0")
        #expect(
            try await parse("virtual:HASH(a.b-c_d:1) udp:127.0.0.1:1").description.hasPrefix("virtual:HASH(a.b-c_d:1) ")
        )
    }

    /// 100,000 generated HASH sockets: each is refused with a reason or accepted, and every accepted
    /// one's printed form parses back to a matching socket with the same print.
    @Test func fuzzedHashSocketsFailClearlyOrPrintBack() async throws {
        var random = SplitMix(seed: 31)
        let alphabet = Array("aZ09_.-()[] \t:HASHhash;=!\\*é")
        var accepted = 0
        for _ in 0..<100_000 {
            let length = Int(random.next() % 12)
            let parameter = String((0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
            let members = (0..<(1 + Int(random.next() % 3))).map { "udp:127.0.0.1:\(9000 + $0)" }
            let gap = random.next() % 5 == 0 ? "" : " "
            let text = "virtual:HASH(" + parameter + ")" + gap + members.joined(separator: " ")
            do {
                let socket = try await parse(text)
                accepted += 1
                let again = try await parse(socket.description)
                #expect(again.description == socket.description)
                #expect(again.matches(socket))
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
        #expect(accepted > 1000)
    }
}
