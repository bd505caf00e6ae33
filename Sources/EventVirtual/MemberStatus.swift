import EventInterface

/// The health of one member of a virtual subscriber, as `evi:subscribers` shows it.
public struct MemberStatus: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case up
        case failed
    }

    public var socket: String
    public var state: State
    /// Whole seconds until a failed mark runs out (0 once it has: the next event tries it).
    public var retryIn: Int?
    public var delivered: Int
    public var failed: Int

    public init(socket: String, state: State, retryIn: Int?, delivered: Int, failed: Int) {
        self.socket = socket
        self.state = state
        self.retryIn = retryIn
        self.delivered = delivered
        self.failed = failed
    }
}

/// What a virtual subscriber reports: its members, rendered by the MI as
/// `"members":[{"socket":…,"state":"up"|"failed",["retry_in":N,]"delivered":N,"failed":N},…]`.
public struct VirtualStatus: SubscriberStatus, Hashable {
    public var members: [MemberStatus]

    public var fields: [EventField] {
        [
            EventField(
                "members",
                .array(
                    members.map { member in
                        var fields = [
                            EventField("socket", .string(member.socket)),
                            EventField("state", .string(member.state.rawValue)),
                        ]
                        if member.state == .failed, let retry = member.retryIn {
                            fields.append(EventField("retry_in", .int(Int64(retry))))
                        }
                        fields.append(EventField("delivered", .int(Int64(member.delivered))))
                        fields.append(EventField("failed", .int(Int64(member.failed))))
                        return .object(fields)
                    }))
        ]
    }
}

extension SubscriberInfo {
    /// A virtual subscriber's members, each with its health; nil for any other subscriber.
    public var members: [MemberStatus]? { (status as? VirtualStatus)?.members }
}
