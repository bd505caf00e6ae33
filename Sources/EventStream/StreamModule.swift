import EventInterface
import EventNIOSupport
import Logging
import NIOPosix
import NIOSSL

/// `event_stream`: the `tcp:` transport (JSON-RPC over a persistent TCP connection).
public struct StreamModule: EventModule {
    public static let name = "event_stream"
    public let options: StreamOptions
    /// The profile of `tls:`, reloaded on SIGHUP; nil only when the system's TLS defaults cannot
    /// be loaded.
    public let tls: ReloadableTLS?

    public init(options: StreamOptions = StreamOptions()) {
        self.options = options
        tls = try? ReloadableTLS(options: options.tls, key: "modules.\(Self.name)")
        transports =
            [StreamTransport(options: options)] + (tls.map { [StreamTransport(options: options, tls: $0)] } ?? [])
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = StreamOptions()
        let known = ["reliable_mode", "timeout", "event_param", "ca_file", "cert_file", "key_file", "verify"]
        for entry in try section.entries(key: prefix, known: known) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "reliable_mode": options.reliableMode = try entry.value.boolean(key: key)
            case "timeout": options.timeout = try entry.value.milliseconds(key: key)
            case "ca_file": options.tls.caFile = try entry.value.optionalString(key: key)
            case "cert_file": options.tls.certFile = try entry.value.optionalString(key: key)
            case "key_file": options.tls.keyFile = try entry.value.optionalString(key: key)
            case "verify": options.tls.verify = try entry.value.boolean(key: key)
            default: options.eventParam = try entry.value.optionalString(key: key)  // event_param
            }
        }
        self.options = options
        tls = try ReloadableTLS(options: options.tls, key: prefix)
        transports =
            [StreamTransport(options: options)] + (tls.map { [StreamTransport(options: options, tls: $0)] } ?? [])
    }

    /// SIGHUP: the TLS files are read again; a bad one keeps the old profile (logged).
    public func hangup() async {
        guard let tls, let failure = tls.reload() else { return }
        Logger(label: "evi").error(
            "TLS files not reloaded, the old ones stay in use", metadata: ["reason": "\(failure)"])
    }

    public static var defaultSection: [String] {
        let options = StreamOptions()
        return [
            "reliable_mode: \(options.reliableMode)  # true: JSON-RPC requests, success only on a reply without error",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms: connect, write and reply",
            "event_param: null  # e.g. event: adds {\"event\":\"E_X\"} first to the params",
            "ca_file: null  # tls: CAs trusted for the peers evi connects to (default: the system's)",
            "cert_file: null  # tls: evi's certificate (required for a tls: ingress)",
            "key_file: null  # tls: its key, mode 600",
            "verify: true  # tls: check the peer's certificate chain and host name",
        ]
    }

    public let transports: [any EventTransport]

    /// `tcp:` (the peer of OpenSIPS' event_stream), `tls:` (the same over TLS) and `evapi:` (a
    /// client of Kamailio's evapi).
    public static let ingressSchemes = ["tcp", "tls", "evapi"]

    /// tcp and tls listen here (off loopback: `allowed_sources`, or for tls client certificates);
    /// evapi connects out to Kamailio.
    public static func localListener(_ settings: IngressSettings, key: String) throws(ConfigurationError)
        -> LocalListener?
    {
        let (scheme, rest) = settings.schemeAndRest
        guard scheme != "evapi" else { return nil }
        let needs =
            scheme == "tcp"
            ? "allowed_sources" : settings.clientCAFile == nil ? "client_ca_file or allowed_sources" : nil
        return .network(try ListenAddress.parse(rest, key: "\(key).socket"), offLoopbackNeeds: needs)
    }

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        if settings.socket.hasPrefix("evapi:") {
            return try await EvapiIngress(
                settings: settings, sink: sink, group: MultiThreadedEventLoopGroup.singleton,
                logger: Logger(label: "evi"))
        }
        var server: ReloadableTLS?
        if settings.socket.hasPrefix("tls:") {
            guard let tls else { throw SocketError("TLS is not available: \(settings.socket)") }
            // Fails now, not once per client.
            _ = try tls.server(clientCAFile: settings.clientCAFile, socket: settings.socket)
            server = tls
        }
        return try await StreamIngress.start(
            settings: settings, sink: sink, group: MultiThreadedEventLoopGroup.singleton, tls: server)
    }
}
