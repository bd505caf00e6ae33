import EventInterface

/// `event_flatstore`: the `flatstore:` transport, `event_flatstore:rotate` (`evi_flat_rotate`),
/// and reopening every file on SIGHUP.
public struct FlatstoreModule: EventModule {
    public static let name = "event_flatstore"
    public let transport: FlatstoreTransport

    public init(options: FlatstoreOptions = FlatstoreOptions()) {
        transport = FlatstoreTransport(options: options)
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = FlatstoreOptions()
        let known = [
            "delimiter", "escape_delimiter", "file_permissions", "suppress_event_name", "format", "max_open_files",
            "rotate_size", "rotate_count", "rotate_period", "rotate_keep", "allowed_dirs",
        ]
        for entry in try section.entries(key: prefix, known: known) {
            let key = "\(prefix).\(entry.key)"
            let value = entry.value
            switch entry.key {
            case "delimiter": options.delimiter = try value.string(key: key)
            case "escape_delimiter": options.escapeDelimiter = try value.string(key: key)
            case "file_permissions":
                let text = try value.string(key: key)
                guard let mode = UInt32(text, radix: 8), mode <= 0o777 else {
                    throw ConfigurationError("\(key): expected octal permissions such as 644, got '\(text)'")
                }
                options.filePermissions = mode
            case "suppress_event_name": options.suppressEventName = try value.boolean(key: key)
            case "format":
                let text = try value.string(key: key)
                guard let format = FlatstoreOptions.Format(rawValue: text) else {
                    throw ConfigurationError("\(key): expected opensips or jsonl, got '\(text)'")
                }
                options.format = format
            case "max_open_files": options.maxOpenFiles = try value.integer(key: key, range: 1...100_000)
            case "rotate_size": options.rotateSize = value.isNull ? nil : try value.byteSize(key: key)
            case "rotate_count":
                options.rotateCount = value.isNull ? nil : try value.integer(key: key, range: 1...Int(Int32.max))
            case "rotate_period":
                options.rotatePeriod = value.isNull ? nil : try value.integer(key: key, range: 1...31_536_000)
            case "rotate_keep": options.rotateKeep = try value.integer(key: key, range: 1...10_000)
            default: options.allowedDirs = try value.optionalStrings(key: key)  // allowed_dirs
            }
        }
        do { try options.validate() } catch { throw ConfigurationError("\(prefix): \(error.message)") }
        self.init(options: options)
    }

    public static var defaultSection: [String] {
        let options = FlatstoreOptions()
        func optional(_ value: Int?) -> String { value.map(String.init) ?? "null" }
        return [
            #"delimiter: "\#(options.delimiter)""#,
            #"escape_delimiter: "\#(options.escapeDelimiter)"  # written for a delimiter inside a value; as long as it"#,
            #"file_permissions: "\#(String(options.filePermissions, radix: 8))""#,
            "suppress_event_name: \(options.suppressEventName)",
            "format: \(options.format.rawValue)  # or jsonl: each line the JSON-RPC notification",
            "max_open_files: \(options.maxOpenFiles)",
            "rotate_size: \(optional(options.rotateSize))  # e.g. 10m (k, m, g suffixes)",
            "rotate_count: \(optional(options.rotateCount))  # lines",
            "rotate_period: \(optional(options.rotatePeriod))  # seconds, at wall-clock multiples",
            "rotate_keep: \(options.rotateKeep)  # PATH.1 … PATH.N",
            "allowed_dirs: null  # e.g. [/var/log/evi]; required for flatstore over an exposed MI",
        ]
    }

    public var transports: [any EventTransport] { [transport] }

    public var commands: [ModuleCommand] {
        let transport = self.transport
        return [
            ModuleCommand(names: ["event_flatstore:rotate", "evi_flat_rotate"], parameterSets: [["path_to_file"]]) {
                params throws(CommandError) in
                guard case .string(let path)? = params.first(where: { $0.name == "path_to_file" })?.value else {
                    throw CommandError(
                        code: 400, message: "Bad parameter value", data: "path_to_file must be a string")
                }
                let found = await transport.onIOThread { (try? transport.rotate(path: path)) != nil }
                guard found else {
                    throw CommandError(
                        code: 400, message: "File not found", data: "no subscription writes \(path)")
                }
                return "OK"
            }
        ]
    }

    /// logrotate's "move, then signal": every file is reopened.
    public func hangup() async {
        let transport = self.transport
        await transport.onIOThread { transport.reopenAll() }
    }

    public func refusalOverExposedMI(_ socket: any EventSocket) -> String? {
        guard transport.options.allowedDirs == nil else { return nil }
        return "flatstore subscriptions over MI need event_flatstore.allowed_dirs when MI is not on loopback"
    }
}
