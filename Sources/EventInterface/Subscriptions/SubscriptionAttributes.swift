/// What a subscription may say beyond its event, socket and expiry (Docs/filters.md): which
/// events it wants (`filter`) and which parameters of them (`fields`). The identity of a
/// subscription stays (event, socket): subscribing again replaces these as it replaces the expiry.
public struct SubscriptionAttributes: Sendable, Hashable {
    public var filter: EventFilter?
    /// The named parameters the subscriber's payload carries, in this order (absent ones left
    /// out); nil: all of them.
    public var fields: [String]?

    public static let maximumFields = 64

    public init(filter: EventFilter? = nil, fields: [String]? = nil) {
        self.filter = filter
        self.fields = fields
    }

    public static let none = SubscriptionAttributes()

    public var isEmpty: Bool { filter == nil && fields == nil }

    /// `fields` as the MI and the command line write them: names separated by commas, no
    /// spaces trimmed; `""` is none.
    public static func fields(parsing text: String) throws(FilterError) -> [String]? {
        guard !text.isEmpty else { return nil }
        return try fields(text.split(separator: ",", omittingEmptySubsequences: false).map(String.init))
    }

    /// Checks a list of field names: 1–64 of them, each non-empty and without a comma, no repeats.
    public static func fields(_ names: [String]) throws(FilterError) -> [String]? {
        guard !names.isEmpty else { return nil }
        guard names.count <= maximumFields else { throw FilterError("more than \(maximumFields) fields") }
        for (index, name) in names.enumerated() {
            guard !name.isEmpty else { throw FilterError("field \(index + 1) is empty") }
            guard !name.contains(",") else { throw FilterError("field \(index + 1) ('\(name)') contains ','") }
            guard name.utf8.count <= 256 else { throw FilterError("field \(index + 1) is longer than 256 bytes") }
            guard !names[..<index].contains(name) else { throw FilterError("field '\(name)' is listed twice") }
        }
        return names
    }

    /// The JSON object stores keep (`{"filter":"…","fields":["a"]}`), nil when there is nothing
    /// to keep. Keys a later version adds are kept by that version; this one refuses what it
    /// cannot read rather than drop it.
    public var storedJSON: String? {
        var members: [EventField] = []
        if let filter { members.append(EventField("filter", .string(filter.text))) }
        if let fields { members.append(EventField("fields", .array(fields.map(EventValue.string)))) }
        guard !members.isEmpty else { return nil }
        var writer = JSONWriter()
        writer.append(.object(members))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// Reads ``storedJSON`` back; the error names what is wrong with it.
    public init(storedJSON text: String) throws(FilterError) {
        guard case .object(let members)? = try? EventValue(json: text) else {
            throw FilterError("stored attributes are not a JSON object: \(text.prefix(80))")
        }
        self.init()
        for member in members {
            switch (member.name, member.value) {
            case ("filter", .string(let filter)): self.filter = try EventFilter(parsing: filter)
            case ("fields", .array(let values)):
                let names = values.compactMap { value -> String? in
                    if case .string(let name) = value { return name }
                    return nil
                }
                guard names.count == values.count else { throw FilterError("stored fields are not all strings") }
                self.fields = try Self.fields(names)
            default: throw FilterError("stored attribute '\(member.name)' is not known to this version")
            }
        }
    }
}

extension EventParams {
    /// Only the parameters `names` lists, in that order; absent ones left out. Positional
    /// parameters are selected by index (names in digits).
    public func selecting(_ names: [String]) -> EventParams {
        switch self {
        case .none: return .none
        case .named(let fields):
            var selected: [EventField] = []
            for name in names {
                if let field = fields.first(where: { $0.name == name }) { selected.append(field) }
            }
            return selected.isEmpty ? .none : .named(selected)
        case .positional:
            let selected = names.compactMap { value(forKey: $0) }
            return selected.isEmpty ? .none : .positional(selected)
        }
    }
}
