/// One parameter value, kept with its JSON type exactly.
///
/// OpenSIPS only knows strings and 32-bit integers and corrupts everything else on the way out;
/// evi keeps each JSON type so that what a subscriber decodes is what the producer raised.
public enum EventValue: Sendable, Hashable {
    /// About how many bytes the value takes (see ``EventParams/approximateSize``).
    public var approximateSize: Int {
        switch self {
        case .string(let text): text.utf8.count + 2
        case .int, .double: 20
        case .bool, .null: 5
        case .array(let items): items.reduce(2) { $0 + 1 + $1.approximateSize }
        case .object(let fields): fields.reduce(2) { $0 + $1.name.utf8.count + 4 + $1.value.approximateSize }
        }
    }

    case string(String)
    /// The full signed 64-bit range (OpenSIPS clamps to 32 bits).
    case int(Int64)
    /// A finite double; NaN and infinities have no JSON form and are written as `null`.
    case double(Double)
    case bool(Bool)
    case null
    case array([EventValue])
    /// An object, its members in the order given.
    case object([EventField])
}

/// A named value; used for named parameters and for members of nested objects, in order.
public struct EventField: Sendable, Hashable {
    public var name: String
    public var value: EventValue

    public init(_ name: String, _ value: EventValue) {
        self.name = name
        self.value = value
    }
}

/// The parameters of one raised event: none, all named (in order), or all positional.
public enum EventParams: Sendable, Hashable {
    case none
    case named([EventField])
    case positional([EventValue])

    /// About how many bytes the parameters take, for bounding queues in bytes: text lengths plus
    /// a few bytes a value (close to the JSON size, without encoding anything).
    public var approximateSize: Int {
        switch self {
        case .none: 0
        case .named(let fields): fields.reduce(0) { $0 + $1.name.utf8.count + 4 + $1.value.approximateSize }
        case .positional(let values): values.reduce(0) { $0 + 1 + $1.approximateSize }
        }
    }

    /// How many parameters there are.
    public var count: Int {
        switch self {
        case .none: 0
        case .named(let fields): fields.count
        case .positional(let values): values.count
        }
    }

    /// The values in order, without names.
    public var values: [EventValue] {
        switch self {
        case .none: []
        case .named(let fields): fields.map(\.value)
        case .positional(let values): values
        }
    }
}

extension EventValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral, ExpressibleByNilLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: EventValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, EventValue)...) {
        self = .object(elements.map { EventField($0.0, $0.1) })
    }
}

extension EventParams: ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    public init(arrayLiteral elements: EventValue...) {
        self = elements.isEmpty ? .none : .positional(elements)
    }
    /// Named parameters, in the order written (a Swift dictionary literal keeps its order here).
    public init(dictionaryLiteral elements: (String, EventValue)...) {
        guard !elements.isEmpty else {
            self = .none
            return
        }
        // Built with one allocation: `map` here grew its result while appending (scripts/profile).
        var fields: [EventField] = []
        fields.reserveCapacity(elements.count)
        for (name, value) in elements { fields.append(EventField(name, value)) }
        self = .named(fields)
    }
    public init(nilLiteral: ()) { self = .none }
}

extension EventParams {
    /// Parameters from a decoded JSON value: an object gives named parameters, an array positional
    /// ones; an empty object or array gives none. Any other value is not a parameter list.
    public init?(json value: EventValue) {
        switch value {
        case .object(let fields): self = fields.isEmpty ? .none : .named(fields)
        case .array(let values): self = values.isEmpty ? .none : .positional(values)
        default: return nil
        }
    }
}

/// `10m`, `512k`, `1g`, `1000`: bytes; nil for anything else, including a size too large to
/// count (`99999999999999g` is an error, not a trap).
public func parseByteSize(_ text: String) -> Int? {
    let lower = text.lowercased()
    let multipliers: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
    if let last = lower.last, let multiplier = multipliers[last] {
        guard let count = Int(lower.dropLast()) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }
    return Int(lower)
}
