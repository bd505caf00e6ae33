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
    /// Parameters that may be named in any combination beside the first parameter set's (which
    /// are required); positionally they come in this order after them.
    public var optional: [String] = []

    public init(names: [String], parameterSets: [[String]], handler: Handler) {
        self.names = names
        self.parameterSets = parameterSets
        self.handler = handler
    }

    /// `required` always, then any of `optional`: by name in any combination, positionally as a
    /// prefix of `optional` in its order (`core:which` lists those positional forms).
    public init(names: [String], required: [String], optional: [String], handler: Handler) {
        self.init(
            names: names, parameterSets: (0...optional.count).map { required + optional.prefix($0) }, handler: handler)
        self.optional = optional
    }

    /// A module's command (``ModuleCommand``), answered like any other.
    public init(_ command: ModuleCommand) {
        let run = command.run
        self.init(
            names: command.names, parameterSets: command.parameterSets,
            handler: .deferred { params throws(MIError) in try await run(params.fields) })
    }

    /// Binds named or positional `params` to one of the parameter sets.
    func bind(_ params: EventValue?) throws(MIError) -> MIParams {
        switch params {
        case nil:
            guard parameterSets.contains(where: \.isEmpty) else { throw .wrongParameterCount }
            return MIParams([])
        case .object(let fields)?:
            // Same names as one set, each once (checked only once the counts agree: a set is small).
            let matches = parameterSets.contains { set in
                set.count == fields.count && fields.allSatisfy { set.contains($0.name) }
            }
            let distinct = fields.indices.allSatisfy { index in
                !fields[..<index].contains { $0.name == fields[index].name }
            }
            let combination =
                !optional.isEmpty && parameterSets[0].allSatisfy { name in fields.contains { $0.name == name } }
                && fields.allSatisfy { parameterSets[0].contains($0.name) || optional.contains($0.name) }
            guard matches || combination, distinct else { throw .wrongParameterCount }
            return MIParams(fields)
        case .array(let values)?:
            guard let set = parameterSets.first(where: { $0.count == values.count }) else { throw .wrongParameterCount }
            return MIParams(zip(set, values).map { EventField($0, $1) })
        default:
            throw .invalidRequest
        }
    }
}
