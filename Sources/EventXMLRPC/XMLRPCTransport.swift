import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix

/// The `event_xmlrpc` module options.
public struct XMLRPCOptions: Sendable, Hashable {
    /// Pack named parameters into one `<struct>` (what standard XML-RPC peers expect).
    public var useStructParam = false
    /// Connect plus request-to-reply time limit.
    public var timeout: Duration = .milliseconds(1000)

    public init(useStructParam: Bool = false, timeout: Duration = .milliseconds(1000)) {
        self.useStructParam = useStructParam
        self.timeout = timeout
    }
}

/// `xmlrpc:HOST:PORT:METHOD`: an HTTP/1.1 `POST /RPC2` with an XML-RPC call per event.
public final class XMLRPCTransport: EventTransport {
    public let options: XMLRPCOptions
    let group: any EventLoopGroup

    public init(
        options: XMLRPCOptions = XMLRPCOptions(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.group = group
    }

    public var scheme: String { "xmlrpc" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "xmlrpc:" + address
        guard let colon = address.lastIndex(of: ":"), address[..<colon].contains(":") else {
            throw SocketError("xmlrpc socket needs HOST:PORT:METHOD: \(text)")
        }
        let method = String(address[address.index(after: colon)...])
        guard !method.isEmpty, method.allSatisfy({ $0.isLetter || $0.isNumber || "_.-:/".contains($0) }),
            method.unicodeScalars.allSatisfy(\.isASCII)
        else {
            throw SocketError("bad xmlrpc method '\(method)' (letters, digits, _ . - : /): \(text)")
        }
        let hostPort = try HostPort.parse(String(address[..<colon]), scheme: "xmlrpc", socket: text)
        let resolved = try await context.resolve(hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: text)
        return XMLRPCSocket(hostPort: hostPort, method: method, address: resolved, transport: self)
    }
}

public struct XMLRPCSocket: DeliverySocket {
    public let hostPort: HostPort
    public let method: String
    let address: ResolvedAddress
    let transport: XMLRPCTransport

    public var scheme: String { "xmlrpc" }
    public var description: String { "xmlrpc:\(hostPort):\(method)" }

    public func matches(_ other: any EventSocket) -> Bool {
        guard let other = other as? XMLRPCSocket else { return false }
        return other.hostPort == hostPort && other.method == method
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        XMLRPCDeliverer(
            socket: self, format: XMLRPCFormat(method: method, useStructParam: transport.options.useStructParam),
            timeout: transport.options.timeout, group: transport.group, logger: context.logger)
    }
}

struct XMLRPCFormat: PayloadFormat {
    let method: String
    let useStructParam: Bool
    func encode(_ event: RaisedEvent) -> [UInt8] {
        XMLRPCBody.encode(method: method, event: event.name, params: event.params, useStructParam: useStructParam)
    }
}

/// One keep-alive HTTP connection (``HTTPConnection``, shared with the webhook and sqs
/// transports): after a failure deliveries fail at once while it reconnects with backoff; a server
/// that closes the connection after answering is no failure.
final class XMLRPCDeliverer: BatchDeliverer {
    let format: XMLRPCFormat
    let connection: HTTPConnection

    init(socket: XMLRPCSocket, format: XMLRPCFormat, timeout: Duration, group: any EventLoopGroup, logger: Logger) {
        self.format = format
        connection = HTTPConnection(
            url: HTTPURL(isTLS: false, hostPort: socket.hostPort, target: "/RPC2"), address: socket.address, tls: nil,
            timeout: timeout, userAgent: "evi XML-RPC notifier", group: group, logger: logger)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        let requests = events.map { event in
            HTTPRequest(target: "/RPC2", headers: ["Content-Type": "text/xml"], body: event.payload(format))
        }
        return await connection.send(requests).map { result in
            switch result {
            case .failure(let failure): return .failed(failure)
            case .success(let reply):
                guard (200..<300).contains(reply.status) else {
                    return .failed(DeliveryFailure(.subscriberFailed, "HTTP \(reply.status)"))
                }
                // A fault is a <fault> element in the methodResponse.
                if reply.body.firstRange(of: Array("<fault>".utf8)) != nil {
                    return .failed(DeliveryFailure(.subscriberFailed, "XML-RPC fault"))
                }
                return .delivered
            }
        }
    }

    func close() async {
        await connection.close()
    }
}
