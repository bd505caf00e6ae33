import EventInterface

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
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = type
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let entry = list else {
            throw Failure(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(entry.pointee.ai_family, type, 0)
        guard fd >= 0 else { throw Failure(description: "cannot create a socket") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot reach MI at \(host):\(port): \(reason)")
        }
        return fd
    }

    private func postHTTP(host: String, port: Int, path: String, body: [UInt8]) throws -> [UInt8] {
        let fd = try connectedSocket(host: host, port: port, type: Int32(SOCK_STREAM.rawValue))
        defer { close(fd) }
        var head = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        head += "\r\n"
        let request = Array(head.utf8) + body
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw Failure(description: "MI connection lost while sending") }
            sent += count
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            guard count > 0 else { throw Failure(description: "no reply from MI within \(timeoutSeconds) s") }
            response += buffer[0..<count]
        }
        guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw Failure(description: "malformed HTTP reply")
        }
        let statusLine = String(decoding: response[..<(response.firstIndex(of: 13) ?? split.lowerBound)], as: UTF8.self)
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let payload = Array(response[split.upperBound...])
        guard status == 200 else {
            throw Failure(description: "HTTP \(statusLine.split(separator: " ", maxSplits: 1).last ?? "error")")
        }
        return payload
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
