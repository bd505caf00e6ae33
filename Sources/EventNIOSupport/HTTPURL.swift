import EventInterface

/// `http://HOST[:PORT]/PATH[?QUERY]` or `https://…`: what the webhook and sqs sockets name. Only
/// what a delivery needs is kept (no user info, no fragment: both are refused rather than
/// silently dropped, since either would mean the operator expected something evi does not do).
public struct HTTPURL: Sendable, Hashable, CustomStringConvertible {
    public var isTLS: Bool
    public var hostPort: HostPort
    /// The path with its query, as sent on the request line (starts with `/`).
    public var target: String

    public var scheme: String { isTLS ? "https" : "http" }
    public var defaultPort: Int { isTLS ? 443 : 80 }

    /// The `Host` header's value: the port only when it is not the scheme's own (what browsers,
    /// curl and botocore send, and what a SigV4 signature covers).
    public var authority: String {
        let host = hostPort.isIPv6 ? "[\(hostPort.host)]" : hostPort.host
        return hostPort.port == defaultPort ? host : "\(host):\(hostPort.port)"
    }

    public var description: String { "\(scheme)://\(authority)\(target)" }

    /// The path without its query.
    public var path: Substring { target[..<(target.firstIndex(of: "?") ?? target.endIndex)] }

    /// Parses `text`; `socket` is the whole socket, quoted in errors.
    public static func parse(_ text: String, socket: String) throws(SocketError) -> HTTPURL {
        let isTLS: Bool
        let rest: Substring
        if text.hasPrefix("https://") {
            isTLS = true
            rest = text.dropFirst(8)
        } else if text.hasPrefix("http://") {
            isTLS = false
            rest = text.dropFirst(7)
        } else {
            throw SocketError("expected an http:// or https:// URL: \(socket)")
        }
        guard text.utf8.count <= 2048 else { throw SocketError("URL longer than 2048 bytes: \(socket)") }
        guard text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value != 0x7F }) else {
            throw SocketError("URL has spaces, control or non-ASCII characters (percent-encode them): \(socket)")
        }
        guard !text.contains("#") else { throw SocketError("URL has a fragment ('#'): \(socket)") }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let target = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard !authority.contains("@") else {
            throw SocketError("user information in a URL is not used (configure credentials instead): \(socket)")
        }
        let scheme = isTLS ? "https" : "http"
        let hostPort: HostPort
        if authority.hasSuffix("]") || !authority.contains(":") {
            // No port: the scheme's own.
            guard !authority.isEmpty else { throw SocketError("\(scheme) URL needs a host: \(socket)") }
            hostPort = try HostPort.parse("\(authority):\(isTLS ? 443 : 80)", scheme: scheme, socket: socket)
        } else {
            hostPort = try HostPort.parse(String(authority), scheme: scheme, socket: socket)
        }
        return HTTPURL(isTLS: isTLS, hostPort: hostPort, target: target)
    }

    public init(isTLS: Bool, hostPort: HostPort, target: String) {
        self.isTLS = isTLS
        self.hostPort = hostPort
        self.target = target
    }
}
