import EventInterface
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTP request a transport sends (xmlrpc, webhook, sqs).
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var target: String
    /// `Host` and `Content-Length` are added by the connection.
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(method: HTTPMethod = .POST, target: String, headers: HTTPHeaders = [:], body: [UInt8]) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }
}

/// What came back: the status, headers and (bounded) body.
public struct HTTPReply: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// One keep-alive HTTP/1.1 connection to one origin, held by the shared reconnect state machine
/// (``ReconnectingChannel``): after a failure (refused, reset, TLS error, no reply in time)
/// requests fail at once while a timer reconnects with backoff, as tcp and rabbitmq do.
///
/// A batch is pipelined: every request is written before the first reply is awaited, so a
/// delivery batch costs one round trip, not one per event. A server that closes the connection
/// after a reply (`Connection: close`) is no failure: the requests it did not answer were not
/// processed, and are sent again on a new connection.
public final class HTTPConnection: Sendable {
    public let url: HTTPURL
    let address: ResolvedAddress
    let tls: NIOSSLContext?
    let timeout: TimeAmount
    let maximumReply: Int
    let userAgent: String
    private let link = Mutex<ReconnectingChannel?>(nil)

    /// - Parameters:
    ///   - tls: the client context for `https` (nil for `http`).
    ///   - timeout: connect time, and the longest wait for each reply (from the previous one).
    ///   - maximumReply: the largest reply body read; a larger one fails its request and the
    ///     connection (a peer streaming gigabytes does not take the daemon's memory).
    public init(
        url: HTTPURL, address: ResolvedAddress, tls: NIOSSLContext?, timeout: Duration, maximumReply: Int = 1 << 20,
        userAgent: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.url = url
        self.address = address
        self.tls = tls
        self.timeout = TimeAmount(timeout)
        self.maximumReply = maximumReply
        self.userAgent = userAgent
        let connection = ReconnectingChannel(name: url.description, group: group, logger: logger) { [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await self.open(group: group)
        }
        link.withLock { $0 = connection }
    }

    private var connection: ReconnectingChannel? { link.withLock { $0 } }

    private func open(group: any EventLoopGroup) async -> Result<any Channel, DeliveryFailure> {
        // An https URL never goes out in clear: without a TLS context (one that failed to load
        // when the deliverer was made) there is no connection, and the reason says why.
        guard tls != nil || !url.isTLS else {
            return .failure(
                DeliveryFailure(.subscriberFailed, "no TLS context for \(url.description): not sent in clear"))
        }
        let onClose: @Sendable (any Channel, String?) -> Void = { [weak self] channel, failure in
            if let failure {
                self?.connection?.lost(channel, reason: failure)
            } else {
                self?.connection?.ended(channel)
            }
        }
        let tls = self.tls
        let serverName = url.hostPort.nameToVerify
        let maximumReply = self.maximumReply
        let timeout = self.timeout
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: tls, serverHostname: serverName))
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPReplyHandler(maximumReply: maximumReply, timeout: timeout, onClose: onClose))
                    }
                }
                .connect(to: try address.socketAddress()).get()
            return .success(channel)
        } catch {
            return .failure(.connectFailure(error))
        }
    }

    /// Sends `requests` in order and returns their replies in the same order: a reply of any
    /// status is a success here (what a status means is the transport's business); a failure is
    /// a request that got no reply, with the reason.
    public func send(_ requests: [HTTPRequest]) async -> [Result<HTTPReply, DeliveryFailure>] {
        var results: [Result<HTTPReply, DeliveryFailure>?] = Array(repeating: nil, count: requests.count)
        var next = 0
        var resentOnce = false
        // Each round sends what is left on the open (or a new) connection. A round that gets no
        // reply at all ends the loop, except once on a connection that had served earlier
        // requests: a server may close an idle keep-alive connection just as a request is
        // written, and that request is then sent again on a new one. Bounded by the number of
        // requests plus one.
        while next < requests.count {
            let channel: any Channel
            switch await connection?.channel() ?? .failure(DeliveryFailure(.subscriberFailed, "shutting down")) {
            case .success(let open): channel = open
            case .failure(let failure):
                for index in next..<requests.count { results[index] = .failure(failure) }
                return results.map { $0 ?? .failure(failure) }
            }
            // One wait for the whole round: the reply handler fails what is outstanding when no
            // reply comes within `timeout` of the previous one (a batch pipelined to a slow server
            // fails only when the server stops answering, not when the batch is long).
            let futures = write(Array(requests[next...]), on: channel)
            let outcomes =
                (try? await EventLoopFuture.whenAllComplete(futures, on: channel.eventLoop).get()) ?? []
            var answered = 0
            var unanswered: Bool?
            for result in outcomes {
                let outcome: HTTPReplyHandler.Outcome
                switch result {
                case .success(let got): outcome = got
                case .failure(let error): outcome = .failed("\(error)")
                }
                switch outcome {
                case .reply(let reply, let keepAlive):
                    results[next + answered] = .success(reply)
                    if !keepAlive { channel.close(promise: nil) }
                case .unanswered(let reused):
                    unanswered = reused
                case .failed(let reason):
                    results[next + answered] = .failure(DeliveryFailure(.subscriberFailed, reason))
                }
                if unanswered != nil { break }
                answered += 1
            }
            next += answered
            guard let reused = unanswered else { continue }
            // The server is closing this connection: wait until it is gone, so that the next
            // round opens a new one.
            channel.close(promise: nil)
            try? await channel.closeFuture.get()
            if answered == 0 {
                guard reused, !resentOnce else {
                    let failure = DeliveryFailure(.subscriberFailed, "connection closed before the reply")
                    for index in next..<requests.count { results[index] = .failure(failure) }
                    break
                }
                resentOnce = true
            }
        }
        return results.map { $0 ?? .failure(DeliveryFailure(.subscriberFailed, "no reply")) }
    }

    /// Writes `requests` on the channel's event loop, where the reply handler keeps its state,
    /// and returns one future per request.
    private func write(_ requests: [HTTPRequest], on channel: any Channel) -> [EventLoopFuture<
        HTTPReplyHandler.Outcome
    >] {
        let promises = requests.map { _ in channel.eventLoop.makePromise(of: HTTPReplyHandler.Outcome.self) }
        let authority = url.authority
        let userAgent = self.userAgent
        channel.eventLoop.execute {
            guard let handler = try? channel.pipeline.syncOperations.handler(type: HTTPReplyHandler.self) else {
                for promise in promises { promise.succeed(.failed("connection closed")) }
                return
            }
            for (request, promise) in zip(requests, promises) {
                guard handler.expect(promise) else { continue }
                var headers = request.headers
                headers.replaceOrAdd(name: "Host", value: authority)
                if !headers.contains(name: "User-Agent") { headers.add(name: "User-Agent", value: userAgent) }
                headers.replaceOrAdd(name: "Content-Length", value: String(request.body.count))
                channel.write(
                    HTTPClientRequestPart.head(
                        HTTPRequestHead(
                            version: .http1_1, method: request.method, uri: request.target, headers: headers)),
                    promise: nil)
                channel.write(
                    HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: request.body))), promise: nil
                )
                channel.write(HTTPClientRequestPart.end(nil), promise: nil)
            }
            channel.flush()
        }
        return promises.map(\.futureResult)
    }

    /// Stops reconnecting and closes the connection.
    public func close() async {
        await connection?.close()
    }
}

/// Matches replies to the requests written, first in first out. Its state lives on the channel's
/// event loop (the connection hands it each request there); it tells the connection when the
/// channel closes and why.
final class HTTPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    enum Outcome: Sendable {
        case reply(HTTPReply, keepAlive: Bool)
        /// The server closed the connection between replies (as a reply said it would, or as an
        /// idle keep-alive connection is closed) before answering this request; `reused` when the
        /// connection had answered earlier requests.
        case unanswered(reused: Bool)
        case failed(String)
    }

    private let maximumReply: Int
    private let timeout: TimeAmount
    private let onClose: @Sendable (any Channel, String?) -> Void
    /// Armed while replies are awaited: no reply within `timeout` of the last closes the
    /// connection with "reply timeout".
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var waiting = CircularBuffer<EventLoopPromise<Outcome>>()
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    /// A reply said `Connection: close`: what is still waiting will not be answered.
    private var closing = false
    /// Replies read on this connection so far.
    private var replies = 0
    private var closed = false
    /// Why the channel failed (a TLS error says more than "connection closed").
    private var error: String?

    init(maximumReply: Int, timeout: TimeAmount, onClose: @escaping @Sendable (any Channel, String?) -> Void) {
        self.maximumReply = maximumReply
        self.timeout = timeout
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    /// (Re)starts the reply timer while something is awaited, stops it otherwise.
    private func armTimer() {
        timer?.cancel()
        timer = nil
        guard !waiting.isEmpty, let context else { return }
        let channel = context.channel
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let handler = loopBound.value
            if handler.error == nil { handler.error = "reply timeout" }
            channel.close(promise: nil)
        }
    }

    /// The next unanswered reply answers `promise`; false (and the promise answered) when the
    /// connection is closing.
    func expect(_ promise: EventLoopPromise<Outcome>) -> Bool {
        if closing {
            promise.succeed(.unanswered(reused: replies > 0))
            return false
        }
        if closed {
            promise.succeed(.failed(error ?? "connection closed"))
            return false
        }
        waiting.append(promise)
        if waiting.count == 1 { armTimer() }
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead):
            head = responseHead
            body = []
        case .body(let buffer):
            guard body.count + buffer.readableBytes <= maximumReply else {
                error = "reply larger than \(maximumReply) bytes"
                context.close(promise: nil)
                return
            }
            body += buffer.readableBytesView
        case .end:
            guard let head, !waiting.isEmpty else {
                // A reply nobody asked for: the peer does not speak HTTP as expected.
                error = "unexpected reply"
                context.close(promise: nil)
                return
            }
            // 1xx replies (100 Continue) precede the real one.
            if (100..<200).contains(head.status.code) { return }
            let keepAlive = head.isKeepAlive
            let promise = waiting.removeFirst()
            if !keepAlive { closing = true }
            replies += 1
            armTimer()
            promise.succeed(
                .reply(
                    HTTPReply(status: Int(head.status.code), headers: head.headers, body: body), keepAlive: keepAlive))
            self.head = nil
            body = []
            // The server said it closes: close now, so that what it will not answer is known at
            // once (a server may wait for the client's close before its own).
            if !keepAlive { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        closed = true
        let outstanding = waiting
        waiting.removeAll()
        // Closed between replies with no error: the peer ended the connection (as a reply said,
        // or an idle one); the requests it did not answer may be sent again on a new connection.
        let clean = error == nil && head == nil
        onClose(context.channel, clean ? nil : (error ?? "connection closed before the reply"))
        for promise in outstanding {
            promise.succeed(
                clean ? .unanswered(reused: replies > 0) : .failed(error ?? "connection closed before the reply"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.error == nil {
            if let tls = error as? NIOSSLError {
                self.error = "TLS: \(tls)"
            } else if let tls = error as? BoringSSLError {
                self.error = "TLS: \(tls)"
            } else {
                self.error = "\(error)"
            }
        }
        context.close(promise: nil)
    }
}
