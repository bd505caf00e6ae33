/// A module, as OpenSIPS has them (`event_flatstore`, `event_rabbitmq`): everything one part of
/// evi brings to a daemon, so that the daemon composes a list of modules and adding a transport is
/// its folder plus one line in that list.
///
/// A module reads its own section of the configuration (`modules.NAME`), and contributes its
/// transports (which publish their own events), the MI commands it adds, what it does on SIGHUP,
/// and its rules for sockets chosen over an MI that is not on loopback. Everything has a default
/// but the name, the configuration and the transports.
public protocol EventModule: Sendable {
    /// The key under `modules:` in the configuration (`event_flatstore`).
    static var name: String { get }
    /// This module's keys at their defaults, one per line as `key: value  # what it means`, for
    /// `evi serve --print-config` (written from the defaults, so it cannot drift from them).
    static var defaultSection: [String] { get }
    /// Builds the module from `modules.NAME` (`.null` when absent). Unknown keys and bad values
    /// throw, naming the key.
    init(section: ConfigurationNode) throws(ConfigurationError)
    /// Its transports, configured: made once, in `init`, and kept (a transport may hold state:
    /// connections, files, secrets), so every caller sees the same ones.
    var transports: [any EventTransport] { get }
    /// The MI commands it adds.
    var commands: [ModuleCommand] { get }
    /// Called on SIGHUP (flatstore reopens its files, as after a logrotate move).
    func hangup() async
    /// Why `socket` (one of this module's schemes; a virtual socket's members are asked one by
    /// one) may not be subscribed over an MI reachable from elsewhere than loopback, or nil.
    func refusalOverExposedMI(_ socket: any EventSocket) -> String?
    /// The schemes it can take events in on (an `ingress:` entry of one of them is its to start).
    static var ingressSchemes: [String] { get }
    /// Starts listening (or consuming) as `settings` says, handing every message to `sink`.
    func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError) -> any EventIngress
    /// Where an ingress entry of this module listens on this machine (nil: it connects out to a
    /// broker or a peer). The daemon refuses one off loopback without what it names, and makes
    /// every one a forbidden destination. `key` names the entry in errors.
    static func localListener(_ settings: IngressSettings, key: String) throws(ConfigurationError) -> LocalListener?
    /// The keys a `subscriptions:` entry of the configuration may carry for this module's sockets,
    /// besides `event`, `socket`, `expire` and `delivery` (the webhook `secret`).
    static var subscriptionKeys: [String] { get }
    /// Checks and keeps what those keys say for the subscription of `socket` (`entries` holds only
    /// this module's keys). Throws naming the key; called once per entry, before it is subscribed.
    func applySubscriptionKeys(_ entries: [ConfigurationEntry], socket: String, key: String)
        throws(ConfigurationError)
}

extension EventModule {
    public static var ingressSchemes: [String] { [] }
    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        throw SocketError("\(Self.name) takes no events in: \(settings.socket)")
    }
    public static var defaultSection: [String] { [] }
    public var commands: [ModuleCommand] { [] }
    public func hangup() async {}
    public func refusalOverExposedMI(_ socket: any EventSocket) -> String? { nil }
    public static func localListener(_ settings: IngressSettings, key: String) throws(ConfigurationError)
        -> LocalListener?
    { nil }
    public static var subscriptionKeys: [String] { [] }
    public func applySubscriptionKeys(_ entries: [ConfigurationEntry], socket: String, key: String)
        throws(ConfigurationError)
    {
        if let entry = entries.first { throw ConfigurationError("\(key).\(entry.key): unknown key") }
    }
}

/// Where an ingress listens on this machine, as the module that owns its scheme reads it.
public enum LocalListener: Sendable, Hashable {
    /// `HOST:PORT`; `offLoopbackNeeds` is what an entry listening off loopback must also have, in
    /// words for the error ("allowed_sources"), or nil when the entry proves its peers itself (a
    /// tls ingress checking client certificates).
    case network(ListenAddress, offLoopbackNeeds: String?)
    /// A Unix socket path.
    case unixPath(String)
}

/// An MI command a module adds, in the core's terms (the management interface adapts it), so a
/// transport module does not depend on the MI.
public struct ModuleCommand: Sendable {
    /// Its names: the 3.x name first, then legacy ones (`event_flatstore:rotate`, `evi_flat_rotate`).
    public var names: [String]
    /// The parameter names it accepts, one list per accepted form.
    public var parameterSets: [[String]]
    /// Runs it with the parameters bound by name; a failure carries OpenSIPS' code and message.
    public var run: @Sendable ([EventField]) async throws(CommandError) -> EventValue

    public init(
        names: [String], parameterSets: [[String]],
        run: @escaping @Sendable ([EventField]) async throws(CommandError) -> EventValue
    ) {
        self.names = names
        self.parameterSets = parameterSets
        self.run = run
    }
}

/// A command's error reply: `code` and `message` exactly as OpenSIPS has them, and (our addition)
/// a `data` string that says what was wrong. The MI's errors are these (`MIError`).
public struct CommandError: Error, Sendable, Hashable {
    public var code: Int
    public var message: String
    public var data: String?

    public init(code: Int, message: String, data: String? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }
}

/// Told of every subscription change and publish made at run time, before it is acknowledged:
/// how durable state (`EventState`) follows the hub. Throwing refuses the change, which the
/// caller then undoes.
public protocol SubscriptionObserver: Sendable {
    /// `socket` as given (credentials included), `identity` as matching compares it; expire 0
    /// means removed. `attributes` (filter, fields) are replaced with every change, as the expiry.
    func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws
    func eventPublished(_ name: String) async throws
    /// Why this store cannot hold an event of that name (nil: it can), asked before anything
    /// changes, so that a refusal is a clear `400` and leaves the hub as it was.
    func refusal(forEvent name: String) -> String?
    /// Why this store cannot hold that subscription's socket (`text` as given, `socket` parsed
    /// from it), asked before anything changes.
    func refusal(forSocket text: String, parsed socket: any EventSocket) -> String?
    /// Why this store cannot hold the whole subscription (its filter and fields too), asked
    /// before anything changes.
    func refusal(
        forSubscription event: String, socket text: String, identity: String, attributes: SubscriptionAttributes
    ) -> String?
}

extension SubscriptionObserver {
    public func refusal(forEvent name: String) -> String? { nil }
    public func refusal(forSocket text: String, parsed socket: any EventSocket) -> String? { nil }
    public func refusal(
        forSubscription event: String, socket text: String, identity: String, attributes: SubscriptionAttributes
    ) -> String? { nil }
}
