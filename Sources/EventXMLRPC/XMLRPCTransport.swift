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
            timeout: transport.options.timeout, group: transport.group)
    }
}

struct XMLRPCFormat: PayloadFormat {
    let method: String
    let useStructParam: Bool
    var key: String { "xmlrpc:\(method):\(useStructParam)" }
    func encode(_ event: RaisedEvent) -> [UInt8] {
        XMLRPCBody.encode(method: method, event: event.name, params: event.params, useStructParam: useStructParam)
    }
}

/// One keep-alive HTTP connection, one request at a time.
final class XMLRPCDeliverer: EventDeliverer {
    let socket: XMLRPCSocket
    let format: XMLRPCFormat
    let timeout: TimeAmount
    let group: any EventLoopGroup
    private let connection = Mutex<(channel: (any Channel)?, handler: ResponseHandler?)>((nil, nil))

    init(socket: XMLRPCSocket, format: XMLRPCFormat, timeout: Duration, group: any EventLoopGroup) {
        self.socket = socket
        self.format = format
        self.timeout = TimeAmount(timeout)
        self.group = group
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        let body = event.payload(format)
        let deadline = NIODeadline.now() + timeout
        let channel: any Channel
        let handler: ResponseHandler
        let open = connection.withLock { $0 }
        if let openChannel = open.channel, let openHandler = open.handler, openChannel.isActive {
            (channel, handler) = (openChannel, openHandler)
        } else {
            let created = ResponseHandler()
            do {
                channel = try await ClientBootstrap(group: group)
                    .connectTimeout(timeout)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            try channel.pipeline.syncOperations.addHandler(created)
                        }
                    }
                    .connect(to: try socket.address.socketAddress()).get()
            } catch {
                let text = "\(error)"
                let reason =
                    text.contains("refused") || text.contains("errno: 111")
                    ? "connection refused" : "cannot connect: \(text)"
                return .failed(DeliveryFailure(.subscriberFailed, reason))
            }
            handler = created
            connection.withLock { $0 = (channel, created) }
        }
        let response = channel.eventLoop.makePromise(of: ResponseHandler.Response.self)
        handler.expect(response)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: socket.hostPort.description)
        headers.add(name: "User-Agent", value: "evi XML-RPC notifier")
        headers.add(name: "Content-Type", value: "text/xml")
        headers.add(name: "Content-Length", value: String(body.count))
        channel.write(
            HTTPClientRequestPart.head(
                HTTPRequestHead(version: .http1_1, method: .POST, uri: "/RPC2", headers: headers)), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let remaining = deadline - NIODeadline.now()
        guard let reply = await response.futureResult.value(within: max(remaining, .milliseconds(1))) else {
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
        let channel = connection.withLock { state -> (any Channel)? in
            defer { state = (nil, nil) }
            return state.channel
        }
        try? await channel?.close()
    }
}

/// Collects one HTTP response at a time for the request the deliverer is waiting on.
final class ResponseHandler: ChannelInboundHandler, Sendable {
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

    private struct State {
        var waiting: EventLoopPromise<Response>?
        var head: HTTPResponseHead?
        var body: [UInt8] = []
    }
    private let state = Mutex(State())

    func expect(_ promise: EventLoopPromise<Response>) {
        state.withLock { $0 = State(waiting: promise) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): state.withLock { $0.head = head }
        case .body(let buffer):
            // A reply is read whole only up to `maximumReply`: a peer streaming gigabytes fails
            // the delivery and loses its connection instead of taking the daemon's memory.
            let overflow = state.withLock { state -> EventLoopPromise<Response>? in
                guard state.body.count + buffer.readableBytes > Self.maximumReply else {
                    state.body += buffer.readableBytesView
                    return nil
                }
                defer { state = State() }
                return state.waiting
            }
            if let overflow {
                overflow.succeed(
                    Response(outcome: .failure("reply larger than \(Self.maximumReply >> 20) MiB"), keepAlive: false))
                context.close(promise: nil)
            }
        case .end:
            let (promise, response) = state.withLock { state -> (EventLoopPromise<Response>?, Response) in
                let status = Int(state.head?.status.code ?? 0)
                let keepAlive = state.head?.isKeepAlive ?? false
                let response = Response(
                    outcome: .success((status, String(decoding: state.body, as: UTF8.self))), keepAlive: keepAlive)
                defer { state = State() }
                return (state.waiting, response)
            }
            promise?.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let promise = state.withLock { state -> EventLoopPromise<Response>? in
            defer { state = State() }
            return state.waiting
        }
        promise?.succeed(Response(outcome: .failure("connection closed before the reply"), keepAlive: false))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
