import Crypto
import EventInterface

/// A Standard Webhooks secret, `whsec_` followed by the base64 of the key. Printed redacted: it
/// never reaches a log, a metric or an MI reply.
public struct WebhookSecret: Sendable, Hashable, CustomStringConvertible {
    let key: [UInt8]

    /// Parses `whsec_BASE64` (the form Standard Webhooks libraries print and take).
    public init(_ text: String, key name: String) throws(ConfigurationError) {
        guard text.hasPrefix("whsec_"), let key = Base64.decode(String(text.dropFirst(6))), key.count >= 16 else {
            throw ConfigurationError(
                "\(name): expected a Standard Webhooks secret, whsec_ and the base64 of 16 or more bytes")
        }
        self.key = key
    }

    public var description: String { "whsec_***" }

    /// `v1,BASE64(HMAC-SHA256(key, "ID.TIMESTAMP.BODY"))`: the `webhook-signature` value.
    public func signature(id: String, timestamp: Int, body: [UInt8]) -> String {
        var content = Array("\(id).\(timestamp).".utf8)
        content += body
        let code = HMAC<SHA256>.authenticationCode(for: content, using: SymmetricKey(data: key))
        return "v1," + Base64.encode(Array(code))
    }
}
