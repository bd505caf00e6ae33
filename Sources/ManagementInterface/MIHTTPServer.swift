import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// MI over HTTP: `POST /mi` with a JSON-RPC body, `GET /metrics`, and without a token
/// `GET /health` (200 while the process runs) and `GET /ready` (200 once started, 503 while
/// starting or draining at shutdown, when `/mi` answers 503 too). With ``MIWeb``: the status
/// page (`GET /`, its stream `GET /status/stream`) and browser subscribers (`GET /events`, as
/// Server-Sent Events or, with `Upgrade: websocket`, a WebSocket).
///
/// A plain NIOHTTP1 handler rather than a framework: measured here a NIOHTTP1 handler served
/// ~69k req/s against Hummingbird 2's ~31k, and built in half the time. Immediate commands
/// (raise, lists) are answered on the event loop without a task hop.
public final class MIHTTPServer: MIListener {
    /// Largest request body accepted (Docs/mi.md); larger ones are read, discarded and answered 413.
    public static let maximumBodySize = 1 << 20

    public let channel: any Channel
    public var localPort: Int { channel.localAddress?.port ?? 0 }

    /// Binds the listener; throws at once when the address is taken.
    public static func bind(
        host: String, port: Int, group: any EventLoopGroup, mi: ManagementInterface,
        metrics: @escaping @Sendable () -> [UInt8], logger: Logger, limits: MIConnectionLimits = MIConnectionLimits(),
        paused: Bool = false, web: MIWeb? = nil
    ) async throws -> MIHTTPServer {
        let connections = MIConnectionTable(limit: limits.maxConnections)
        let hosts = MIHostPolicy(boundHost: host, allowedHosts: limits.allowedHosts)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.autoRead, value: !paused)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // No outbound header validation: every header this server writes is its own
                    // (the one taken from a request, the cookie, must equal the configured token).
                    // Nearest the socket: replies a peer does not read pause its requests.
                    let backlog = WriteBacklogHandler(listener: .miHTTP)
                    try channel.pipeline.syncOperations.addHandler(backlog)
                    let guardian = MIConnectionGuard(connections: connections, limits: limits, logger: logger)
                    try channel.pipeline.syncOperations.addHandler(guardian)
                    let handler = MIHTTPHandler(
                        mi: mi, metrics: metrics, guardian: guardian, backlog: backlog, hosts: hosts, logger: logger,
                        web: web)
                    if let web {
                        let upgrader = BrowserWebSocket.upgrader(
                            mi: mi, web: web, hosts: hosts, guardian: guardian, backlog: backlog, handler: handler,
                            logger: logger)
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
                            withErrorHandling: true, withOutboundHeaderValidation: false)
                    } else {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                            withErrorHandling: true, withOutboundHeaderValidation: false)
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: host, port: port).get()
        return MIHTTPServer(channel: channel, connections: connections)
    }

    let connections: MIConnectionTable

    private init(channel: any Channel, connections: MIConnectionTable) {
        self.channel = channel
        self.connections = connections
    }

    /// Connections open now.
    public var connectionCount: Int { connections.count }
}

/// First in every connection's pipeline, on raw bytes: admits the connection within
/// `max_connections` and drives its ``MIConnectionGuardState`` (which decides when a connection
/// idle or slow to send its request is closed) with the loop's clock and one timer. The HTTP
/// handler tells it where a request stands. State lives on the channel's event loop.
final class MIConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let connections: MIConnectionTable
    private let limits: MIConnectionLimits
    private let logger: Logger
    private var state: MIConnectionGuardState
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(connections: MIConnectionTable, limits: MIConnectionLimits, logger: Logger) {
        self.connections = connections
        self.limits = limits
        self.logger = logger
        state = MIConnectionGuardState(
            headerTimeoutNanoseconds: UInt64(max(0, limits.headerTimeout.nanoseconds)),
            idleTimeoutNanoseconds: UInt64(max(0, limits.idleTimeout.nanoseconds)))
    }

    private var now: UInt64 { context?.eventLoop.now.uptimeNanoseconds ?? 0 }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        apply(state.closed())
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        if let victim = connections.admit(context.channel) {
            logger.debug("MI HTTP connection cap reached: closing one", metadata: ["cap": "\(limits.maxConnections)"])
            victim.close(promise: nil)
        }
        apply(state.opened(now: now))
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if state.phase == .idle { apply(state.bytesArrived(now: now)) }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        apply(state.closed())
        connections.remove(context.channel)
        context.fireChannelInactive()
    }

    /// The head arrived: the body has as long again.
    func headReceived() { apply(state.headReceived(now: now)) }

    func requestReceived() { state.requestReceived() }

    /// The reply went out on a connection that stays open.
    func replied() { apply(state.replied(now: now)) }

    /// The connection made a request that passed the token check (or needed none): told to
    /// the table once, not at every request.
    func authenticated() {
        guard state.authenticated(), let context else { return }
        connections.authenticated(context.channel)
    }

    /// The connection is a stream now (status page, SSE or WebSocket subscriber): it leaves the
    /// `max_connections` table (streams have their own cap) and no idle timer closes it.
    func becameStream() {
        apply(state.becameStream())
        context.map { connections.remove($0.channel) }
    }

    private func apply(_ action: MIConnectionGuardState.TimerAction) {
        switch action {
        case .none: break
        case .cancel:
            timer?.cancel()
            timer = nil
        case .schedule(let at): schedule(at: at)
        }
    }

    private func schedule(at: UInt64) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(at)) { bound.value.fired() }
    }

    private func fired() {
        timer = nil
        switch state.timerFired(now: now) {
        case .none: break
        case .schedule(let at): schedule(at: at)
        case .close(let reason):
            logger.debug("MI HTTP connection closed", metadata: ["reason": "\(reason.rawValue)"])
            context?.channel.close(promise: nil)
        }
    }
}

final class MIHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Body {
        case reading(ByteBuffer?)
        /// Answered already (401, 413) with `Connection: close`: what still comes is read and
        /// thrown away — at most 1 MiB or 1 s — so the client sees the reply rather than a reset.
        case discarding(Int)
    }

    /// Discarded after an early refusal before the connection is closed.
    static let discardLimit = 1 << 20

    private let mi: ManagementInterface
    private let metrics: @Sendable () -> [UInt8]
    private let guardian: MIConnectionGuard
    private let backlog: WriteBacklogHandler
    private let hosts: MIHostPolicy
    private let logger: Logger
    private let web: MIWeb?
    private var head: HTTPRequestHead?
    private var body = Body.reading(nil)
    /// A WebSocket upgrade refused (by ``BrowserWebSocket``): the request, and the status (and
    /// body) to answer when NIO reports the failed upgrade.
    var refusedUpgrade: (head: HTTPRequestHead, status: HTTPResponseStatus, body: [UInt8]?)?
    /// A WebSocket upgrade took a stream slot and has not become a subscriber yet: if the
    /// connection closes first (a client gone before the upgrade completed), the slot is given
    /// back here.
    var upgradeHoldsSlot = false
    /// A refused upgrade was answered: the connection closes, what comes after is not read.
    private var answeredRefusedUpgrade = false
    /// The address this connection came in on (a `Host` naming it is this listener).
    private var localAddress: String?
    /// The `Host` this connection's last request named, once allowed.
    private var allowedHost: String?

    func handlerAdded(context: ChannelHandlerContext) {
        localAddress = context.channel.localAddress?.ipAddress
    }
    /// Set once the connection is a stream: what it is, and its periodic writer.
    private var stream: (client: BrowserClient?, timer: RepeatedTask?)?

    init(
        mi: ManagementInterface, metrics: @escaping @Sendable () -> [UInt8], guardian: MIConnectionGuard,
        backlog: WriteBacklogHandler, hosts: MIHostPolicy, logger: Logger, web: MIWeb? = nil
    ) {
        self.hosts = hosts
        self.mi = mi
        self.metrics = metrics
        self.guardian = guardian
        self.backlog = backlog
        self.logger = logger
        self.web = web
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A stream reads nothing more: what a client sends on it is dropped. Nor does a refused
        // upgrade: NIO hands its request on after the refusal, which is answered already.
        if stream != nil || answeredRefusedUpgrade { return }
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            guardian.headReceived()
            head = requestHead
            body = .reading(nil)
            refuseEarly(context: context, head: requestHead)
        case .body(var chunk):
            switch body {
            case .discarding(let discarded):
                let total = discarded + chunk.readableBytes
                body = .discarding(total)
                if total > Self.discardLimit { context.close(promise: nil) }
            case .reading(var buffer):
                if (buffer?.readableBytes ?? 0) + chunk.readableBytes > MIHTTPServer.maximumBodySize {
                    body = .discarding(0)
                    if let head { refuse(context: context, head: head, status: .payloadTooLarge) }
                    return
                }
                if buffer == nil { buffer = chunk } else { buffer?.writeBuffer(&chunk) }
                body = .reading(buffer)
            }
        case .end:
            guardian.requestReceived()
            if case .discarding = body {
                context.close(promise: nil)
                return
            }
            guard let requestHead = head else { return }
            head = nil
            respond(context: context, head: requestHead)
        }
    }

    /// `401` and `413` are decided on the head and sent at once: an unauthenticated client cannot
    /// make the daemon buffer a body.
    private func refuseEarly(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = Self.path(head.uri)
        if let refusal = hostRefusal(head) {
            body = .discarding(0)
            return refuse(context: context, head: head, status: .forbidden, body: refusal)
        }
        guard path == "/mi" || path == "/metrics" || path == "/events" || path == "/status/stream" else { return }
        if path == "/mi", mi.readiness == .draining {
            body = .discarding(0)
            return refuse(context: context, head: head, status: .serviceUnavailable)
        }
        if !Self.isAuthorized(head, mi: mi) {
            body = .discarding(0)
            return refuse(
                context: context, head: head, status: .unauthorized, extraHeaders: [("WWW-Authenticate", "Bearer")])
        }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init),
            length > MIHTTPServer.maximumBodySize
        {
            body = .discarding(0)
            return refuse(context: context, head: head, status: .payloadTooLarge)
        }
        if path == "/mi", head.method == .POST, let refusal = Self.crossSiteRefusal(head) {
            body = .discarding(0)
            refuse(context: context, head: head, status: refusal)
        }
    }

    private func refuse(
        context: ChannelHandlerContext, head: HTTPRequestHead, status: HTTPResponseStatus, body: [UInt8]? = nil,
        extraHeaders: [(String, String)] = []
    ) {
        send(context, head, status: status, body: body, closeHeader: true, extraHeaders: extraHeaders)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    /// Every path but `/health` and `/ready` (probes, which tell nothing) needs a `Host` this
    /// listener answers to (``MIHostPolicy``): the `403` body that says which, or nil.
    func hostRefusal(_ head: HTTPRequestHead) -> [UInt8]? {
        let host = head.headers.first(name: "host")
        // A connection's requests name the same host: the policy is asked once, and a request
        // after it compares one string.
        if let host, host == allowedHost { return nil }
        guard !hosts.allows(host, arrivedAt: localAddress) else {
            allowedHost = host
            return nil
        }
        let path = Self.path(head.uri)
        guard path != "/health", path != "/ready" else { return nil }
        var writer = JSONWriter()
        writer.append(.object([EventField("error", .string("Host \(host ?? "") not allowed (mi.allowed_hosts)"))]))
        return writer.bytes
    }

    /// `Authorization: Bearer TOKEN` (scheme in any case), or the `evi_token` cookie the status
    /// page's `/?token=` sets (a browser cannot put a header on an EventSource or a WebSocket),
    /// compared in constant time; always true without `mi.token`.
    static func isAuthorized(_ head: HTTPRequestHead, mi: ManagementInterface) -> Bool {
        guard mi.token != nil else { return true }
        if let value = head.headers.first(name: "authorization") {
            let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
            return mi.isToken(String(parts[1]).trimmingWhitespace().utf8)
        }
        guard let token = cookie("evi_token", in: head.headers) else { return false }
        return mi.isToken(token.utf8)
    }

    /// The value of cookie `name`, if the request carries it.
    static func cookie(_ name: String, in headers: HTTPHeaders) -> String? {
        for header in headers[canonicalForm: "cookie"] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, String(parts[0]).trimmingWhitespace() == name {
                    return String(parts[1]).trimmingWhitespace()
                }
            }
        }
        return nil
    }

    /// A POST to `/mi` from another site's page: its `Content-Type` is not JSON (a form or a
    /// "simple" cross-site request, 415), or its `Origin` is not this listener's own (403).
    /// opensips-cli and evi's own client send JSON and no Origin.
    static func crossSiteRefusal(_ head: HTTPRequestHead) -> HTTPResponseStatus? {
        guard let type = head.headers.first(name: "content-type"),
            type == "application/json"
                || String(type.prefix { $0 != ";" }).trimmingWhitespace().lowercased() == "application/json"
        else { return .unsupportedMediaType }
        if let origin = head.headers.first(name: "origin"), !isSameOrigin(origin, head) { return .forbidden }
        return nil
    }

    /// Whether `origin` is the page of this very listener: `http://` and the request's `Host`
    /// (which ``hostRefusal(_:)`` has checked is one of the listener's own).
    static func isSameOrigin(_ origin: String, _ head: HTTPRequestHead) -> Bool {
        guard let host = head.headers.first(name: "host") else { return false }
        return origin.lowercased() == "http://\(host.lowercased())"
    }

    private static func path(_ uri: String) -> String {
        uri.firstIndex(of: "?").map { String(uri[..<$0]) } ?? uri
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        switch Self.path(head.uri) {
        case "/mi":
            guard head.method == .POST else {
                return send(context, head, status: .methodNotAllowed, body: nil, extraHeaders: [("Allow", "POST")])
            }
            guardian.authenticated()
            var bytes: [UInt8] = []
            if case .reading(let buffer?) = body { bytes = Array(buffer.readableBytesView) }
            body = .reading(nil)
            switch mi.process(bytes, origin: .http) {
            case .done(let reply):
                send(context, head, reply: reply)
            case .pending(let work):
                let promise = context.eventLoop.makePromise(of: [UInt8]?.self)
                promise.completeWithTask { await work() }
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                promise.futureResult.whenSuccess { reply in
                    let (handler, context) = bound.value
                    handler.send(context, head, reply: reply)
                }
            }
        case "/metrics":
            guard head.method == .GET else {
                return send(context, head, status: .methodNotAllowed, body: nil, extraHeaders: [("Allow", "GET")])
            }
            guardian.authenticated()
            // Rendered off the event loop: with thousands of events a first scrape takes a while.
            let metrics = self.metrics
            let promise = context.eventLoop.makePromise(of: [UInt8].self)
            promise.completeWithTask { metrics() }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { body in
                let (handler, context) = bound.value
                handler.send(
                    context, head, status: .ok, body: body, contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        case "/", "/index.html":
            guard web != nil else { return send(context, head, status: .notFound, body: nil) }
            page(context: context, head: head)
        case "/status/stream":
            guard let web else { return send(context, head, status: .notFound, body: nil) }
            statusStream(context: context, head: head, web: web)
        case "/events":
            guard let web else { return send(context, head, status: .notFound, body: nil) }
            eventStream(context: context, head: head, web: web)
        case "/health":
            send(context, head, status: .ok, body: Array(#"{"status":"up"}"#.utf8))
        case "/ready":
            let readiness = mi.readiness
            var body = #"{"ready":\#(readiness == .ready),"state":"\#(readiness)""#
            if let up = mi.stateStoreUp.withLock({ $0 }) {
                body += #","state_store":"\#(up() ? "up" : "unreachable")""#
            }
            if let tls = mi.stateStoreTLS.withLock({ $0 }) { body += #","state_store_tls":\#(tls())"# }
            body += "}"
            send(context, head, status: readiness == .ready ? .ok : .serviceUnavailable, body: Array(body.utf8))
        default:
            send(context, head, status: .notFound, body: nil)
        }
    }

    private func send(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, reply: [UInt8]?) {
        if let reply {
            send(context, head, status: .ok, body: reply)
        } else {
            send(context, head, status: .noContent, body: nil)
        }
    }

    /// Writes a whole response. With `closeHeader` it says `Connection: close` and leaves the
    /// closing to the caller (an early refusal still reads what the client sends).
    private func send(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, status: HTTPResponseStatus, body: [UInt8]?,
        contentType: String = "application/json", closeHeader: Bool = false, extraHeaders: [(String, String)] = []
    ) {
        let keepAlive = request.isKeepAlive && !closeHeader
        var headers = HTTPHeaders()
        if status != .noContent {
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        }
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if request.version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
            promise: nil)
        if let body, !body.isEmpty {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            guardian.replied()
            return
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        guard !closeHeader else { return }
        let channel = context.channel
        done.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOWebSocketUpgradeError, let (head, status, body) = refusedUpgrade {
            refusedUpgrade = nil
            answeredRefusedUpgrade = true
            var headers: [(String, String)] = []
            if status == .unauthorized { headers.append(("WWW-Authenticate", "Bearer")) }
            if status == .methodNotAllowed { headers.append(("Allow", "GET")) }
            send(context, head, status: status, body: body, closeHeader: true, extraHeaders: headers)
            let channel = context.channel
            context.eventLoop.scheduleTask(in: .milliseconds(100)) { channel.close(promise: nil) }
            return
        }
        logger.debug("MI HTTP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if upgradeHoldsSlot, let web {
            upgradeHoldsSlot = false
            web.streams.release()
        }
        if let stream, let web {
            stream.timer?.cancel()
            if let client = stream.client { web.streams.closed(client) } else { web.feed.remove(context.channel) }
            web.streams.release()
            self.stream = nil
        }
        context.fireChannelInactive()
    }

    /// `GET /`: the status page; `/?token=T` with the right token sets the `evi_token` cookie
    /// and redirects to `/` (so the token leaves the address bar and history).
    private func page(context: ChannelHandlerContext, head: HTTPRequestHead) {
        guard head.method == .GET || head.method == .HEAD else {
            return send(context, head, status: .methodNotAllowed, body: nil, extraHeaders: [("Allow", "GET")])
        }
        let query = Self.query(head.uri)
        if let token = query.first(where: { $0.name == "token" })?.value {
            guard mi.token == nil || mi.isToken(token.utf8) else {
                return send(
                    context, head, status: .unauthorized, body: Array(StatusPage.login.utf8),
                    contentType: "text/html; charset=utf-8")
            }
            var headers: [(String, String)] = [("Location", "/"), ("Cache-Control", "no-store")]
            if mi.token != nil {
                headers.append(("Set-Cookie", "evi_token=\(token); Path=/; HttpOnly; SameSite=Strict"))
            }
            return send(context, head, status: .seeOther, body: nil, extraHeaders: headers)
        }
        guard Self.isAuthorized(head, mi: mi) else {
            return send(
                context, head, status: .unauthorized, body: Array(StatusPage.login.utf8),
                contentType: "text/html; charset=utf-8")
        }
        guardian.authenticated()
        send(
            context, head, status: .ok, body: Array(StatusPage.html.utf8), contentType: "text/html; charset=utf-8",
            extraHeaders: [
                ("Cache-Control", "no-store"),
                (
                    "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
                ),
                ("X-Frame-Options", "DENY"),
            ])
    }

    /// `NAME=VALUE` pairs of the request's query, percent-decoded.
    static func query(_ uri: String) -> [(name: String, value: String)] {
        guard let question = uri.firstIndex(of: "?") else { return [] }
        return uri[uri.index(after: question)...].split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (
                PercentEncoding.decode(parts[0], plusIsSpace: true),
                parts.count > 1 ? PercentEncoding.decode(parts[1], plusIsSpace: true) : ""
            )
        }
    }

    /// Starts a Server-Sent Events response: the head (no length: chunked) and a first comment.
    private func startStream(context: ChannelHandlerContext, head: HTTPRequestHead, comment: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-store")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil
        )
        var buffer = context.channel.allocator.buffer(capacity: comment.utf8.count + 4)
        buffer.writeString(": \(comment)\n\n")
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// Takes a stream slot for this connection, or answers 503 at `mi.max_stream_clients`.
    private func admitStream(context: ChannelHandlerContext, head: HTTPRequestHead, web: MIWeb) -> Bool {
        guard web.streams.admit() else {
            send(
                context, head, status: .serviceUnavailable,
                body: Array(#"{"error":"too many streams (mi.max_stream_clients)"}"#.utf8), closeHeader: true)
            context.close(promise: nil)
            return false
        }
        guardian.authenticated()
        guardian.becameStream()
        backlog.listener = .sse
        return true
    }

    /// `GET /status/stream`: the status page's snapshots, two a second (a change shows within a
    /// second), as Server-Sent Events.
    private func statusStream(context: ChannelHandlerContext, head: HTTPRequestHead, web: MIWeb) {
        guard head.method == .GET else {
            return send(context, head, status: .methodNotAllowed, body: nil, extraHeaders: [("Allow", "GET")])
        }
        guard admitStream(context: context, head: head, web: web) else { return }
        startStream(context: context, head: head, comment: "evi status")
        web.feed.add(context.channel)
        stream = (nil, nil)
    }

    /// `GET /events?event=E_A&event=E_B[&filter=F]`: this connection becomes a subscriber of those
    /// events (`sse:IP:PORT`), receiving each (that `F` selects) as an SSE message whose data is the
    /// JSON-RPC notification.
    private func eventStream(context: ChannelHandlerContext, head: HTTPRequestHead, web: MIWeb) {
        guard head.method == .GET else {
            return send(context, head, status: .methodNotAllowed, body: nil, extraHeaders: [("Allow", "GET")])
        }
        let query = Self.query(head.uri)
        let events = query.filter { $0.name == "event" }.map(\.value)
        guard !events.isEmpty, events.count <= 64 else {
            return send(
                context, head, status: .badRequest,
                body: Array(#"{"error":"name 1 to 64 events: /events?event=E_A&event=E_B"}"#.utf8))
        }
        let filters = query.filter { $0.name == "filter" }.map(\.value)
        var filter: EventFilter?
        do throws(FilterError) {
            guard filters.count <= 1 else { throw FilterError("give at most one filter") }
            if let text = filters.first, !text.isEmpty { filter = try EventFilter(parsing: text) }
        } catch {
            var writer = JSONWriter()
            writer.append(.object([EventField("error", .string("filter: \(error.message)"))]))
            return send(context, head, status: .badRequest, body: writer.bytes)
        }
        if let unknown = events.first(where: { web.streams.hub?.event(named: $0) == nil }) {
            var writer = JSONWriter()
            writer.append(.object([EventField("error", .string("event \(unknown) is not published"))]))
            return send(context, head, status: .notFound, body: writer.bytes)
        }
        guard admitStream(context: context, head: head, web: web) else { return }
        let client = BrowserClient(kind: .sse, channel: context.channel)
        web.streams.register(client)
        startStream(context: context, head: head, comment: "subscribed \(events.joined(separator: " "))")
        let channel = context.channel
        let timer = context.eventLoop.scheduleRepeatedTask(
            initialDelay: web.streams.pingInterval, delay: web.streams.pingInterval
        ) { _ in
            var ping = channel.allocator.buffer(capacity: 8)
            ping.writeString(": ping\n\n")
            channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ping)), promise: nil)
        }
        stream = (client, timer)
        let streams = web.streams
        Task {
            if let failure = await streams.subscribe(client, to: events, filter: filter) {
                client.drop(reason: failure)
            }
        }
    }
}

/// The MI listener's web side: the browser streams and the status page's snapshot.
public struct MIWeb: Sendable {
    public let streams: BrowserStreams
    public let status: @Sendable () async -> [UInt8]
    /// The open status pages, fed one rendering per tick.
    let feed: StatusFeed

    public init(streams: BrowserStreams, status: @escaping @Sendable () async -> [UInt8]) {
        self.streams = streams
        self.status = status
        feed = StatusFeed(render: status)
    }
}
