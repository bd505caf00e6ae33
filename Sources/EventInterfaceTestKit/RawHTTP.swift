import EventInterface
import EventNIOSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal HTTP/1.1 client over a plain socket, for asserting exact statuses and headers.
public enum RawHTTP {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    /// Sends one request with `Connection: close` and reads the whole reply. `Host` is
    /// `HOST:PORT` unless `headers` name one, or `omitHost` leaves it out. A POST is JSON unless
    /// the test says otherwise, as every MI client sends it.
    public static func request(
        port: Int, method: String, path: String, body: [UInt8] = [], headers: [(String, String)] = [],
        host: String = "127.0.0.1", omitHost: Bool = false
    ) throws -> Response {
        var headers = headers
        if method == "POST", !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
            headers.append(("Content-Type", "application/json"))
        }
        let reply = try BlockingHTTP.request(
            host: host, port: port, method: method, path: path, headers: headers, body: body, omitHost: omitHost)
        return Response(status: reply.status, headers: reply.headers, body: reply.body)
    }

    static func parse(_ response: [UInt8]) throws -> Response {
        let reply = try BlockingHTTP.parse(response)
        return Response(status: reply.status, headers: reply.headers, body: reply.body)
    }
}
