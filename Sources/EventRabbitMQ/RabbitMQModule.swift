import EventInterface
import EventNIOSupport
import Logging
import NIOPosix

/// `event_rabbitmq`: the `rabbitmq:` transport (AMQP 0-9-1 publishes with confirms) and ingress
/// (a queue consumed with manual acknowledgements).
public struct RabbitMQModule: EventModule {
    public static let name = "event_rabbitmq"
    public let options: RabbitMQOptions
    /// amqps contexts: `""` the module's own TLS options, else the `tls_domains` by name.
    let tlsProfiles: [String: ReloadableTLS]

    public init(options: RabbitMQOptions = RabbitMQOptions()) {
        self.options = options
        var profiles: [String: ReloadableTLS] = [:]
        profiles[""] = try? ReloadableTLS(options: options.tls, key: "modules.\(Self.name)")
        for (name, domain) in options.tlsDomains {
            profiles[name] = try? ReloadableTLS(options: domain, key: "modules.\(Self.name).tls_domains.\(name)")
        }
        tlsProfiles = profiles
        transports = [RabbitMQTransport(options: options, tlsProfiles: tlsProfiles)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = RabbitMQOptions()
        let known = ["heartbeat", "timeout", "mandatory", "ca_file", "cert_file", "key_file", "verify", "tls_domains"]
        for entry in try section.entries(key: prefix, known: known) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "heartbeat": options.heartbeat = UInt16(try entry.value.integer(key: key, range: 0...3600))
            case "timeout": options.timeout = try entry.value.milliseconds(key: key)
            case "ca_file", "cert_file", "key_file", "verify": try Self.read(entry, into: &options.tls, key: key)
            case "tls_domains":
                for domain in try entry.value.entries(key: key) {
                    var tls = TLSOptions()
                    for field in try domain.value.entries(
                        key: "\(key).\(domain.key)", known: ["ca_file", "cert_file", "key_file", "verify"])
                    {
                        try Self.read(field, into: &tls, key: "\(key).\(domain.key).\(field.key)")
                    }
                    options.tlsDomains[domain.key] = tls
                }
            default:  // mandatory
                let text = try entry.value.string(key: key)
                guard let mandatory = RabbitMQOptions.Mandatory(rawValue: text.lowercased()) else {
                    throw ConfigurationError("\(key): expected auto, true or false, got '\(text)'")
                }
                options.mandatory = mandatory
            }
        }
        self.options = options
        var profiles = ["": try ReloadableTLS(options: options.tls, key: prefix)]
        for (name, domain) in options.tlsDomains {
            profiles[name] = try ReloadableTLS(options: domain, key: "\(prefix).tls_domains.\(name)")
        }
        tlsProfiles = profiles
        transports = [RabbitMQTransport(options: options, tlsProfiles: tlsProfiles)]
    }

    /// SIGHUP: every TLS profile's files are read again; a bad one keeps the old (logged).
    public func hangup() async {
        for (name, profile) in tlsProfiles.sorted(by: { $0.key < $1.key }) {
            guard let failure = profile.reload() else { continue }
            Logger(label: "evi").error(
                "TLS files not reloaded, the old ones stay in use",
                metadata: ["profile": "\(name.isEmpty ? "tls" : "tls_domain=\(name)")", "reason": "\(failure)"])
        }
    }

    private static func read(_ entry: ConfigurationEntry, into tls: inout TLSOptions, key: String)
        throws(ConfigurationError)
    {
        switch entry.key {
        case "ca_file": tls.caFile = try entry.value.optionalString(key: key)
        case "cert_file": tls.certFile = try entry.value.optionalString(key: key)
        case "key_file": tls.keyFile = try entry.value.optionalString(key: key)
        default: tls.verify = try entry.value.boolean(key: key)  // verify
        }
    }

    public static var defaultSection: [String] {
        let options = RabbitMQOptions()
        return [
            "heartbeat: \(options.heartbeat)  # seconds; 0: none",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms: connect and publisher confirm",
            "mandatory: \(options.mandatory.rawValue)  # auto: on for the default exchange (an unroutable message fails)",
            "ca_file: null  # amqps (socket parameter tls): CAs trusted for the broker (default: the system's)",
            "cert_file: null  # amqps: a client certificate, when the broker asks for one",
            "key_file: null  # amqps: its key, mode 600",
            "verify: true  # amqps: check the broker's certificate chain and host name",
            "tls_domains: {}  # NAME: {ca_file, cert_file, key_file, verify}, for tls_domain=NAME",
        ]
    }

    public let transports: [any EventTransport]

    public static let ingressSchemes = ["rabbitmq"]

    public func startIngress(_ settings: IngressSettings, sink: IngressSink) async throws(SocketError)
        -> any EventIngress
    {
        try await RabbitMQIngress(
            settings: settings, sink: sink, options: options, tlsProfiles: tlsProfiles,
            group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "evi"))
    }
}
