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
        let (policy, hashParameter) = try Self.policy(policyWord, in: text)
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
        return VirtualSocket(
            policy: policy, hashParameter: hashParameter, members: members, failoverTimeout: failoverTimeout)
    }

    /// Longest `HASH(PARAM)` parameter.
    public static let maximumHashParameter = 64

    /// The policy word: `PARALLEL`, `FAILOVER`, `ROUND-ROBIN` or `HASH(PARAM)`, upper case.
    static func policy(_ word: String, in text: String) throws(SocketError) -> (VirtualPolicy, String?) {
        if word.hasPrefix("HASH(") {
            let inside = word.dropFirst("HASH(".count)
            guard let close = inside.firstIndex(of: ")") else {
                throw SocketError("HASH( without its ')' (PARAM has no whitespace or parentheses): \(text)")
            }
            let parameter = String(inside[..<close])
            let rest = inside[inside.index(after: close)...]
            guard !parameter.isEmpty else { throw SocketError("HASH() needs a parameter name or index: \(text)") }
            guard !parameter.contains("(") else {
                throw SocketError("HASH parameter '\(parameter)' contains '(': \(text)")
            }
            guard parameter.count <= maximumHashParameter else {
                throw SocketError("HASH parameter longer than \(maximumHashParameter) characters: \(text)")
            }
            guard rest.isEmpty else {
                throw SocketError(
                    "virtual policy HASH(\(parameter)) must be followed by whitespace before the first member: \(text)")
            }
            return (.hash, parameter)
        }
        if word == "HASH" { throw SocketError("HASH needs a parameter: HASH(PARAM) in \(text)") }
        if let policy = VirtualPolicy(rawValue: word), policy != .hash { return (policy, nil) }
        let names = VirtualPolicy.allCases.map(\.rawValue)
        if let glued = names.first(where: { word.hasPrefix($0) }) {
            throw SocketError(
                "virtual policy \(glued) must be followed by whitespace before the first member: \(text)")
        }
        throw SocketError(
            "unknown virtual policy '\(word)' in \(text) (expected PARALLEL, FAILOVER, ROUND-ROBIN or HASH(PARAM), upper case)"
        )
    }
}

/// A parsed virtual socket.
public struct VirtualSocket: EventSocket {
    public let policy: VirtualPolicy
    /// HASH's PARAM: a parameter name, or an index for positional parameters.
    public let hashParameter: String?
    public let members: [any DeliverySocket]
    let failoverTimeout: Double

    init(policy: VirtualPolicy, hashParameter: String? = nil, members: [any DeliverySocket], failoverTimeout: Double) {
        self.policy = policy
        self.hashParameter = hashParameter
        self.members = members
        self.failoverTimeout = failoverTimeout
    }

    public var scheme: String { "virtual" }

    /// `PARALLEL`, `HASH(callid)`…
    public var policyWord: String { hashParameter.map { "HASH(\($0))" } ?? policy.rawValue }

    /// Whether members match as a multiset (their order means nothing to the policy).
    var membersUnordered: Bool { policy == .parallel || policy == .hash }

    /// `virtual:POLICY m1 m2 …`, single spaces, members in their canonical form.
    public var description: String {
        "virtual:" + ([policyWord] + members.map(\.description)).joined(separator: " ")
    }

    /// The HASH key of an event: its PARAM's value as filters read it, empty when absent.
    func hashKey(of event: RaisedEvent) -> String {
        guard let hashParameter, let value = event.params.value(forKey: hashParameter) else { return "" }
        return value.keyText
    }

    /// Same policy and members: in order for FAILOVER and ROUND-ROBIN, as a multiset for PARALLEL
    /// and HASH (with the same PARAM).
    public func matches(_ other: any EventSocket) -> Bool {
        guard let other = other as? VirtualSocket, other.policy == policy, other.hashParameter == hashParameter,
            other.members.count == members.count
        else {
            return false
        }
        if !membersUnordered {
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
    /// PARALLEL and HASH (a multiset), as `matches` compares them.
    public var identity: String {
        let parts = members.map(\.identity)
        return "virtual:" + ([policyWord] + (membersUnordered ? parts.sorted() : parts)).joined(separator: " ")
    }

    public var components: [any EventSocket] { members }

    public func makeSubscriber(context: SubscriberContext) -> any EventSubscriber {
        VirtualSubscriber(socket: self, context: context)
    }
}
