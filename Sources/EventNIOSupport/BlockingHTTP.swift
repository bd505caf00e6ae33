import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// One HTTP/1.1 request over a plain blocking socket, reply read to the end (`Connection:
/// close`): the small client the command line (`evi subscribe` over MI), the tests and the bench
/// share. Not for the daemon's own traffic, which goes through NIO (``HTTPConnection``).
public enum BlockingHTTP {
    public struct Response: Sendable {
        public var status: Int
        /// The status line's reason ("Not Found").
        public var reason: String
        public var headers: [(String, String)]
        public var body: [UInt8]

        public var bodyText: String { String(decoding: body, as: UTF8.self) }

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Sends `METHOD PATH` with `headers` (a `Host` is added unless given, or `omitHost`) and
    /// `body` (with its `Content-Length` when there is one or the method is POST), and reads the
    /// reply until the server closes, for at most `timeoutSeconds` of silence.
    public static func request(
        host: String, port: Int, method: String, path: String, headers: [(String, String)] = [],
        body: [UInt8] = [], omitHost: Bool = false, timeoutSeconds: Int = 10
    ) throws(Failure) -> Response {
        guard let address = Resolver.addresses(host: host, port: port, socketType: Int32(SOCK_STREAM.rawValue)).first
        else { throw Failure("cannot resolve \(host)") }
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("cannot create a socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
            throw Failure("cannot reach \(HostPort(host: host, port: port)): \(String(cString: strerror(errno)))")
        }
        var head = "\(method) \(path) HTTP/1.1\r\n"
        if !omitHost, !headers.contains(where: { $0.0.lowercased() == "host" }) {
            head += "Host: \(HostPort(host: host, port: port))\r\n"
        }
        head += "Connection: close\r\n"
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        let request = Array(head.utf8) + body
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { break }  // the server may answer (413) and close before reading it all
            sent += count
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            guard count > 0 else {
                if response.isEmpty { throw Failure("no reply within \(timeoutSeconds) s") }
                break
            }
            response += buffer[0..<count]
        }
        return try parse(response)
    }

    /// A whole reply: status line, headers, and everything after them as the body.
    public static func parse(_ response: [UInt8]) throws(Failure) -> Response {
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw Failure("no HTTP head in \(String(decoding: response.prefix(200), as: UTF8.self))")
        }
        let lines = String(decoding: response[..<split.lowerBound], as: UTF8.self).split(
            separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = (lines.first ?? "").split(separator: " ", maxSplits: 2)
        let status = statusParts.count > 1 ? Int(statusParts[1]) ?? 0 : 0
        let reason = statusParts.count > 2 ? String(statusParts[2]) : ""
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
            return (String(line[..<colon]), String(value.reversed().drop { $0 == " " || $0 == "\t" }.reversed()))
        }
        return Response(status: status, reason: reason, headers: headers, body: Array(response[split.upperBound...]))
    }
}
