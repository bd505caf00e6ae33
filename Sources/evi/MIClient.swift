import EventInterface
import EventNIOSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A small blocking MI client over HTTP or UDP for the command-line commands (`evi subscribe`…).
struct MIClient {
    enum Endpoint {
        case http(host: String, port: Int, path: String)
        case udp(host: String, port: Int)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let endpoint: Endpoint
    let token: String?
    var timeoutSeconds = 10

    /// `http://HOST:PORT/PATH` or `udp://HOST:PORT`.
    init(url: String, token: String?) throws {
        self.token = token
        if url.hasPrefix("http://") {
            let rest = url.dropFirst(7)
            let authority = rest.prefix { $0 != "/" }
            let path = rest.dropFirst(authority.count)
            let hostPort = try Self.hostPort(String(authority), url: url)
            endpoint = .http(host: hostPort.host, port: hostPort.port, path: path.isEmpty ? "/mi" : String(path))
        } else if url.hasPrefix("udp://") {
            let hostPort = try Self.hostPort(String(url.dropFirst(6)), url: url)
            endpoint = .udp(host: hostPort.host, port: hostPort.port)
        } else {
            throw Failure(description: "--mi must be http://HOST:PORT/mi or udp://HOST:PORT, not \(url)")
        }
    }

    private static func hostPort(_ text: String, url: String) throws -> HostPort {
        do { return try HostPort.parse(text, scheme: "mi", socket: url) } catch {
            throw Failure(description: "bad MI address \(url): \(error.message)")
        }
    }

    /// Calls `method` and returns its result, or throws the error reply as a failure.
    func call(_ method: String, _ params: [EventField]) throws -> EventValue {
        var request: [EventField] = [
            EventField("jsonrpc", "2.0"), EventField("method", .string(method)),
            EventField("params", .object(params)), EventField("id", .int(Int64(getpid()))),
        ]
        if case .udp = endpoint, let token { request.append(EventField("token", .string(token))) }
        let body = Array(EventValue.object(request).jsonText.utf8)
        let replyBytes: [UInt8]
        switch endpoint {
        case .http(let host, let port, let path):
            replyBytes = try postHTTP(host: host, port: port, path: path, body: body)
        case .udp(let host, let port): replyBytes = try exchangeUDP(host: host, port: port, body: body)
        }
        let reply: EventValue
        do { reply = try EventValue(jsonBytes: replyBytes) } catch {
            throw Failure(description: "unreadable reply: \(String(decoding: replyBytes, as: UTF8.self))")
        }
        guard case .object(let fields) = reply else {
            throw Failure(description: "unexpected reply: \(reply.jsonText)")
        }
        if let error = fields.first(where: { $0.name == "error" })?.value, case .object(let parts) = error {
            let code = parts.first { $0.name == "code" }?.value.jsonText ?? "?"
            var message = "error \(code)"
            if case .string(let text)? = parts.first(where: { $0.name == "message" })?.value { message += ": \(text)" }
            if case .string(let data)? = parts.first(where: { $0.name == "data" })?.value { message += " (\(data))" }
            throw Failure(description: message)
        }
        return fields.first { $0.name == "result" }?.value ?? .null
    }

    private func connectedSocket(host: String, port: Int, type: Int32) throws -> Int32 {
        guard let address = Resolver.addresses(host: host, port: port, socketType: type).first else {
            throw Failure(description: "cannot resolve \(host)")
        }
        let fd = socket(address.family, type, 0)
        guard fd >= 0 else { throw Failure(description: "cannot create a socket") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockAddr({ connect(fd, $0, $1) }) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot reach MI at \(host):\(port): \(reason)")
        }
        return fd
    }

    private func postHTTP(host: String, port: Int, path: String, body: [UInt8]) throws -> [UInt8] {
        var headers = [("Content-Type", "application/json")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        let reply: BlockingHTTP.Response
        do {
            reply = try BlockingHTTP.request(
                host: host, port: port, method: "POST", path: path, headers: headers, body: body,
                timeoutSeconds: timeoutSeconds)
        } catch {
            let reason = error.description
            throw Failure(
                description: reason.hasPrefix("cannot reach ")
                    ? "cannot reach MI at " + reason.dropFirst(13) : "MI at \(host):\(port): \(reason)")
        }
        guard reply.status == 200 else { throw Failure(description: "HTTP \(reply.status) \(reply.reason)") }
        return reply.body
    }

    private func exchangeUDP(host: String, port: Int, body: [UInt8]) throws -> [UInt8] {
        let fd = try connectedSocket(host: host, port: port, type: Int32(SOCK_DGRAM.rawValue))
        defer { close(fd) }
        guard body.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == body.count else {
            throw Failure(description: "cannot send to MI at \(host):\(port)")
        }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        // MI over UDP answers only valid, authorised requests: silence most often means the token.
        guard count > 0 else {
            throw Failure(description: "no reply (wrong token?) from MI at \(host):\(port) within \(timeoutSeconds) s")
        }
        return Array(buffer[0..<count])
    }
}
