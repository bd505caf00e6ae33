/// A configuration subtree as the file gave it, independent of the file format: what a module
/// reads its own section from (`modules.event_flatstore`), without depending on a YAML library.
public indirect enum ConfigurationNode: Sendable, Hashable {
    case null
    /// A scalar as written (`10m`, `true`, `127.0.0.1:8888`); its type is the reader's business.
    case scalar(String)
    case sequence([ConfigurationNode])
    /// Keys in file order; a key given twice is an error the reader reports.
    case mapping([ConfigurationEntry])

    public var isNull: Bool { self == .null }
}

public struct ConfigurationEntry: Sendable, Hashable {
    public var key: String
    public var value: ConfigurationNode

    public init(_ key: String, _ value: ConfigurationNode) {
        self.key = key
        self.value = value
    }
}

/// A start-up configuration problem: the message names the key and what is wrong with it.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }

    /// "unknown key 'quue_size' (did you mean 'queue_size'?)".
    public static func unknownKey(_ path: String, known: [String]) -> ConfigurationError {
        let name = String(path.split(separator: ".").last ?? "")
        var message = "unknown key '\(path)'"
        if let suggestion = closest(to: name, among: known) { message += " (did you mean '\(suggestion)'?)" }
        return ConfigurationError(message)
    }
}

/// Typed readers over a node, each error naming the key (`modules.event_stream.timeout: expected
/// a whole number from 1 to 600000, got 'soon'`). `key` is the full path of the node.
extension ConfigurationNode {
    /// The entries of a mapping (none for null); throws for another kind, for a key given twice,
    /// and — with `known` — for a key not in it, suggesting the nearest.
    /// The file's root is `key: ""` (named "top level" in messages).
    public func entries(key: String, known: [String]? = nil) throws(ConfigurationError) -> [ConfigurationEntry] {
        let name = key.isEmpty ? "top level" : key
        switch self {
        case .null: return []
        case .mapping(let entries):
            var seen = Set<String>()
            for entry in entries {
                guard seen.insert(entry.key).inserted else {
                    throw ConfigurationError("\(name): key '\(entry.key)' given twice")
                }
                if let known, !known.contains(entry.key) {
                    throw .unknownKey(key.isEmpty ? entry.key : "\(key).\(entry.key)", known: known)
                }
            }
            return entries
        default: throw ConfigurationError("\(name): expected a mapping")
        }
    }

    public func items(key: String) throws(ConfigurationError) -> [ConfigurationNode] {
        switch self {
        case .null: return []
        case .sequence(let items): return items
        default: throw ConfigurationError("\(key): expected a list")
        }
    }

    public func string(key: String) throws(ConfigurationError) -> String {
        guard case .scalar(let text) = self else { throw ConfigurationError("\(key): expected a string") }
        return text
    }

    /// A string, or nil for `null`.
    public func optionalString(key: String) throws(ConfigurationError) -> String? {
        isNull ? nil : try string(key: key)
    }

    /// A list of strings, or nil for `null`.
    public func optionalStrings(key: String) throws(ConfigurationError) -> [String]? {
        if isNull { return nil }
        var strings: [String] = []
        for item in try items(key: key) { strings.append(try item.string(key: "\(key)[]")) }
        return strings
    }

    public func boolean(key: String) throws(ConfigurationError) -> Bool {
        guard case .scalar(let text) = self else { throw ConfigurationError("\(key): expected true or false") }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigurationError("\(key): expected true or false, got '\(text)'")
        }
    }

    public func integer(key: String, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard case .scalar(let text) = self, let value = Int(text), range.contains(value) else {
            throw ConfigurationError(
                "\(key): expected a whole number from \(range.lowerBound) to \(range.upperBound), got '\(scalarText)'")
        }
        return value
    }

    public func number(key: String, range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard case .scalar(let text) = self, let value = Double(text), range.contains(value) else {
            throw ConfigurationError(
                "\(key): expected a number from \(Self.plain(range.lowerBound)) to \(Self.plain(range.upperBound)), got '\(scalarText)'"
            )
        }
        return value
    }

    /// Milliseconds as a whole number, as OpenSIPS' module timeouts are given.
    public func milliseconds(key: String, range: ClosedRange<Int> = 1...600_000) throws(ConfigurationError)
        -> Duration
    {
        .milliseconds(try integer(key: key, range: range))
    }

    /// `10m`, `512k`, `1g`, `1000` (``parseByteSize(_:)``), at least `minimum` bytes: a size
    /// below it is refused naming the minimum (`spool.max_bytes: at least 64k, got '4k'`).
    public func byteSize(key: String, minimum: Int = 1) throws(ConfigurationError) -> Int {
        let text = try string(key: key)
        guard let bytes = parseByteSize(text) else {
            throw ConfigurationError("\(key): expected a size such as 10m, 512k or 1000, got '\(text)'")
        }
        guard bytes >= minimum else {
            throw ConfigurationError("\(key): at least \(Self.size(minimum)), got '\(text)'")
        }
        return bytes
    }

    /// A size as a person writes it: `64k`, `1m`, `1000`.
    static func size(_ bytes: Int) -> String {
        for (suffix, unit) in [("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)] where bytes >= unit && bytes % unit == 0
        {
            return "\(bytes / unit)\(suffix)"
        }
        return String(bytes)
    }

    private var scalarText: String {
        if case .scalar(let text) = self { return text }
        return "?"
    }

    /// `0.0` as `0`, `3600.0` as `3600`: ranges in messages as a person writes them.
    private static func plain(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

/// The candidate nearest to `word` when it is near enough to be what was meant: at most a third
/// of its letters wrong (edits, Levenshtein), or a prefix of the candidate.
public func closest(to word: String, among candidates: [String]) -> String? {
    let word = Array(word.lowercased())
    var best: (candidate: String, distance: Int)?
    for candidate in candidates {
        let letters = Array(candidate.lowercased())
        let distance = letters.starts(with: word) && !word.isEmpty ? 0 : editDistance(word, letters)
        if distance <= max(1, letters.count / 3), distance < (best?.distance ?? .max) {
            best = (candidate, distance)
        }
    }
    return best?.candidate
}

private func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
            current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}

extension Duration {
    /// Whole milliseconds, as module timeouts are written in the configuration.
    public var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
