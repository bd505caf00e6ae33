import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

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

/// One keep-alive HTTP connection, one request at a time, held by the shared reconnect state
/// machine: after a failure (refused, reset, no reply in time) deliveries fail at once while a
/// timer reconnects with backoff, as tcp and rabbitmq do; a server that closes the connection
/// after answering is no failure (the next delivery opens a new one).
final class XMLRPCDeliverer: EventDeliverer {
    let socket: XMLRPCSocket
    let format: XMLRPCFormat
    let timeout: TimeAmount
    private let link = Mutex<ReconnectingChannel?>(nil)

    init(socket: XMLRPCSocket, format: XMLRPCFormat, timeout: Duration, group: any EventLoopGroup, logger: Logger) {
        self.socket = socket
        self.format = format
        self.timeout = TimeAmount(timeout)
        let connection = ReconnectingChannel(name: socket.description, group: group, logger: logger) {
            [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await self.open(group: group)
        }
        link.withLock { $0 = connection }
    }

    private var connection: ReconnectingChannel? { link.withLock { $0 } }

    private func open(group: any EventLoopGroup) async -> Result<any Channel, DeliveryFailure> {
        let onClose: @Sendable (any Channel, Bool) -> Void = { [weak self] channel, outstanding in
            if outstanding {
                self?.connection?.lost(channel, reason: "connection closed before the reply")
            } else {
                self?.connection?.ended(channel)
            }
        }
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseHandler(onClose: onClose))
                    }
                }
                .connect(to: try socket.address.socketAddress()).get()
            return .success(channel)
        } catch {
            return .failure(.connectFailure(error))
        }
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        let body = event.payload(format)
        let deadline = NIODeadline.now() + timeout
        let channel: any Channel
        switch await connection?.channel() ?? .failure(DeliveryFailure(.subscriberFailed, "shutting down")) {
        case .success(let open): channel = open
        case .failure(let failure): return .failed(failure)
        }
        let host = socket.hostPort.description
        // The request is written and its reply awaited on the channel's event loop, where the
        // response handler keeps its state.
        let response = channel.eventLoop.flatSubmit { () -> EventLoopFuture<ResponseHandler.Response> in
            let promise = channel.eventLoop.makePromise(of: ResponseHandler.Response.self)
            do {
                try channel.pipeline.syncOperations.handler(type: ResponseHandler.self).expect(promise)
            } catch {
                promise.succeed(ResponseHandler.Response(outcome: .failure("connection closed"), keepAlive: false))
                return promise.futureResult
            }
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: host)
            headers.add(name: "User-Agent", value: "evi XML-RPC notifier")
            headers.add(name: "Content-Type", value: "text/xml")
            headers.add(name: "Content-Length", value: String(body.count))
            channel.write(
                HTTPClientRequestPart.head(
                    HTTPRequestHead(version: .http1_1, method: .POST, uri: "/RPC2", headers: headers)), promise: nil)
            channel.write(
                HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            return promise.futureResult
        }
        let remaining = deadline - NIODeadline.now()
        guard let reply = await response.value(within: max(remaining, .milliseconds(1))) else {
            connection?.lost(channel, reason: "reply timeout")
            channel.close(promise: nil)
            return .failed(DeliveryFailure(.subscriberFailed, "reply timeout"))
        }
        if !reply.keepAlive { channel.close(promise: nil) }
        switch reply.outcome {
        case .failure(let reason): return .failed(DeliveryFailure(.subscriberFailed, reason))
        case .success(let (status, body)):
            guard (200..<300).contains(status) else {
                return .failed(DeliveryFailure(.subscriberFailed, "HTTP \(status)"))
            }
            if body.contains("<fault>") { return .failed(DeliveryFailure(.subscriberFailed, "XML-RPC fault")) }
            return .delivered
        }
    }

    func close() async {
        await connection?.close()
    }
}

/// Collects the HTTP response to the one request the deliverer is waiting on. Its state lives on
/// the channel's event loop (the deliverer hands it each request there); it tells the deliverer
/// when the connection closes and whether a request was still waiting.
final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    struct Response: Sendable {
        enum Outcome: Sendable {
            case success((status: Int, body: String))
            case failure(String)
        }
        var outcome: Outcome
        var keepAlive: Bool
    }

    /// The largest XML-RPC reply read (a `methodResponse` is a few hundred bytes).
    static let maximumReply = 1 << 20

    private let onClose: @Sendable (any Channel, Bool) -> Void
    private var waiting: EventLoopPromise<Response>?
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(onClose: @escaping @Sendable (any Channel, Bool) -> Void) {
        self.onClose = onClose
    }

    /// The next response answers `promise` (on the event loop).
    func expect(_ promise: EventLoopPromise<Response>) {
        waiting = promise
        head = nil
        body = []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead): head = responseHead
        case .body(let buffer):
            // A reply is read whole only up to `maximumReply`: a peer streaming gigabytes fails
            // the delivery and loses its connection instead of taking the daemon's memory.
            guard body.count + buffer.readableBytes <= Self.maximumReply else {
                let promise = waiting
                waiting = nil
                body = []
                promise?.succeed(
                    Response(outcome: .failure("reply larger than \(Self.maximumReply >> 20) MiB"), keepAlive: false))
                context.close(promise: nil)
                return
            }
            body += buffer.readableBytesView
        case .end:
            let response = Response(
                outcome: .success((Int(head?.status.code ?? 0), String(decoding: body, as: UTF8.self))),
                keepAlive: head?.isKeepAlive ?? false)
            let promise = waiting
            waiting = nil
            head = nil
            body = []
            promise?.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let promise = waiting
        waiting = nil
        onClose(context.channel, promise != nil)
        promise?.succeed(Response(outcome: .failure("connection closed before the reply"), keepAlive: false))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
