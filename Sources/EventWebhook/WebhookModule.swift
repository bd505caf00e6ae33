import EventInterface
import EventNIOSupport
import NIOSSL

/// `event_webhook`: the `http://` and `https://` transports (webhooks, Standard Webhooks signed).
public struct WebhookModule: EventModule {
    public static let name = "event_webhook"
    public let options: WebhookOptions
    /// Per-subscription secrets from the configuration file.
    public let secrets = WebhookSecrets()
    let tls: ReloadableTLS?

    public init(options: WebhookOptions = WebhookOptions()) {
        self.options = options
        tls = try? ReloadableTLS(options: TLSOptions(caFile: options.caFile), key: "modules.\(Self.name)")
        transports = [
            WebhookTransport(isTLS: false, options: options, secrets: secrets),
            WebhookTransport(isTLS: true, options: options, secrets: secrets, tls: tls),
        ]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = WebhookOptions()
        for entry in try section.entries(key: prefix, known: ["secret", "ca_file", "timeout"]) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "secret":
                options.secret = try entry.value.optionalString(key: key).map { text throws(ConfigurationError) in
                    try WebhookSecret(text, key: key)
                }
            case "ca_file": options.caFile = try entry.value.optionalString(key: key)
            default: options.timeout = try entry.value.milliseconds(key: key)  // timeout
            }
        }
        self.options = options
        tls = try ReloadableTLS(options: TLSOptions(caFile: options.caFile), key: prefix)
        transports = [
            WebhookTransport(isTLS: false, options: options, secrets: secrets),
            WebhookTransport(isTLS: true, options: options, secrets: secrets, tls: tls),
        ]
    }

    public static var defaultSection: [String] {
        [
            "secret: null  # whsec_…: sign every webhook (Standard Webhooks); subscriptions[].secret overrides",
            "ca_file: null  # CAs trusted for https webhooks (default: the system's)",
            "timeout: \(WebhookOptions().timeout.wholeMilliseconds)  # ms: connect, and each reply",
        ]
    }

    public let transports: [any EventTransport]

    /// `secret`: a configured subscription's own signing secret (never over MI, so that secrets
    /// do not travel in requests).
    public static let subscriptionKeys = ["secret"]

    public func applySubscriptionKeys(_ entries: [ConfigurationEntry], socket: String, key: String)
        throws(ConfigurationError)
    {
        for entry in entries {
            let secret = try WebhookSecret(try entry.value.string(key: "\(key).secret"), key: "\(key).secret")
            do throws(ConfigurationError) { try secrets.assign(secret, socket: socket) } catch {
                throw ConfigurationError("\(key).secret: \(error)")
            }
        }
    }
}
