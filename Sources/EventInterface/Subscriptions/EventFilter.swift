/// A subscription filter (Docs/filters.md): conditions `NAME=GLOB` or `NAME!=GLOB` joined by `;`,
/// all of which must hold for the subscriber to be handed the event. EBR's key=value-with-glob,
/// extended with `!=`.
///
/// One escape rule for the whole text: a backslash makes the next character literal. It is
/// taken out of NAME; GLOB keeps it, so the glob matcher reads `\*` as a star and `\;` as a
/// semicolon, and `\\` as one backslash.
public struct EventFilter: Sendable, Hashable, CustomStringConvertible {
    public static let maximumBytes = 4096
    public static let maximumConditions = 64

    public struct Condition: Sendable, Hashable {
        /// A parameter name, or for positional parameters a 0-based index in digits.
        public let name: String
        /// `!=`: holds when the value does not match (and when the parameter is absent).
        public let negated: Bool
        public let glob: Glob
    }

    /// The text as given (what listings print and stores keep).
    public let text: String
    public let conditions: [Condition]

    public var description: String { text }

    /// Parses `text`; the error says which condition is wrong and why.
    public init(parsing text: String) throws(FilterError) {
        guard text.utf8.count <= Self.maximumBytes else {
            throw FilterError("filter longer than \(Self.maximumBytes) bytes (\(text.utf8.count))")
        }
        guard !text.isEmpty else { throw FilterError("empty filter") }
        var conditions: [Condition] = []
        for (position, part) in Self.split(Array(text.unicodeScalars)).enumerated() {
            guard conditions.count < Self.maximumConditions else {
                throw FilterError("more than \(Self.maximumConditions) conditions")
            }
            do throws(FilterError) {
                conditions.append(try Self.condition(part))
            } catch {
                throw FilterError(
                    "condition \(position + 1) ('\(String(String.UnicodeScalarView(part)))'): \(error.message)")
            }
        }
        self.text = text
        self.conditions = conditions
    }

    /// Whether every condition holds for `params`.
    public func matches(_ params: EventParams) -> Bool {
        for condition in conditions where !condition.holds(for: params) { return false }
        return true
    }

    /// The first `NAME=literal` condition (no glob character): subscribers are indexed by it, so a
    /// raise looks its value up instead of trying every filter.
    public var indexKey: (name: String, value: String)? {
        for condition in conditions where !condition.negated {
            if let literal = condition.glob.literal { return (condition.name, literal) }
        }
        return nil
    }

    /// Splits on unescaped `;`, escapes kept (the condition parser reads them).
    private static func split(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var parts: [[Unicode.Scalar]] = [[]]
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\\", index + 1 < scalars.count {
                parts[parts.count - 1] += [scalar, scalars[index + 1]]
                index += 2
                continue
            }
            if scalar == ";" { parts.append([]) } else { parts[parts.count - 1].append(scalar) }
            index += 1
        }
        return parts
    }

    private static func condition(_ scalars: [Unicode.Scalar]) throws(FilterError) -> Condition {
        guard !scalars.isEmpty else { throw FilterError("empty condition (two ';' in a row, or one at an end)") }
        var name = String.UnicodeScalarView()
        var index = 0
        var negated = false
        var found = false
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\\" {
                guard index + 1 < scalars.count else { throw FilterError("a '\\' ends the condition") }
                name.append(scalars[index + 1])
                index += 2
                continue
            }
            if scalar == "=" {
                found = true
                index += 1
                break
            }
            if scalar == "!" {
                guard index + 1 < scalars.count, scalars[index + 1] == "=" else {
                    throw FilterError("'!' in NAME must be escaped ('\\!'), or be followed by '=' ('NAME!=GLOB')")
                }
                negated = true
                found = true
                index += 2
                break
            }
            name.append(scalar)
            index += 1
        }
        guard found else { throw FilterError("no '=' or '!=' (conditions are NAME=GLOB or NAME!=GLOB)") }
        guard !name.isEmpty else { throw FilterError("empty NAME before '\(negated ? "!=" : "=")'") }
        let glob = try Glob(parsing: Array(scalars[index...]))
        return Condition(name: String(name), negated: negated, glob: glob)
    }
}

extension EventFilter.Condition {
    func holds(for params: EventParams) -> Bool {
        guard let value = params.value(forKey: name) else { return negated }
        let matched: Bool
        switch value {
        case .string(let text): matched = glob.matches(text)
        case .array, .object: matched = glob.matchesAnything
        default: matched = glob.matches(value.keyText)
        }
        return matched != negated
    }
}

/// What a filter's fault was, for the MI's `data` and the configuration's error.
public struct FilterError: Error, Sendable, Hashable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An fnmatch pattern without flags: `*` (any run), `?` (one character), `[…]` (one of, with
/// ranges, `!` or `^` to negate, `]` first to include it), `\` makes the next character literal.
/// Characters are Unicode scalars; matching runs over UTF-8 bytes, which allocates nothing.
public struct Glob: Sendable, Hashable {
    enum Token: Sendable, Hashable {
        case bytes([UInt8])
        case one
        case star
        case set(negated: Bool, ranges: [ClosedRange<UInt32>])
    }

    let tokens: [Token]
    /// The text it matches when it has no wildcard, else nil.
    public let literal: String?

    /// A pattern that is only stars: it matches any value, nested ones included.
    public var matchesAnything: Bool { !tokens.isEmpty && tokens.allSatisfy { $0 == .star } }

    public init(parsing text: String) throws(FilterError) {
        try self.init(parsing: Array(text.unicodeScalars))
    }

    init(parsing scalars: [Unicode.Scalar]) throws(FilterError) {
        var tokens: [Token] = []
        var literalText = String.UnicodeScalarView()
        var wild = false
        func appendLiteral(_ scalar: Unicode.Scalar) {
            literalText.append(scalar)
            let utf8 = Array(String(scalar).utf8)
            if case .bytes(let run)? = tokens.last {
                tokens[tokens.count - 1] = .bytes(run + utf8)
            } else {
                tokens.append(.bytes(utf8))
            }
        }
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            switch scalar {
            case "\\":
                guard index + 1 < scalars.count else { throw FilterError("a '\\' ends the GLOB") }
                appendLiteral(scalars[index + 1])
                index += 2
                continue
            case "*":
                wild = true
                if tokens.last != .star { tokens.append(.star) }
            case "?":
                wild = true
                tokens.append(.one)
            case "[":
                wild = true
                let (token, next) = try Self.set(scalars, from: index + 1)
                tokens.append(token)
                index = next
                continue
            default:
                appendLiteral(scalar)
            }
            index += 1
        }
        self.tokens = tokens
        self.literal = wild ? nil : String(literalText)
    }

    /// A bracket expression starting after `[`; returns the token and the index after `]`.
    private static func set(_ scalars: [Unicode.Scalar], from start: Int) throws(FilterError) -> (Token, Int) {
        var index = start
        var negated = false
        if index < scalars.count, scalars[index] == "!" || scalars[index] == "^" {
            negated = true
            index += 1
        }
        var ranges: [ClosedRange<UInt32>] = []
        var first = true
        func element() throws(FilterError) -> UInt32 {
            if scalars[index] == "\\" {
                guard index + 1 < scalars.count else { throw FilterError("a '\\' ends the GLOB") }
                index += 2
                return scalars[index - 1].value
            }
            index += 1
            return scalars[index - 1].value
        }
        while index < scalars.count {
            if scalars[index] == "]", !first { return (.set(negated: negated, ranges: ranges), index + 1) }
            first = false
            let low = try element()
            if index + 1 < scalars.count, scalars[index] == "-", scalars[index + 1] != "]" {
                index += 1
                let high = try element()
                guard low <= high else {
                    throw FilterError("range out of order in '[…]' (\(Unicode.Scalar(low).map(String.init) ?? "?")-…)")
                }
                ranges.append(low...high)
            } else {
                ranges.append(low...low)
            }
        }
        throw FilterError("'[' without its ']' (write '\\[' for a literal one)")
    }

    /// Whether `text` matches the whole pattern.
    public func matches(_ text: String) -> Bool {
        var copy = text
        return copy.withUTF8 { matches(utf8: $0) }
    }

    /// Iterative matching with one backtrack point (the last star): linear for literal runs,
    /// at worst length × pattern for stars, never exponential.
    func matches(utf8 text: UnsafeBufferPointer<UInt8>) -> Bool {
        var token = 0
        var position = 0
        var starToken = -1
        var starPosition = 0
        while true {
            if token < tokens.count {
                switch tokens[token] {
                case .star:
                    starToken = token
                    starPosition = position
                    token += 1
                    continue
                case .bytes(let run):
                    if Self.hasPrefix(text, at: position, run) {
                        position += run.count
                        token += 1
                        continue
                    }
                case .one:
                    if position < text.count {
                        position = Self.scalarEnd(text, at: position)
                        token += 1
                        continue
                    }
                case .set(let negated, let ranges):
                    if position < text.count {
                        let (scalar, end) = Self.scalar(text, at: position)
                        if ranges.contains(where: { $0.contains(scalar) }) != negated {
                            position = end
                            token += 1
                            continue
                        }
                    }
                }
            } else if position == text.count {
                return true
            }
            // Mismatch: let the last star take one more character, or fail.
            guard starToken >= 0, starPosition < text.count else { return false }
            starPosition = Self.scalarEnd(text, at: starPosition)
            position = starPosition
            token = starToken + 1
        }
    }

    private static func hasPrefix(_ text: UnsafeBufferPointer<UInt8>, at position: Int, _ run: [UInt8]) -> Bool {
        guard text.count - position >= run.count else { return false }
        for offset in run.indices where text[position + offset] != run[offset] { return false }
        return true
    }

    /// Where the scalar starting at `position` ends (valid UTF-8: Swift strings are).
    private static func scalarEnd(_ text: UnsafeBufferPointer<UInt8>, at position: Int) -> Int {
        var end = position + 1
        while end < text.count, text[end] & 0xC0 == 0x80 { end += 1 }
        return end
    }

    private static func scalar(_ text: UnsafeBufferPointer<UInt8>, at position: Int) -> (UInt32, Int) {
        let end = scalarEnd(text, at: position)
        let lead = UInt32(text[position])
        var value: UInt32
        switch end - position {
        case 1: return (lead, end)
        case 2: value = lead & 0x1F
        case 3: value = lead & 0x0F
        default: value = lead & 0x07
        }
        for index in (position + 1)..<end { value = value << 6 | UInt32(text[index] & 0x3F) }
        return (value, end)
    }
}

extension EventParams {
    /// The parameter `key` names: a named parameter by its name (case-sensitive), or, when the
    /// parameters are positional and `key` is all digits, the one at that 0-based index.
    public func value(forKey key: String) -> EventValue? {
        switch self {
        case .none: return nil
        case .named(let fields):
            for field in fields where field.name == key { return field.value }
            return nil
        case .positional(let values):
            guard !key.isEmpty, key.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let index = Int(key),
                values.indices.contains(index)
            else { return nil }
            return values[index]
        }
    }
}

extension EventValue {
    /// What HASH keys and filters compare: a string's own (decoded) text, any other value's JSON
    /// text as evi encodes it (`42`, `1.5`, `true`, `null`).
    public var keyText: String {
        if case .string(let text) = self { return text }
        var writer = JSONWriter(reservingCapacity: 24)
        writer.append(self)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
