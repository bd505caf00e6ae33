import EventInterface

/// `virtual:POLICY member_1 [member_2 …]`: several sockets as one subscriber with a delivery
/// policy (Docs/virtual.md).
public struct VirtualTransport: EventTransport {
    /// Seconds a failed member stays marked (`event_virtual.failover_timeout`, default 30).
    public let failoverTimeout: Double

    public static let memberDownEvent = "E_VIRTUAL_MEMBER_DOWN"
    public static let memberUpEvent = "E_VIRTUAL_MEMBER_UP"
    /// Members are tracked in a 64-bit set.
    public static let maximumMembers = 64

    public init(failoverTimeout: Double = 30) {
        self.failoverTimeout = failoverTimeout
    }

    public var scheme: String { "virtual" }
    public var publishedEvents: [String] { [Self.memberDownEvent, Self.memberUpEvent] }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "virtual:" + address
        let words = address.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let policyWord = words.first else {
            throw SocketError("virtual socket needs a policy and members: \(text)")
        }
        guard let policy = VirtualPolicy(rawValue: policyWord) else {
            if let glued = VirtualPolicy.allCases.first(where: { policyWord.hasPrefix($0.rawValue) }) {
                throw SocketError(
                    "virtual policy \(glued.rawValue) must be followed by whitespace before the first member: \(text)")
            }
            throw SocketError(
                "unknown virtual policy '\(policyWord)' in \(text) (expected PARALLEL, FAILOVER or ROUND-ROBIN, upper case)"
            )
        }
        let memberWords = words.dropFirst()
        guard !memberWords.isEmpty else { throw SocketError("virtual socket has no members: \(text)") }
        guard memberWords.count <= Self.maximumMembers else {
            throw SocketError("virtual socket has more than \(Self.maximumMembers) members: \(text)")
        }
        var members: [any DeliverySocket] = []
        for (position, word) in memberWords.enumerated() {
            guard !word.hasPrefix("virtual:") else {
                throw SocketError("member \(position + 1) of \(text): a virtual socket cannot be a member of another")
            }
            let member: any EventSocket
            do {
                member = try await context.parseSocket(word)
            } catch {
                throw SocketError("member \(position + 1) of \(text): \(error.message)")
            }
            guard let delivering = member as? any DeliverySocket else {
                throw SocketError("member \(position + 1) of \(text): \(word) cannot be a member")
            }
            members.append(delivering)
        }
        return VirtualSocket(policy: policy, members: members, failoverTimeout: failoverTimeout)
    }
}

/// A parsed virtual socket.
public struct VirtualSocket: EventSocket {
    public let policy: VirtualPolicy
    public let members: [any DeliverySocket]
    let failoverTimeout: Double

    public var scheme: String { "virtual" }

    /// `virtual:POLICY m1 m2 …`, single spaces, members in their canonical form.
    public var description: String {
        "virtual:" + ([policy.rawValue] + members.map(\.description)).joined(separator: " ")
    }

    /// Same policy and members: in order for FAILOVER and ROUND-ROBIN, as a multiset for PARALLEL.
    public func matches(_ other: any EventSocket) -> Bool {
        guard let other = other as? VirtualSocket, other.policy == policy, other.members.count == members.count else {
            return false
        }
        if policy != .parallel {
            return zip(members, other.members).allSatisfy { $0.matches($1) }
        }
        var unused = other.members
        for member in members {
            guard let index = unused.firstIndex(where: { member.matches($0) }) else { return false }
            unused.remove(at: index)
        }
        return true
    }

    /// The policy and the members' identities: in order for FAILOVER and ROUND-ROBIN, sorted for
    /// PARALLEL (a multiset), as `matches` compares them.
    public var identity: String {
        let parts = members.map(\.identity)
        return "virtual:" + ([policy.rawValue] + (policy == .parallel ? parts.sorted() : parts)).joined(separator: " ")
    }

    public var components: [any EventSocket] { members }

    public func makeSubscriber(context: SubscriberContext) -> any EventSubscriber {
        VirtualSubscriber(socket: self, context: context)
    }
}
