import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The `event_webhook` module options.
public struct WebhookOptions: Sendable, Hashable {
    /// Signs every request (Standard Webhooks) unless a subscription has its own; nil: unsigned.
    public var secret: WebhookSecret?
    /// Trusted CAs for https webhooks (default: the system's).
    public var caFile: String?
    /// Connect, and the longest wait for each reply.
    public var timeout: Duration = .milliseconds(5000)

    public init() {}
}

/// The secrets subscriptions of the configuration file give their webhooks
/// (`subscriptions[].secret`), by URL: the only place a per-subscription secret can come from
/// (an MI subscribe cannot carry one, so that secrets never travel in MI requests).
public final class WebhookSecrets: Sendable {
    private let byURL = Mutex<[String: WebhookSecret]>([:])

    public init() {}

    /// `secret` for every webhook URL in `socket` (itself, or a virtual socket's members).
    /// Throws when the socket has none, or a URL already has another secret.
    public func assign(_ secret: WebhookSecret, socket: String) throws(ConfigurationError) {
        let urls = socket.split(separator: " ").compactMap { word -> String? in
            guard word.hasPrefix("http://") || word.hasPrefix("https://") else { return nil }
            return (try? HTTPURL.parse(String(word), socket: String(word)))?.description
        }
        guard !urls.isEmpty else {
            throw ConfigurationError("secret applies to http:// and https:// sockets: \(socket)")
        }
        try byURL.withLock { (table) throws(ConfigurationError) in
            for url in urls {
                if let existing = table[url], existing != secret {
                    throw ConfigurationError("\(url) has two different secrets in subscriptions")
                }
                table[url] = secret
            }
        }
    }

    func secret(for url: HTTPURL) -> WebhookSecret? { byURL.withLock { $0[url.description] } }
}

/// `http://HOST[:PORT]/PATH` and `https://…`: the URL is the socket. Each event is POSTed as its
/// JSON-RPC notification, signed as Standard Webhooks says when a secret is configured.
public final class WebhookTransport: EventTransport {
    public let scheme: String
    public let options: WebhookOptions
    let secrets: WebhookSecrets
    let tls: ReloadableTLS?
    let group: any EventLoopGroup

    /// - Parameter isTLS: the `https` transport (else `http`).
    public init(
        isTLS: Bool, options: WebhookOptions = WebhookOptions(), secrets: WebhookSecrets = WebhookSecrets(),
        tls: ReloadableTLS? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        scheme = isTLS ? "https" : "http"
        self.options = options
        self.secrets = secrets
        self.tls = tls
        self.group = group
    }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "\(scheme):\(address)"
        let url = try HTTPURL.parse(text, socket: text)
        if url.isTLS { _ = try ReloadableTLS.client(of: tls, socket: text, option: "modules.event_webhook.ca_file") }
        let resolved = try await context.resolve(url.hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: text)
        return WebhookSocket(url: url, resolved: resolved, transport: self)
    }
}

public struct WebhookSocket: DeliverySocket {
    public let url: HTTPURL
    let resolved: ResolvedAddress
    let transport: WebhookTransport

    public var scheme: String { url.scheme }
    public var description: String { url.description }
    /// A URL's query may carry a token (user information is refused at parsing).
    public var secrets: [String] {
        url.target.contains("?")
            ? ["the query of \(url.scheme)://\(url.authority)\(url.path) (it may carry a token)"] : []
    }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? WebhookSocket)?.url == url
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        WebhookDeliverer(
            url: url,
            connection: HTTPConnection(
                url: url, address: resolved, tls: url.isTLS ? try? transport.tls?.current().client : nil,
                timeout: transport.options.timeout,
                userAgent: "evi webhook", group: transport.group, logger: context.logger),
            secret: transport.secrets.secret(for: url) ?? transport.options.secret)
    }
}

/// A per-event `webhook-id`: `msg_` and 24 random hex digits, made on first use and kept with the
/// event, so a retry (or a FAILOVER's return) sends the same id and the receiver can tell.
struct WebhookMessageID: PayloadFormat {
    func encode(_ event: RaisedEvent) -> [UInt8] {
        // Two draws of 64 bits (one system call each), not one per digit.
        var generator = SystemRandomNumberGenerator()
        let bits = (generator.next() as UInt64, generator.next() as UInt64)
        let digits = Array("0123456789abcdef".utf8)
        var id = Array("msg_".utf8)
        for index in 0..<24 {
            let word = index < 16 ? bits.0 : bits.1
            id.append(digits[Int(word >> UInt64((index % 16) * 4) & 0xF)])
        }
        return id
    }
}

final class WebhookDeliverer: BatchDeliverer {
    let url: HTTPURL
    let connection: HTTPConnection
    let secret: WebhookSecret?

    init(url: HTTPURL, connection: HTTPConnection, secret: WebhookSecret?) {
        self.url = url
        self.connection = connection
        self.secret = secret
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(.jsonRPC)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        let timestamp = time(nil)
        let requests = events.map { event -> HTTPRequest in
            let body = event.payload(.jsonRPC)
            var headers: HTTPHeaders = ["Content-Type": "application/json"]
            if let secret {
                let id = String(decoding: event.payload(WebhookMessageID()), as: UTF8.self)
                headers.add(name: "webhook-id", value: id)
                headers.add(name: "webhook-timestamp", value: String(timestamp))
                headers.add(
                    name: "webhook-signature", value: secret.signature(id: id, timestamp: timestamp, body: body))
            }
            return HTTPRequest(target: url.target, headers: headers, body: body)
        }
        return await connection.send(requests).map(Self.outcome)
    }

    /// 2xx delivered; 410 Gone: the receiver wants no more; anything else fails with the status.
    static func outcome(_ result: Result<HTTPReply, DeliveryFailure>) -> DeliveryOutcome {
        switch result {
        case .failure(let failure): return .failed(failure)
        case .success(let reply):
            if (200..<300).contains(reply.status) { return .delivered }
            if reply.status == 410 { return .failed(DeliveryFailure(.subscriberGone, "HTTP 410 Gone")) }
            return .failed(DeliveryFailure(.subscriberFailed, "HTTP \(reply.status)"))
        }
    }

    func close() async {
        await connection.close()
    }
}
