import EventCluster
import EventInterface
import EviModules
import Logging
import ManagementInterface
import Yams

#if canImport(Glibc)
    import Glibc
#endif

/// Everything `evi serve` runs with: built-in defaults, overridden by the YAML file. The daemon's
/// own keys are read here; each module reads its own section (`EventModule`).
package struct DaemonConfiguration {
    package struct Subscription {
        package var event: String
        package var socket: String
        /// `nil`: never expires.
        package var expire: Int?
        /// `nil`: the event's (or the top-level) `delivery`.
        package var delivery: DeliveryMode?
        /// Keys a module adds (the webhook `secret`), for that module to read.
        package var moduleKeys: [ConfigurationEntry] = []
        /// `filter` and `fields` (Docs/filters.md).
        package var attributes = SubscriptionAttributes.none
    }

    /// The `spool:` section (durable delivery). `dir` nil: `<state>/spool`.
    package struct SpoolSection {
        package var dir: String?
        package var maxBytes = 1 << 30
        package var maxTotalBytes = 10 << 30
        package var maxAge = 86_400.0
        package var retryMin = 1.0
        package var retryMax = 60.0
        package var fsyncIntervalMs = 5
        package var fsyncAlways = false
        package var idParam: String?
    }
    package static let spoolKeys = [
        "dir", "max_bytes", "max_total_bytes", "max_age", "retry_min", "retry_max", "fsync_interval_ms", "fsync",
        "id_param",
    ]

    /// The top-level keys, for "did you mean".
    package static let topLevelKeys = [
        "mi", "state", "queue_size", "queue_bytes", "max_events", "max_subscriptions", "shutdown_grace", "log_level",
        "allowed_destinations", "events", "subscriptions", "ingress", "modules", "delivery", "spool", "cluster",
    ]
    package static let miKeys = [
        "http", "datagram", "token", "max_connections", "header_timeout", "idle_timeout", "max_stream_clients",
        "max_stream_bytes", "allowed_hosts",
    ]

    package var miHTTP: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8888)
    package var miDatagram: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8080)
    package var token: String?
    package var miLimits = MIConnectionLimits()
    /// Directory of subscriptions.sqlite, or "memory".
    package var state = "./evi-state"
    package var queueSize = 10_000
    package var queueBytes = 16 << 20
    package var maxEvents = 10_000
    package var maxSubscriptions = 100_000
    package var shutdownGrace = 5.0
    package var logLevel = Logger.Level.info
    package var allowedDestinations: [CIDR]?
    package var events: [String] = []
    /// `events:` items given as `{name, delivery}`.
    package var eventDelivery: [String: DeliveryMode] = [:]
    package var subscriptions: [Subscription] = []
    /// How subscriptions keep their events (`delivery:`), unless their event or they say otherwise.
    package var delivery = DeliveryMode.memory
    package var spool = SpoolSection()

    /// Whether anything is delivered durably: then a spool is needed.
    package var usesDurableDelivery: Bool {
        delivery == .durable || eventDelivery.values.contains(.durable)
            || subscriptions.contains { $0.delivery == .durable }
    }

    /// Where the spool lives: `spool.dir`, else `<state>/spool` when state is a directory.
    /// `state: postgres://…`: the cluster's shared store.
    package var postgres: PostgresURL?
    /// `state` as printed: a postgres URL without its password.
    package var printedState: String { postgres?.description ?? state }
    /// `cluster.node`: this daemon's name among the cluster's (default `HOST:MIPORT`).
    package var clusterNode: String?
    /// `cluster.store_secrets`: `refuse` (a socket carrying a secret is stored only over a
    /// connection that is certainly encrypted) or `plaintext`.
    package var storeSecrets: ClusterStore.StoreSecrets = .refuse
    package var spoolDirectory: String? {
        spool.dir ?? (state == "memory" || state.contains("://") ? nil : state + "/spool")
    }
    /// Where evi takes events in (`ingress:`).
    package var ingress: [IngressSettings] = []
    /// The modules this daemon composes (``BuiltInModules/all`` unless a test or an embedder
    /// chooses others), in the order `modules:` lists them.
    package let moduleTypes: [any EventModule.Type]
    /// Every module, configured (by its defaults when the file does not name it).
    package var modules: [any EventModule]

    /// The built-in configuration. A module whose defaults cannot be made (its TLS defaults fail
    /// to load) stops start-up with the reason rather than vanishing.
    package init(modules moduleTypes: [any EventModule.Type] = BuiltInModules.all) throws(ConfigurationError) {
        self.moduleTypes = moduleTypes
        var modules: [any EventModule] = []
        for type in moduleTypes {
            do throws(ConfigurationError) { modules.append(try type.init(section: .null)) } catch {
                throw ConfigurationError("modules.\(type.name): its defaults cannot be used: \(error)")
            }
        }
        self.modules = modules
    }

    /// The module whose scheme list has `socket`'s scheme, with its type.
    package func ingressModule(for socket: String) -> (any EventModule)? {
        let scheme = String(socket.prefix { $0 != ":" })
        return modules.first { type(of: $0).ingressSchemes.contains(scheme) }
    }

    /// `state` made absolute against `directory` ("memory", URLs and absolute paths stay), with
    /// `.` components and a trailing `/` removed, so the start line prints where state really is.
    package static func resolve(state: String, relativeTo directory: String) -> String {
        guard state != "memory", !state.contains("://") else { return state }
        let joined = state.hasPrefix("/") ? state : directory + "/" + state
        var parts: [Substring] = []
        for part in joined.split(separator: "/") where part != "." {
            if part == ".." { if !parts.isEmpty { parts.removeLast() } } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Reads a configuration file; unknown keys and bad values are errors naming them.
    package static func load(
        yaml text: String, modules: [any EventModule.Type] = BuiltInModules.all
    ) throws(ConfigurationError) -> DaemonConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError("not valid YAML: \(error)")
        }
        return try read(root.map(ConfigurationNode.init) ?? .null, modules: modules)
    }

    package static func read(
        _ root: ConfigurationNode, modules: [any EventModule.Type] = BuiltInModules.all
    ) throws(ConfigurationError) -> DaemonConfiguration {
        var configuration = try DaemonConfiguration(modules: modules)
        for entry in try root.entries(key: "", known: topLevelKeys) {
            let key = entry.key
            let value = entry.value
            switch key {
            case "mi": try configuration.readMI(value)
            case "state":
                configuration.state = try value.string(key: key)
                if configuration.state.contains("://") {
                    configuration.postgres = try PostgresURL.parse(
                        configuration.state, environment: ProcessEnvironment.current())
                }
            case "cluster":
                for entry in try value.entries(key: "cluster", known: ["node", "store_secrets"]) {
                    if entry.key == "node" {
                        configuration.clusterNode = try entry.value.optionalString(key: "cluster.node")
                    } else {
                        let text = try entry.value.string(key: "cluster.store_secrets")
                        guard let parsed = ClusterStore.StoreSecrets(rawValue: text) else {
                            throw ConfigurationError(
                                "cluster.store_secrets: expected refuse or plaintext, got '\(text)'")
                        }
                        configuration.storeSecrets = parsed
                    }
                }
            case "queue_size": configuration.queueSize = try value.integer(key: key, range: 1...10_000_000)
            case "queue_bytes":
                configuration.queueBytes = try value.byteSize(key: key, minimum: 1 << 10)
            case "max_events": configuration.maxEvents = try value.integer(key: key, range: 1...10_000_000)
            case "max_subscriptions":
                configuration.maxSubscriptions = try value.integer(key: key, range: 1...10_000_000)
            case "shutdown_grace": configuration.shutdownGrace = try value.number(key: key, range: 0...3600)
            case "log_level":
                let level = try value.string(key: key)
                guard let parsed = Logger.Level(rawValue: level) else {
                    throw ConfigurationError(
                        "log_level: expected trace, debug, info, notice, warning, error or critical, got '\(level)'")
                }
                configuration.logLevel = parsed
            case "allowed_destinations":
                configuration.allowedDestinations = try value.optionalStrings(key: key)?.map {
                    text throws(ConfigurationError) in
                    guard let network = CIDR(text) else {
                        throw ConfigurationError("allowed_destinations: '\(text)' is not a CIDR such as 127.0.0.0/8")
                    }
                    return network
                }
            case "events": try configuration.readEvents(value)
            case "delivery": configuration.delivery = try Self.deliveryMode(value, key: key)
            case "spool": try configuration.readSpool(value)
            case "subscriptions": try configuration.readSubscriptions(value)
            case "ingress": try configuration.readIngress(value)
            default: try configuration.readModules(value)  // modules
            }
        }
        try configuration.applySubscriptionKeys()
        return configuration
    }

    /// Hands each subscription's module keys (`secret`) to the modules that define them, once
    /// every module has read its own section.
    private func applySubscriptionKeys() throws(ConfigurationError) {
        for (index, subscription) in subscriptions.enumerated() where !subscription.moduleKeys.isEmpty {
            for module in modules {
                let keys = type(of: module).subscriptionKeys
                let mine = subscription.moduleKeys.filter { keys.contains($0.key) }
                guard !mine.isEmpty else { continue }
                try module.applySubscriptionKeys(mine, socket: subscription.socket, key: "subscriptions[\(index)]")
            }
        }
    }

    private mutating func readMI(_ node: ConfigurationNode) throws(ConfigurationError) {
        for entry in try node.entries(key: "mi", known: Self.miKeys) {
            let key = "mi.\(entry.key)"
            let value = entry.value
            switch entry.key {
            case "http": miHTTP = try Self.listenAddress(value, key: key)
            case "datagram": miDatagram = try Self.listenAddress(value, key: key)
            case "token":
                token = try value.optionalString(key: key)
                if token?.isEmpty == true { throw ConfigurationError("mi.token must not be empty") }
            case "max_connections": miLimits.maxConnections = try value.integer(key: key, range: 1...1_000_000)
            case "max_stream_clients": miLimits.maxStreamClients = try value.integer(key: key, range: 0...1_000_000)
            case "max_stream_bytes": miLimits.maxStreamBytes = try value.byteSize(key: key, minimum: 1 << 20)
            case "allowed_hosts":
                miLimits.allowedHosts =
                    try value.optionalStrings(key: key)?.map { text throws(ConfigurationError) in
                        guard !text.isEmpty, !text.contains(where: { $0 == "/" || $0 == " " || $0 == "," }) else {
                            throw ConfigurationError("mi.allowed_hosts: '\(text)' is not a host name or address")
                        }
                        return text
                    } ?? []
            case "header_timeout":
                miLimits.headerTimeout = .milliseconds(Int64(try value.number(key: key, range: 0.01...3600) * 1000))
            default:  // idle_timeout
                miLimits.idleTimeout = .milliseconds(Int64(try value.number(key: key, range: 0.01...86_400) * 1000))
            }
        }
    }

    /// `events:` items: a name, or `{name, delivery}`.
    private mutating func readEvents(_ node: ConfigurationNode) throws(ConfigurationError) {
        for (index, item) in try node.items(key: "events").enumerated() {
            let name: String
            if case .scalar(let text) = item {
                name = text
            } else {
                var given: String?
                var mode: DeliveryMode?
                for entry in try item.entries(key: "events[\(index)]", known: ["name", "delivery"]) {
                    let key = "events[\(index)].\(entry.key)"
                    if entry.key == "name" {
                        given = try entry.value.string(key: key)
                    } else {
                        mode = try Self.deliveryMode(entry.value, key: key)
                    }
                }
                guard let given else { throw ConfigurationError("events[\(index)]: missing key 'name'") }
                if let mode { eventDelivery[given] = mode }
                name = given
            }
            guard Event.isValidName(name) else { throw ConfigurationError("events: invalid event name '\(name)'") }
            events.append(name)
        }
    }

    package static func deliveryMode(_ node: ConfigurationNode, key: String) throws(ConfigurationError) -> DeliveryMode
    {
        let text = try node.string(key: key)
        guard let mode = DeliveryMode(rawValue: text) else {
            throw ConfigurationError("\(key): expected memory or durable, got '\(text)'")
        }
        return mode
    }

    private mutating func readSpool(_ node: ConfigurationNode) throws(ConfigurationError) {
        for entry in try node.entries(key: "spool", known: Self.spoolKeys) {
            let key = "spool.\(entry.key)"
            let value = entry.value
            switch entry.key {
            case "dir": spool.dir = try value.optionalString(key: key)
            case "max_bytes": spool.maxBytes = try value.byteSize(key: key, minimum: 64 << 10)
            case "max_total_bytes": spool.maxTotalBytes = try value.byteSize(key: key, minimum: 64 << 10)
            case "max_age": spool.maxAge = try value.number(key: key, range: 1...31_536_000)
            case "retry_min": spool.retryMin = try value.number(key: key, range: 0.01...3600)
            case "retry_max": spool.retryMax = try value.number(key: key, range: 0.01...86_400)
            case "fsync_interval_ms": spool.fsyncIntervalMs = try value.integer(key: key, range: 1...60_000)
            case "fsync":
                let text = try value.string(key: key)
                guard ["interval", "always"].contains(text) else {
                    throw ConfigurationError("\(key): expected interval or always, got '\(text)'")
                }
                spool.fsyncAlways = text == "always"
            default:  // id_param
                spool.idParam = try value.optionalString(key: key)
                if spool.idParam?.isEmpty == true { throw ConfigurationError("\(key) must not be empty") }
            }
        }
        if spool.retryMax < spool.retryMin {
            throw ConfigurationError(
                "spool.retry_max (\(spool.retryMax)) is less than spool.retry_min (\(spool.retryMin))")
        }
    }

    private mutating func readSubscriptions(_ node: ConfigurationNode) throws(ConfigurationError) {
        for (index, item) in try node.items(key: "subscriptions").enumerated() {
            let prefix = "subscriptions[\(index)]"
            var event: String?
            var socket: String?
            var expire: Int?
            var delivery: DeliveryMode?
            var moduleKeys: [ConfigurationEntry] = []
            var attributes = SubscriptionAttributes.none
            let known =
                ["event", "socket", "expire", "delivery", "filter", "fields"]
                + moduleTypes.flatMap { $0.subscriptionKeys }
            for entry in try item.entries(key: prefix, known: known) {
                let key = "\(prefix).\(entry.key)"
                switch entry.key {
                case "event": event = try entry.value.string(key: key)
                case "socket": socket = try entry.value.string(key: key)
                case "delivery": delivery = try Self.deliveryMode(entry.value, key: key)
                case "expire": expire = try entry.value.integer(key: key, range: 1...Int(Int32.max))
                case "filter":
                    let text = try entry.value.string(key: key)
                    do throws(FilterError) {
                        attributes.filter = text.isEmpty ? nil : try EventFilter(parsing: text)
                    } catch {
                        throw ConfigurationError("\(key): \(error.message)")
                    }
                case "fields":
                    // A YAML list, or one string of comma-separated names as the MI takes it.
                    var list: [String]?
                    var text: String?
                    if case .scalar(let written) = entry.value {
                        text = written
                    } else {
                        list = try entry.value.optionalStrings(key: key) ?? []
                    }
                    do throws(FilterError) {
                        if let text {
                            attributes.fields = try SubscriptionAttributes.fields(parsing: text)
                        } else {
                            attributes.fields = try SubscriptionAttributes.fields(list ?? [])
                        }
                    } catch {
                        throw ConfigurationError("\(key): \(error.message)")
                    }
                default: moduleKeys.append(entry)
                }
            }
            guard let event else { throw ConfigurationError("\(prefix): missing key 'event'") }
            guard let socket else { throw ConfigurationError("\(prefix): missing key 'socket'") }
            subscriptions.append(
                Subscription(
                    event: event, socket: socket, expire: expire, delivery: delivery, moduleKeys: moduleKeys,
                    attributes: attributes))
        }
    }

    /// `ingress:` entries: a socket string, or a mapping with `socket` and its options. One that
    /// listens off loopback needs `allowed_sources` (datagrams carry no credentials).
    private mutating func readIngress(_ node: ConfigurationNode) throws(ConfigurationError) {
        for (index, item) in try node.items(key: "ingress").enumerated() {
            let prefix = "ingress[\(index)]"
            var settings: IngressSettings
            if case .scalar(let socket) = item {
                settings = IngressSettings(socket: socket)
            } else {
                settings = IngressSettings(socket: "")
                let known = [
                    "socket", "event_param", "publish_unknown", "allowed_sources", "event", "framing", "prefetch",
                    "client_ca_file",
                ]
                for entry in try item.entries(key: prefix, known: known) {
                    let key = "\(prefix).\(entry.key)"
                    switch entry.key {
                    case "socket": settings.socket = try entry.value.string(key: key)
                    case "event_param": settings.eventParam = try entry.value.optionalString(key: key)
                    case "publish_unknown": settings.publishUnknown = try entry.value.boolean(key: key)
                    case "prefetch": settings.prefetch = try entry.value.integer(key: key, range: 1...65_535)
                    case "client_ca_file": settings.clientCAFile = try entry.value.optionalString(key: key)
                    case "event": settings.event = try entry.value.optionalString(key: key)
                    case "framing":
                        let text = try entry.value.string(key: key)
                        guard let framing = IngressSettings.Framing(rawValue: text) else {
                            throw ConfigurationError("\(key): expected netstring or json, got '\(text)'")
                        }
                        settings.framing = framing
                    default:  // allowed_sources
                        settings.allowedSources = try entry.value.optionalStrings(key: key)?.map {
                            text throws(ConfigurationError) in
                            guard let network = CIDR(text) else {
                                throw ConfigurationError("\(key): '\(text)' is not a CIDR such as 10.0.0.0/8")
                            }
                            return network
                        }
                    }
                }
            }
            guard let module = ingressModule(for: settings.socket) else {
                let schemes = modules.flatMap { type(of: $0).ingressSchemes }.joined(separator: ", ")
                throw ConfigurationError(
                    "\(prefix): '\(redactingCredentials(settings.socket))' is not an ingress this build has (schemes: \(schemes))"
                )
            }
            if case .network(let address, let needs?) = try type(of: module).localListener(settings, key: prefix),
                settings.allowedSources == nil, !address.isLoopback
            {
                throw ConfigurationError("\(prefix): listening on \(address), not loopback, requires \(needs)")
            }
            ingress.append(settings)
        }
    }

    /// Each module named under `modules:` reads its own section; the others keep their defaults.
    private mutating func readModules(_ node: ConfigurationNode) throws(ConfigurationError) {
        let names = moduleTypes.map { $0.name }
        for entry in try node.entries(key: "modules") {
            guard let moduleType = moduleTypes.first(where: { $0.name == entry.key }) else {
                var message = "unknown module 'modules.\(entry.key)'"
                if let suggestion = closest(to: entry.key, among: names) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                throw ConfigurationError(message + " (this build has \(names.joined(separator: ", ")))")
            }
            let module = try moduleType.init(section: entry.value)
            modules = modules.map { type(of: $0).name == entry.key ? module : $0 }
        }
    }

    private static func listenAddress(_ node: ConfigurationNode, key: String) throws(ConfigurationError)
        -> ListenAddress?
    {
        let text = try node.string(key: key)
        if text == "off" { return nil }
        return try ListenAddress.parse(text, key: key)
    }
}

extension ConfigurationNode {
    /// The YAML library's node as the file-format-free tree modules read.
    package init(_ node: Node) {
        switch node {
        case .scalar(let scalar):
            self = node.null != nil ? .null : .scalar(scalar.string)
        case .sequence(let sequence):
            self = .sequence(sequence.map(ConfigurationNode.init))
        case .mapping(let mapping):
            self = .mapping(
                mapping.map { ConfigurationEntry($0.key.string ?? "\($0.key)", ConfigurationNode($0.value)) })
        case .alias:
            self = .null
        }
    }
}
