import EventFlatstore
import EventInterface
import EventRabbitMQ
import EventStream
import EventXMLRPC
import Logging
import ManagementInterface
import Yams

#if canImport(Glibc)
    import Glibc
#endif

/// A start-up configuration problem: the message names the key and what is wrong with it.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }

    /// "unknown key 'quue_size' (did you mean 'queue_size'?)": the suggestion is the nearest key
    /// of the same mapping.
    static func unknownKey(_ path: String) -> ConfigurationError {
        let generic = path.replacing(/\[\d+\]/, with: "[]")
        let parent = generic.lastIndex(of: ".").map { String(generic[..<$0]) }
        let name = String(generic.split(separator: ".").last ?? "")
        let siblings = DaemonConfiguration.knownKeys.compactMap { key -> String? in
            let keyParent = key.lastIndex(of: ".").map { String(key[..<$0]) }
            guard keyParent == parent else { return nil }
            return String(key.split(separator: ".").last ?? "")
        }
        var message = "unknown key '\(path)'"
        if let suggestion = closest(to: name, among: siblings) { message += " (did you mean '\(suggestion)'?)" }
        return ConfigurationError(message)
    }
}

/// `HOST:PORT` a listener binds, or off.
struct ListenAddress: Equatable, CustomStringConvertible {
    var host: String
    var port: Int
    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether every address the host resolves to is a loopback one (127.0.0.0/8, ::1), decided
    /// on the addresses, not the name: `127.example.com` is not loopback, and a name that does
    /// not resolve is not either.
    var isLoopback: Bool {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            switch current.pointee.ai_family {
            case AF_INET:
                let address = current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt32(bigEndian: $0.pointee.sin_addr.s_addr)
                }
                guard address >> 24 == 127 else { return false }
            case AF_INET6:
                let bytes = current.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) }
                }
                guard bytes == [UInt8](repeating: 0, count: 15) + [1] else { return false }
            default: return false
            }
            entry = current.pointee.ai_next
        }
        return true
    }

    /// `HOST:PORT` or `[IPv6]:PORT`; port 0 asks the system for a free one.
    static func parse(_ text: String, key: String) throws -> ListenAddress {
        let failure = ConfigurationError("\(key): expected HOST:PORT or off, got '\(text)'")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else { throw failure }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace) else { throw failure }
        return ListenAddress(host: host, port: port)
    }
}

/// Everything `evi serve` runs with: built-in defaults (daemon.md), overridden by the YAML file.
struct DaemonConfiguration {
    struct Subscription {
        var event: String
        var socket: String
        /// `nil`: never expires.
        var expire: Int?
    }

    /// The modules this build has, as `modules:` names them.
    static let modules = [
        "event_virtual", "event_datagram", "event_flatstore", "event_stream", "event_xmlrpc", "event_rabbitmq",
    ]

    /// Every key the file may hold (a list's entries as `[]`), for "did you mean".
    static let knownKeys: [String] =
        [
            "mi", "state", "queue_size", "queue_bytes", "max_events", "max_subscriptions", "shutdown_grace",
            "log_level", "allowed_destinations", "events",
            "subscriptions", "modules", "mi.http", "mi.datagram", "mi.token", "mi.max_connections",
            "mi.header_timeout", "mi.idle_timeout", "subscriptions[].event",
            "subscriptions[].socket", "subscriptions[].expire", "modules.event_virtual.failover_timeout",
            "modules.event_rabbitmq.heartbeat", "modules.event_rabbitmq.timeout", "modules.event_rabbitmq.mandatory",
            "modules.event_datagram.allowed_dirs", "modules.event_xmlrpc.use_struct_param",
            "modules.event_xmlrpc.timeout",
            "modules.event_stream.reliable_mode", "modules.event_stream.timeout", "modules.event_stream.event_param",
        ]
        + [
            "delimiter", "escape_delimiter", "file_permissions", "suppress_event_name", "format", "max_open_files",
            "rotate_size", "rotate_count", "rotate_period", "rotate_keep", "allowed_dirs",
        ].map { "modules.event_flatstore.\($0)" }

    var miHTTP: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8888)
    var miDatagram: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8080)
    var token: String?
    var miLimits = MIConnectionLimits()
    /// Directory of subscriptions.sqlite, or "memory".
    var state = "./evi-state"
    var queueSize = 10_000
    var queueBytes = 16 << 20
    var maxEvents = 10_000
    var maxSubscriptions = 100_000
    var shutdownGrace = 5.0
    var logLevel = Logger.Level.info
    var allowedDestinations: [CIDR]?
    var events: [String] = []
    var subscriptions: [Subscription] = []
    var failoverTimeout = 30.0
    var flatstore = FlatstoreOptions()
    /// `modules.event_datagram.allowed_dirs`: where unix sockets may point.
    var unixAllowedDirs: [String]?
    var stream = StreamOptions()
    var xmlrpc = XMLRPCOptions()
    var rabbitmq = RabbitMQOptions()

    /// `state` made absolute against `directory` ("memory" and absolute paths stay), with `.`
    /// components and a trailing `/` removed, so the start line prints where state really is.
    static func resolve(state: String, relativeTo directory: String) -> String {
        guard state != "memory" else { return state }
        let joined = state.hasPrefix("/") ? state : directory + "/" + state
        var parts: [Substring] = []
        for part in joined.split(separator: "/") where part != "." {
            if part == ".." { if !parts.isEmpty { parts.removeLast() } } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Reads a configuration file; unknown keys and bad values are errors naming them.
    static func load(yaml text: String) throws -> DaemonConfiguration {
        var configuration = DaemonConfiguration()
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError("not valid YAML: \(error)")
        }
        guard let root else { return configuration }
        let top = try mapping(root, key: "top level")
        for (key, value) in top {
            switch key {
            case "mi": try configuration.readMI(value)
            case "state":
                configuration.state = try string(value, key: "state")
            case "queue_size":
                configuration.queueSize = try integer(value, key: "queue_size", range: 1...10_000_000)
            case "queue_bytes":
                let text = try string(value, key: "queue_bytes")
                guard let bytes = parseByteSize(text), bytes >= 1024 else {
                    throw ConfigurationError(
                        "queue_bytes: expected a size of at least 1k such as 16m, 512k or 1g, got '\(text)'")
                }
                configuration.queueBytes = bytes
            case "max_events":
                configuration.maxEvents = try integer(value, key: "max_events", range: 1...10_000_000)
            case "max_subscriptions":
                configuration.maxSubscriptions = try integer(value, key: "max_subscriptions", range: 1...10_000_000)
            case "shutdown_grace":
                configuration.shutdownGrace = try number(value, key: "shutdown_grace", range: 0...3600)
            case "log_level":
                let level = try string(value, key: "log_level")
                guard let parsed = Logger.Level(rawValue: level) else {
                    throw ConfigurationError(
                        "log_level: expected trace, debug, info, notice, warning, error or critical, got '\(level)'")
                }
                configuration.logLevel = parsed
            case "allowed_destinations":
                if isNull(value) {
                    configuration.allowedDestinations = nil
                } else {
                    configuration.allowedDestinations = try sequence(value, key: key).map {
                        let text = try string($0, key: "allowed_destinations[]")
                        guard let network = CIDR(text) else {
                            throw ConfigurationError(
                                "allowed_destinations: '\(text)' is not a CIDR such as 127.0.0.0/8")
                        }
                        return network
                    }
                }
            case "events":
                configuration.events = try sequence(value, key: key).map { try string($0, key: "events[]") }
                for name in configuration.events where !Event.isValidName(name) {
                    throw ConfigurationError("events: invalid event name '\(name)'")
                }
            case "subscriptions": try configuration.readSubscriptions(value)
            case "modules": try configuration.readModules(value)
            default: throw ConfigurationError.unknownKey("\(key)")
            }
        }
        return configuration
    }

    private mutating func readMI(_ node: Node) throws {
        for (key, value) in try Self.mapping(node, key: "mi") {
            switch key {
            case "http": miHTTP = try Self.listenAddress(value, key: "mi.http")
            case "datagram": miDatagram = try Self.listenAddress(value, key: "mi.datagram")
            case "token":
                token = Self.isNull(value) ? nil : try Self.string(value, key: "mi.token")
                if token?.isEmpty == true { throw ConfigurationError("mi.token must not be empty") }
            case "max_connections":
                miLimits.maxConnections = try Self.integer(value, key: "mi.max_connections", range: 1...1_000_000)
            case "header_timeout":
                miLimits.headerTimeout = .milliseconds(
                    Int64(try Self.number(value, key: "mi.header_timeout", range: 0.01...3600) * 1000))
            case "idle_timeout":
                miLimits.idleTimeout = .milliseconds(
                    Int64(try Self.number(value, key: "mi.idle_timeout", range: 0.01...86_400) * 1000))
            default: throw ConfigurationError.unknownKey("mi.\(key)")
            }
        }
    }

    private mutating func readSubscriptions(_ node: Node) throws {
        for (index, entry) in try Self.sequence(node, key: "subscriptions").enumerated() {
            let prefix = "subscriptions[\(index)]"
            var event: String?
            var socket: String?
            var expire: Int?
            for (key, value) in try Self.mapping(entry, key: prefix) {
                switch key {
                case "event": event = try Self.string(value, key: "\(prefix).event")
                case "socket": socket = try Self.string(value, key: "\(prefix).socket")
                case "expire": expire = try Self.integer(value, key: "\(prefix).expire", range: 1...Int(Int32.max))
                default: throw ConfigurationError.unknownKey("\(prefix).\(key)")
                }
            }
            guard let event else { throw ConfigurationError("\(prefix): missing key 'event'") }
            guard let socket else { throw ConfigurationError("\(prefix): missing key 'socket'") }
            subscriptions.append(Subscription(event: event, socket: socket, expire: expire))
        }
    }

    private mutating func readModules(_ node: Node) throws {
        for (module, options) in try Self.mapping(node, key: "modules") {
            switch module {
            case "event_virtual":
                for (key, value) in try Self.mapping(options, key: "modules.event_virtual") {
                    switch key {
                    case "failover_timeout":
                        failoverTimeout = try Self.number(
                            value, key: "modules.event_virtual.failover_timeout", range: 0...86_400)
                    default: throw ConfigurationError.unknownKey("modules.event_virtual.\(key)")
                    }
                }
            case "event_flatstore":
                try readFlatstore(options)
            case "event_rabbitmq":
                for (key, value) in try Self.mapping(options, key: "modules.event_rabbitmq") {
                    let name = "modules.event_rabbitmq.\(key)"
                    switch key {
                    case "heartbeat": rabbitmq.heartbeat = UInt16(try Self.integer(value, key: name, range: 0...3600))
                    case "timeout":
                        rabbitmq.timeout = .milliseconds(try Self.integer(value, key: name, range: 1...600_000))
                    case "mandatory":
                        let text = try Self.string(value, key: name)
                        guard let mandatory = RabbitMQOptions.Mandatory(rawValue: text.lowercased()) else {
                            throw ConfigurationError("\(name): expected auto, true or false, got '\(text)'")
                        }
                        rabbitmq.mandatory = mandatory
                    default: throw ConfigurationError.unknownKey("\(name)")
                    }
                }
            case "event_xmlrpc":
                for (key, value) in try Self.mapping(options, key: "modules.event_xmlrpc") {
                    let name = "modules.event_xmlrpc.\(key)"
                    switch key {
                    case "use_struct_param": xmlrpc.useStructParam = try Self.boolean(value, key: name)
                    case "timeout":
                        xmlrpc.timeout = .milliseconds(try Self.integer(value, key: name, range: 1...600_000))
                    default: throw ConfigurationError.unknownKey("\(name)")
                    }
                }
            case "event_stream":
                for (key, value) in try Self.mapping(options, key: "modules.event_stream") {
                    let name = "modules.event_stream.\(key)"
                    switch key {
                    case "reliable_mode": stream.reliableMode = try Self.boolean(value, key: name)
                    case "timeout":
                        stream.timeout = .milliseconds(try Self.integer(value, key: name, range: 1...600_000))
                    case "event_param":
                        stream.eventParam = Self.isNull(value) ? nil : try Self.string(value, key: name)
                    default: throw ConfigurationError.unknownKey("\(name)")
                    }
                }
            case "event_datagram":
                for (key, value) in try Self.mapping(options, key: "modules.event_datagram") {
                    let name = "modules.event_datagram.\(key)"
                    switch key {
                    case "allowed_dirs":
                        unixAllowedDirs =
                            Self.isNull(value)
                            ? nil
                            : try Self.sequence(value, key: name).map {
                                try Self.string($0, key: "\(name)[]")
                            }
                        for directory in unixAllowedDirs ?? [] where !directory.hasPrefix("/") {
                            throw ConfigurationError("\(name): entries must be absolute: \(directory)")
                        }
                    default: throw ConfigurationError.unknownKey(name)
                    }
                }
            default:
                var message = "unknown module 'modules.\(module)'"
                if let suggestion = closest(to: module, among: DaemonConfiguration.modules) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                throw ConfigurationError(
                    message + " (this build has \(DaemonConfiguration.modules.joined(separator: ", ")))")
            }
        }
    }

    private mutating func readFlatstore(_ node: Node) throws {
        let prefix = "modules.event_flatstore"
        for (key, value) in try Self.mapping(node, key: prefix) {
            let name = "\(prefix).\(key)"
            switch key {
            case "delimiter": flatstore.delimiter = try Self.string(value, key: name)
            case "escape_delimiter": flatstore.escapeDelimiter = try Self.string(value, key: name)
            case "file_permissions":
                let text = try Self.string(value, key: name)
                guard let mode = UInt32(text, radix: 8), mode <= 0o777 else {
                    throw ConfigurationError("\(name): expected octal permissions such as 644, got '\(text)'")
                }
                flatstore.filePermissions = mode
            case "suppress_event_name": flatstore.suppressEventName = try Self.boolean(value, key: name)
            case "format":
                let text = try Self.string(value, key: name)
                guard let format = FlatstoreOptions.Format(rawValue: text) else {
                    throw ConfigurationError("\(name): expected opensips or jsonl, got '\(text)'")
                }
                flatstore.format = format
            case "max_open_files": flatstore.maxOpenFiles = try Self.integer(value, key: name, range: 1...100_000)
            case "rotate_size" where Self.isNull(value): flatstore.rotateSize = nil
            case "rotate_count" where Self.isNull(value): flatstore.rotateCount = nil
            case "rotate_period" where Self.isNull(value): flatstore.rotatePeriod = nil
            case "rotate_size":
                let text = try Self.string(value, key: name)
                guard let size = FlatstoreOptions.parseSize(text), size > 0 else {
                    throw ConfigurationError("\(name): expected a size such as 10m, 512k or 1000, got '\(text)'")
                }
                flatstore.rotateSize = size
            case "rotate_count": flatstore.rotateCount = try Self.integer(value, key: name, range: 1...Int(Int32.max))
            case "rotate_period": flatstore.rotatePeriod = try Self.integer(value, key: name, range: 1...31_536_000)
            case "rotate_keep": flatstore.rotateKeep = try Self.integer(value, key: name, range: 1...10_000)
            case "allowed_dirs":
                flatstore.allowedDirs =
                    Self.isNull(value)
                    ? nil
                    : try Self.sequence(value, key: name).map {
                        try Self.string($0, key: "\(name)[]")
                    }
            default: throw ConfigurationError.unknownKey("\(name)")
            }
        }
        do { try flatstore.validate() } catch { throw ConfigurationError("\(prefix): \(error.message)") }
    }

    // MARK: Node readers

    private static func boolean(_ node: Node, key: String) throws -> Bool {
        guard case .scalar = node, let text = node.string?.lowercased() else {
            throw ConfigurationError("\(key): expected true or false")
        }
        switch text {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigurationError("\(key): expected true or false, got '\(text)'")
        }
    }

    private static func mapping(_ node: Node, key: String) throws -> [(String, Node)] {
        if isNull(node) { return [] }
        guard case .mapping(let mapping) = node else { throw ConfigurationError("\(key): expected a mapping") }
        var seen = Set<String>()
        return try mapping.map { pair in
            guard let name = pair.key.string else { throw ConfigurationError("\(key): keys must be strings") }
            guard seen.insert(name).inserted else { throw ConfigurationError("\(key): key '\(name)' given twice") }
            return (name, pair.value)
        }
    }

    private static func sequence(_ node: Node, key: String) throws -> [Node] {
        if isNull(node) { return [] }
        guard case .sequence(let sequence) = node else { throw ConfigurationError("\(key): expected a list") }
        return Array(sequence)
    }

    private static func isNull(_ node: Node) -> Bool {
        if case .scalar = node, node.null != nil { return true }
        return false
    }

    private static func string(_ node: Node, key: String) throws -> String {
        guard case .scalar = node, let text = node.string else { throw ConfigurationError("\(key): expected a string") }
        return text
    }

    private static func integer(_ node: Node, key: String, range: ClosedRange<Int>) throws -> Int {
        guard case .scalar = node, let text = node.string, let value = Int(text), range.contains(value) else {
            throw ConfigurationError(
                "\(key): expected a whole number from \(range.lowerBound) to \(range.upperBound), got '\(node.string ?? "?")'"
            )
        }
        return value
    }

    private static func number(_ node: Node, key: String, range: ClosedRange<Double>) throws -> Double {
        guard case .scalar = node, let text = node.string, let value = Double(text), range.contains(value) else {
            throw ConfigurationError(
                "\(key): expected a number from \(range.lowerBound) to \(range.upperBound), got '\(node.string ?? "?")'"
            )
        }
        return value
    }

    private static func listenAddress(_ node: Node, key: String) throws -> ListenAddress? {
        let text = try string(node, key: key)
        if text == "off" { return nil }
        return try ListenAddress.parse(text, key: key)
    }
}
