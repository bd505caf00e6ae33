import EventInterface

/// The `event_flatstore` module options (Docs/sockets.md).
public struct FlatstoreOptions: Sendable, Hashable {
    public enum Format: String, Sendable, Hashable {
        /// The event name and parameter values joined by the delimiter, as OpenSIPS writes them.
        case opensips
        /// Each line is the JSON-RPC notification.
        case jsonl
    }

    public var delimiter = ","
    /// Written in place of a delimiter found inside a string value; same length as `delimiter`.
    public var escapeDelimiter = " "
    public var filePermissions: UInt32 = 0o644
    public var suppressEventName = false
    public var format = Format.opensips
    /// Open descriptors at most; one per distinct path however many subscriptions share it.
    public var maxOpenFiles = 100
    /// Rotate when the file would grow past this many bytes.
    public var rotateSize: Int?
    /// Rotate after this many lines.
    public var rotateCount: Int?
    /// Rotate at wall-clock multiples of this many seconds.
    public var rotatePeriod: Int?
    /// Rotated files kept (`PATH.1` … `PATH.N`).
    public var rotateKeep = 5
    /// When set, only files inside these absolute directories can be subscribed.
    public var allowedDirs: [String]?

    public init() {}

    /// Checks the options against each other; the message names the option.
    public func validate() throws(SocketError) {
        guard !delimiter.isEmpty else { throw SocketError("delimiter must not be empty") }
        guard escapeDelimiter.utf8.count == delimiter.utf8.count else {
            throw SocketError("escape_delimiter must be as long as delimiter ('\(delimiter)')")
        }
        guard filePermissions <= 0o777 else { throw SocketError("file_permissions must be octal, at most 777") }
        guard maxOpenFiles >= 1 else { throw SocketError("max_open_files must be at least 1") }
        guard rotateKeep >= 1 else { throw SocketError("rotate_keep must be at least 1") }
        if let rotateSize, rotateSize < 1 { throw SocketError("rotate_size must be positive") }
        if let rotateCount, rotateCount < 1 { throw SocketError("rotate_count must be positive") }
        if let rotatePeriod, rotatePeriod < 1 { throw SocketError("rotate_period must be positive") }
        for directory in allowedDirs ?? [] where !directory.hasPrefix("/") {
            throw SocketError("allowed_dirs entries must be absolute: \(directory)")
        }
    }

    /// `10m`, `512k`, `1g`, `1000`: bytes (``parseByteSize(_:)``).
    public static func parseSize(_ text: String) -> Int? { parseByteSize(text) }
}

/// One flatstore line per event (encoded once per event and shared by every flatstore
/// subscriber): the event name unless suppressed, then each parameter value, never its name.
struct FlatstoreLineFormat: PayloadFormat {
    // What the line depends on, and nothing else: files with other rotation options share it.
    let format: FlatstoreOptions.Format
    let suppressEventName: Bool
    let delimiter: String
    let escapeDelimiter: String

    init(options: FlatstoreOptions) {
        format = options.format
        suppressEventName = options.suppressEventName
        delimiter = options.delimiter
        escapeDelimiter = options.escapeDelimiter
    }

    func encode(_ event: RaisedEvent) -> [UInt8] {
        if format == .jsonl { return event.payload(.jsonRPC) + [UInt8(ascii: "\n")] }
        var fields: [String] = suppressEventName ? [] : [event.name]
        fields += event.params.values.map(text)
        var line = Array(fields.joined(separator: delimiter).utf8)
        line.append(UInt8(ascii: "\n"))
        return line
    }

    /// Integers in decimal, strings raw, null empty, other values as compact JSON; CR and LF
    /// written as `\r` and `\n` so every event stays on one line; the delimiter inside a string
    /// replaced by `escape_delimiter`.
    func text(_ value: EventValue) -> String {
        let raw: String
        switch value {
        case .string(let string): raw = string.replacingAll(delimiter, with: escapeDelimiter)
        case .int(let number): raw = String(number)
        case .null: raw = ""
        default: raw = value.jsonText
        }
        guard raw.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return raw }
        return raw.replacingAll("\r", with: "\\r").replacingAll("\n", with: "\\n")
    }
}

extension String {
    /// Every occurrence of `target` replaced, scanning by Unicode scalars (so `\r\n` is two).
    func replacingAll(_ target: String, with replacement: String) -> String {
        let scalars = Array(unicodeScalars)
        let pattern = Array(target.unicodeScalars)
        guard !pattern.isEmpty, scalars.count >= pattern.count else { return self }
        var result = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            if index + pattern.count <= scalars.count, Array(scalars[index..<index + pattern.count]) == pattern {
                result.append(contentsOf: replacement.unicodeScalars)
                index += pattern.count
            } else {
                result.append(scalars[index])
                index += 1
            }
        }
        return String(result)
    }
}
