import CKafka
import EventInterface

/// `kafka:BROKERS/TOPIC[?PROPERTIES]` (OpenSIPS' event_kafka syntax, Docs/sockets.md): BROKERS is
/// librdkafka's `bootstrap.servers` list, PROPERTIES `&`-separated `g.NAME=VALUE` (a global
/// librdkafka property), `t.NAME=VALUE` (a topic property) and `key=PARAM` (the record key is that
/// event parameter's value). `group=GROUP` names an ingress's consumer group.
struct KafkaAddress: Sendable, Hashable {
    var brokers: [HostPort]
    var topic: String
    /// Sorted by name: properties match in any order.
    var global: [Property] = []
    var topicProperties: [Property] = []
    var keyParam: String?
    var group: String?

    struct Property: Sendable, Hashable, Comparable {
        var name: String
        var value: String
        static func < (a: Property, b: Property) -> Bool { (a.name, a.value) < (b.name, b.value) }
        /// Values of properties that are secrets are never printed.
        var isSecret: Bool { name.contains("password") || name.contains("secret") }
    }

    var bootstrapServers: String { brokers.map(\.description).joined(separator: ",") }

    /// The printed form: properties sorted, secrets as `***`.
    var description: String { text(redacted: true) }
    /// What matching and durable state compare: the printed form with the secrets.
    var identity: String { text(redacted: false) }

    private func text(redacted: Bool) -> String {
        var parts: [String] = []
        if let group { parts.append("group=\(group)") }
        if let keyParam { parts.append("key=\(keyParam)") }
        for property in global {
            parts.append("g.\(property.name)=\(redacted && property.isSecret ? "***" : property.value)")
        }
        for property in topicProperties {
            parts.append("t.\(property.name)=\(redacted && property.isSecret ? "***" : property.value)")
        }
        return "kafka:\(bootstrapServers)/\(topic)" + (parts.isEmpty ? "" : "?" + parts.joined(separator: "&"))
    }

    /// Parses everything after `kafka:`. Property names are checked by librdkafka itself when it
    /// can be loaded (``checkWithLibrary()``).
    static func parse(_ address: String) throws(SocketError) -> KafkaAddress {
        let shown = "kafka:" + address
        guard !address.contains(where: \.isWhitespace) else { throw SocketError("kafka socket contains whitespace") }
        guard let slash = address.firstIndex(of: "/") else {
            throw SocketError("kafka socket needs /TOPIC after its brokers: \(redact(shown))")
        }
        let brokerList = address[..<slash]
        guard !brokerList.isEmpty else {
            throw SocketError("kafka socket needs brokers (HOST:PORT,…): \(redact(shown))")
        }
        var brokers: [HostPort] = []
        for broker in brokerList.split(separator: ",", omittingEmptySubsequences: false) {
            guard !broker.isEmpty else { throw SocketError("empty broker in \(redact(shown))") }
            brokers.append(try HostPort.parse(String(broker), scheme: "kafka", socket: redact(shown)))
        }
        var rest = address[address.index(after: slash)...]
        var query: Substring = ""
        if let question = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: question)...]
            rest = rest[..<question]
        }
        let topic = String(rest)
        guard !topic.isEmpty else { throw SocketError("kafka socket needs a topic after '/': \(redact(shown))") }
        guard topic.count <= 249, topic != ".", topic != "..",
            topic.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
        else {
            throw SocketError(
                "bad kafka topic '\(topic)' (letters, digits, '.', '_', '-'; at most 249): \(redact(shown))")
        }
        var parsed = KafkaAddress(brokers: brokers, topic: topic)
        for item in query.split(separator: "&", omittingEmptySubsequences: false) where !query.isEmpty {
            guard let equals = item.firstIndex(of: "=") else {
                throw SocketError("kafka property '\(item)' is not NAME=VALUE: \(redact(shown))")
            }
            let name = String(item[..<equals])
            let value = String(item[item.index(after: equals)...])
            guard !value.isEmpty else { throw SocketError("kafka property '\(name)' has no value: \(redact(shown))") }
            if name == "key" {
                parsed.keyParam = value
            } else if name == "group" {
                parsed.group = value
            } else if name.hasPrefix("g."), name.count > 2 {
                parsed.global.append(Property(name: String(name.dropFirst(2)), value: value))
            } else if name.hasPrefix("t."), name.count > 2 {
                parsed.topicProperties.append(Property(name: String(name.dropFirst(2)), value: value))
            } else {
                throw SocketError(
                    "unknown kafka property '\(name)' (g.NAME=VALUE, t.NAME=VALUE, key=PARAM, group=GROUP): \(redact(shown))"
                )
            }
        }
        parsed.global.sort()
        parsed.topicProperties.sort()
        if parsed.global.contains(where: { $0.name == "bootstrap.servers" }) {
            throw SocketError("give the brokers before '/', not as g.bootstrap.servers: \(redact(shown))")
        }
        return parsed
    }

    /// Has librdkafka (loaded now if it was not) check every property: an unknown `g.` name or a
    /// bad value is refused at subscribe time, naming it. Connects to nothing.
    func checkWithLibrary() throws(SocketError) {
        try KafkaLibrary.load()
        for (global, properties) in [(true, self.global), (false, topicProperties)] {
            for property in properties {
                var error = [CChar](repeating: 0, count: 512)
                guard evi_kafka_check_property(global ? 1 : 0, property.name, property.value, &error, error.count) == 0
                else {
                    let reason = KafkaProducer.text(error)
                    throw SocketError(
                        "kafka property \(global ? "g." : "t.")\(property.name): \(reason): \(description)")
                }
            }
        }
    }

    /// The socket text with secret property values hidden, for error messages.
    static func redact(_ text: String) -> String {
        guard let question = text.firstIndex(of: "?") else { return text }
        let query = text[text.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map {
            item -> String in
            guard let equals = item.firstIndex(of: "=") else { return String(item) }
            let name = item[..<equals]
            return name.contains("password") || name.contains("secret") ? "\(name)=***" : String(item)
        }
        return text[...question] + query.joined(separator: "&")
    }
}

/// librdkafka, loaded at run time on first use.
enum KafkaLibrary {
    static func load() throws(SocketError) {
        var error = [CChar](repeating: 0, count: 512)
        guard evi_kafka_load(&error, error.count) == 0 else {
            throw SocketError(KafkaProducer.text(error))
        }
    }
}
