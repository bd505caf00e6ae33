import EventInterface

/// One management command: its names (3.x style first, then legacy ones), the parameter sets it
/// accepts, and what it does.
public struct MICommand: Sendable {
    public enum Handler: Sendable {
        /// Answers at once, on the caller's thread (the fast path: raise, lists).
        case immediate(@Sendable (MIParams) throws(MIError) -> EventValue)
        /// Needs to wait (host name resolution when subscribing).
        case deferred(@Sendable (MIParams) async throws(MIError) -> EventValue)
    }

    public var names: [String]
    /// Every accepted set of parameter names, positional order as listed.
    public var parameterSets: [[String]]
    public var handler: Handler

    public init(names: [String], parameterSets: [[String]], handler: Handler) {
        self.names = names
        self.parameterSets = parameterSets
        self.handler = handler
    }

    /// Binds named or positional `params` to one of the parameter sets.
    func bind(_ params: EventValue?) throws(MIError) -> MIParams {
        switch params {
        case nil:
            guard parameterSets.contains(where: \.isEmpty) else { throw .wrongParameterCount }
            return MIParams([:])
        case .object(let fields)?:
            let names = Set(fields.map(\.name))
            guard names.count == fields.count, parameterSets.contains(where: { Set($0) == names }) else {
                throw .wrongParameterCount
            }
            return MIParams(Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0.value) }))
        case .array(let values)?:
            guard let set = parameterSets.first(where: { $0.count == values.count }) else { throw .wrongParameterCount }
            return MIParams(Dictionary(uniqueKeysWithValues: zip(set, values).map { ($0, $1) }))
        default:
            throw .invalidRequest
        }
    }
}
