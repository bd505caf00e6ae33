import EventInterface
import Logging
import NIOCore
import Testing

@testable import EventNIOSupport

#if canImport(Glibc)
    import Glibc
#endif

/// An `https` URL never goes out in clear, whatever happened to its TLS context.
@Suite struct HTTPConnectionTests {
    @Test func anHTTPSURLWithoutATLSContextSendsNothing() async throws {
        // A listener that would take a plain-text request: it must see no connection at all.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let url = try HTTPURL.parse("https://127.0.0.1:\(port)/hook", socket: "https://127.0.0.1:\(port)/hook")
        let resolved = try await url.hostPort.resolve(socketType: Int32(SOCK_STREAM.rawValue), socket: "test")
        let connection = HTTPConnection(
            url: url, address: resolved, tls: nil, timeout: .seconds(2), userAgent: "test",
            logger: Logger(label: "test"))
        let results = await connection.send([HTTPRequest(target: "/hook", body: Array("secret".utf8))])
        guard case .failure(let failure)? = results.first else {
            Issue.record("sent: \(results)")
            return
        }
        #expect(failure.reason.contains("not sent in clear"), "\(failure.reason)")
        var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        #expect(poll(&poller, 1, 200) == 0, "a connection reached the listener")
        await connection.close()
    }
}
