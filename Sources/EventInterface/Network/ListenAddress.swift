/// `HOST:PORT` a listener binds, or off.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether every address the host resolves to is a loopback one (127.0.0.0/8, ::1), decided
    /// on the addresses, not the name: `127.example.com` is not loopback, and a name that does
    /// not resolve is not either.
    public var isLoopback: Bool { HostPort.isLoopback(host) }

    /// `HOST:PORT` or `[IPv6]:PORT`; port 0 asks the system for a free one.
    public static func parse(_ text: String, key: String) throws(ConfigurationError) -> ListenAddress {
        let failure = ConfigurationError("\(key): expected HOST:PORT or off, got '\(text)'")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65_535).contains(port)
        else { throw failure }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace) else { throw failure }
        return ListenAddress(host: host, port: port)
    }
}
