import EventInterface
import EventNIOSupport
import NIOSSL

/// `event_sqs`: the `sqs:` transport (Amazon SQS, or any server of its JSON protocol).
public struct SQSModule: EventModule {
    public static let name = "event_sqs"
    public let options: SQSOptions
    let tls: ReloadableTLS?

    public init(options: SQSOptions = SQSOptions()) {
        self.options = options
        tls = try? ReloadableTLS(options: TLSOptions(caFile: options.caFile), key: "modules.\(Self.name)")
        transports = [SQSTransport(options: options, tls: tls)]
    }

    public init(section: ConfigurationNode) throws(ConfigurationError) {
        let prefix = "modules.\(Self.name)"
        var options = SQSOptions()
        var keyID: String?
        var secret: String?
        var token: String?
        let known = ["region", "access_key_id", "secret_access_key", "session_token", "ca_file", "timeout", "retries"]
        for entry in try section.entries(key: prefix, known: known) {
            let key = "\(prefix).\(entry.key)"
            switch entry.key {
            case "region": options.region = try entry.value.optionalString(key: key)
            case "access_key_id": keyID = try entry.value.optionalString(key: key)
            case "secret_access_key": secret = try entry.value.optionalString(key: key)
            case "session_token": token = try entry.value.optionalString(key: key)
            case "ca_file": options.caFile = try entry.value.optionalString(key: key)
            case "timeout": options.timeout = try entry.value.milliseconds(key: key)
            default: options.retries = try entry.value.integer(key: key, range: 0...10)  // retries
            }
        }
        switch (keyID, secret) {
        case (let keyID?, let secret?):
            options.credentials = AWSCredentials(accessKeyID: keyID, secretAccessKey: secret, sessionToken: token)
        case (nil, nil): break
        default: throw ConfigurationError("\(prefix): access_key_id and secret_access_key go together")
        }
        self.options = options
        tls = try ReloadableTLS(options: TLSOptions(caFile: options.caFile), key: prefix)
        transports = [SQSTransport(options: options, tls: tls)]
    }

    public static var defaultSection: [String] {
        let options = SQSOptions()
        return [
            "region: null  # for queue URLs whose host names no region (else AWS_REGION)",
            "access_key_id: null  # used only when neither AWS_ACCESS_KEY_ID nor ~/.aws/credentials has keys",
            "secret_access_key: null",
            "session_token: null",
            "ca_file: null  # CAs trusted for https queue URLs (default: the system's)",
            "timeout: \(options.timeout.wholeMilliseconds)  # ms: connect, and a batch's replies",
            "retries: \(options.retries)  # times a throttled or 5xx request is sent again",
        ]
    }

    public let transports: [any EventTransport]
}
