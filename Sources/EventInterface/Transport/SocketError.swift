/// Why a socket string was refused; `message` names the problem and the offending text
/// (`udp socket needs a port: udp:127.0.0.1`), and is what MI replies carry as `data`.
public struct SocketError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    /// The message with any `SCHEME:USER:PASSWORD@` credentials taken out (``redactingCredentials(_:)``):
    /// errors quote the socket they refuse, and end up in MI replies, logs and start-up messages.
    public init(_ message: String) { self.message = redactingCredentials(message) }
    public var description: String { message }
}

/// `text` with the password of every `SCHEME:USER:PASSWORD@HOST` taken out
/// (`rabbitmq:guest:s3cret@h/k` → `rabbitmq:guest@h/k`), wherever it stands in the text: whole
/// virtual sockets are quoted in member errors. The password runs to the last `@` before the
/// next space, as the socket parsers read it.
public func redactingCredentials(_ text: String) -> String {
    guard text.contains("@") else { return text }
    return text.split(separator: " ", omittingEmptySubsequences: false).map { word -> Substring in
        guard let at = word.lastIndex(of: "@"), let schemeEnd = word.firstIndex(of: ":"), schemeEnd < at else {
            return word
        }
        let credentials = word[word.index(after: schemeEnd)..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return word }
        return word[..<colon] + word[at...]
    }.joined(separator: " ")
}
