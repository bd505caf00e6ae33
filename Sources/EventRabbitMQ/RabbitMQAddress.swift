import EventInterface

/// What a `rabbitmq:` socket says, before any name is resolved:
/// `[USER[:PASSWORD]@]HOST[:PORT]/[PARAMS?]TARGET`, where TARGET is the routing key a subscriber
/// publishes with, or the queue an ingress consumes from. PARAMS are `;`-separated:
/// `exchange=NAME`, `vhost=NAME`, `persistent`, `tls`, `tls_domain=NAME` (Docs/sockets.md).
struct RabbitMQAddress: Sendable, Hashable {
    var user = "guest"
    var password = "guest"
    /// Whether the text wrote a password (`USER:PASSWORD@`), rather than the default's.
    var passwordWritten = false
    var hostPort: HostPort
    var exchange = ""
    var vhost = "/"
    var persistent = false
    /// amqps: `""` for the module's own TLS options (`tls`), a profile's name (`tls_domain=NAME`).
    var tls: String?
    var target: String
    /// The whole socket with its password hidden, for messages.
    var redacted: String

    /// The socket as evi prints it (`evi:subscribers`, `evi:ingress`, logs):
    /// `rabbitmq:USER@HOST[:PORT]/[PARAMS?]TARGET`, no password, the port only when not 5672,
    /// parameters in the order exchange, vhost, persistent.
    var description: String {
        Self.describe(broker: broker, exchange: exchange, persistent: persistent, target: target)
    }

    static func describe(broker: BrokerKey, exchange: String, persistent: Bool, target: String) -> String {
        var text = "rabbitmq:\(broker.user)@"
        text += broker.host.isIPv6 ? "[\(broker.host.host)]" : broker.host.host
        if broker.host.port != (broker.tls == nil ? 5672 : 5671) { text += ":\(broker.host.port)" }
        text += "/"
        var parameters: [String] = []
        if !exchange.isEmpty { parameters.append("exchange=\(exchange)") }
        if broker.vhost != "/" { parameters.append("vhost=\(broker.vhost)") }
        if persistent { parameters.append("persistent") }
        if let tls = broker.tls { parameters.append(tls.isEmpty ? "tls" : "tls_domain=\(tls)") }
        if !parameters.isEmpty { text += parameters.joined(separator: ";") + "?" }
        return text + target
    }

    var broker: BrokerKey { BrokerKey(host: hostPort, user: user, password: password, vhost: vhost, tls: tls) }

    static func parse(_ address: String, targetName: String = "routing key") throws(SocketError) -> RabbitMQAddress {
        let text = "rabbitmq:" + address
        let redacted = redactingCredentials(text)
        guard !address.contains(where: \.isWhitespace) else { throw SocketError("rabbitmq socket contains whitespace") }
        var rest = Substring(address)
        var user = "guest"
        var password = "guest"
        var passwordWritten = false
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
                passwordWritten = true
            } else {
                user = String(credentials)
            }
            guard !user.isEmpty else { throw SocketError("rabbitmq user is empty: \(redacted)") }
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw SocketError(
                "rabbitmq socket needs /\(targetName.uppercased().replacing(" ", with: "_")): \(redacted)")
        }
        let hostText = String(rest[..<slash])
        var target = String(rest[rest.index(after: slash)...])
        let hostPort: HostPort
        if hostText.hasSuffix("]") || !hostText.contains(":") || hostText.hasPrefix("[") && !hostText.contains("]:") {
            let bare = hostText.hasPrefix("[") ? String(hostText.dropFirst().dropLast()) : hostText
            guard !bare.isEmpty else { throw SocketError("rabbitmq socket needs a host: \(redacted)") }
            hostPort = HostPort(host: bare, port: 0)  // the default port, once parameters say TLS or not
        } else {
            hostPort = try HostPort.parse(hostText, scheme: "rabbitmq", socket: redacted)
        }
        var parsed = RabbitMQAddress(user: user, password: password, hostPort: hostPort, target: "", redacted: redacted)
        parsed.passwordWritten = passwordWritten
        if let question = target.firstIndex(of: "?") {
            let parameters = target[..<question]
            target = String(target[target.index(after: question)...])
            for parameter in parameters.split(separator: ";") {
                if parameter == "persistent" {
                    parsed.persistent = true
                } else if parameter.hasPrefix("exchange=") {
                    parsed.exchange = String(parameter.dropFirst("exchange=".count))
                } else if parameter.hasPrefix("vhost=") {
                    parsed.vhost = String(parameter.dropFirst("vhost=".count))
                } else if parameter == "tls" {
                    parsed.tls = ""
                } else if parameter.hasPrefix("tls_domain="), parameter.count > "tls_domain=".count {
                    parsed.tls = String(parameter.dropFirst("tls_domain=".count))
                } else {
                    throw SocketError(
                        "unknown rabbitmq parameter '\(parameter)' (exchange=NAME, vhost=NAME, persistent, tls, tls_domain=NAME): \(redacted)"
                    )
                }
            }
        }
        if parsed.hostPort.port == 0 { parsed.hostPort.port = parsed.tls == nil ? 5672 : 5671 }
        guard !target.isEmpty else { throw SocketError("rabbitmq socket needs a \(targetName): \(redacted)") }
        guard target.utf8.count <= 255, parsed.exchange.utf8.count <= 255, parsed.vhost.utf8.count <= 255 else {
            throw SocketError("rabbitmq \(targetName), exchange and vhost are at most 255 bytes: \(redacted)")
        }
        parsed.target = target
        return parsed
    }
}
