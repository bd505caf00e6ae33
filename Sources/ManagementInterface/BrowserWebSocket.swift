import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// `GET /events` with `Upgrade: websocket`: the connection becomes a `ws:IP:PORT` subscriber. The
/// client sends `{"subscribe":["E_A","E_B"]}` (as often as it likes) and gets
/// `{"subscribed":["E_A","E_B"]}` — every event it is subscribed to now — or `{"error":"…"}`;
/// events arrive as text frames holding their JSON-RPC notifications.
enum BrowserWebSocket {
    /// Largest message a client may send (a subscribe request is a few hundred bytes).
    static let maximumMessage = 1 << 16

    static func upgrader(
        mi: ManagementInterface, web: MIWeb, hosts: MIHostPolicy, guardian: MIConnectionGuard,
        backlog: WriteBacklogHandler, handler: MIHTTPHandler, logger: Logger
    ) -> NIOWebSocketServerUpgrader {
        NIOWebSocketServerUpgrader(
            maxFrameSize: maximumMessage,
            shouldUpgrade: { channel, head in
                // A refusal makes NIO fail the upgrade; the HTTP handler then answers it with this
                // status (and body).
                if let (status, body) = refusal(head, mi: mi, web: web, handler: handler) {
                    handler.refusedUpgrade = (head, status, body)
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                handler.upgradeHoldsSlot = true
                return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    handler.upgradeHoldsSlot = false  // the subscriber handler gives it back from now on
                    try channel.pipeline.syncOperations.removeHandler(handler).whenComplete { _ in }
                    guardian.authenticated()
                    guardian.becameStream()
                    backlog.listener = .websocket
                    try channel.pipeline.syncOperations.addHandler(MaskedFramesOnly())
                    try channel.pipeline.syncOperations.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 1, maxAccumulatedFrameCount: 64,
                            maxAccumulatedFrameSize: maximumMessage))
                    try channel.pipeline.syncOperations.addHandler(WebSocketSubscriberHandler(streams: web.streams))
                }
            })
    }

    /// Why an upgrade request is not answered with 101, or nil: only `GET /events` upgrades (404
    /// elsewhere, 405 for another method), from a `Host` the listener answers to (403) and an
    /// `Origin` that is that host's own when there is one (403: browsers apply no CORS to a
    /// WebSocket, so another site's page could otherwise subscribe), with credentials (401),
    /// within the stream cap (503; the slot is taken here).
    static func refusal(_ head: HTTPRequestHead, mi: ManagementInterface, web: MIWeb, handler: MIHTTPHandler)
        -> (HTTPResponseStatus, [UInt8]?)?
    {
        guard head.uri.prefix(while: { $0 != "?" }) == "/events" else { return (.notFound, nil) }
        guard head.method == .GET else { return (.methodNotAllowed, nil) }
        if let body = handler.hostRefusal(head) { return (.forbidden, body) }
        if let origin = head.headers.first(name: "origin"), !MIHTTPHandler.isSameOrigin(origin, head) {
            return (.forbidden, nil)
        }
        guard MIHTTPHandler.isAuthorized(head, mi: mi) else { return (.unauthorized, nil) }
        guard web.streams.admit() else { return (.serviceUnavailable, nil) }
        return nil
    }
}

/// RFC 6455 5.1: every frame a client sends is masked, and a server that receives an unmasked
/// one closes the connection (1002, protocol error). NIO's decoder accepts both; this stands
/// before the aggregator, which drops the mask.
final class MaskedFramesOnly: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    private var closed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        guard unwrapInboundIn(data).maskKey != nil else {
            closed = true
            var reason = context.channel.allocator.buffer(capacity: 32)
            reason.write(webSocketErrorCode: .protocolError)
            reason.writeString("client frames must be masked")
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reason)))
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireChannelRead(data)
    }
}

/// One WebSocket subscriber connection; state on its event loop.
final class WebSocketSubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let streams: BrowserStreams
    private var client: BrowserClient?
    private var pings: RepeatedTask?
    private var closing = false

    init(streams: BrowserStreams) { self.streams = streams }

    func handlerAdded(context: ChannelHandlerContext) {
        let client = BrowserClient(kind: .ws, channel: context.channel)
        self.client = client
        streams.register(client)
        let channel = context.channel
        pings = context.eventLoop.scheduleRepeatedTask(initialDelay: streams.pingInterval, delay: streams.pingInterval)
        { _ in
            channel.writeAndFlush(
                WebSocketFrame(fin: true, opcode: .ping, data: channel.allocator.buffer(capacity: 0)), promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            guard let client else { return }
            handle(frame.unmaskedData, client: client)
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            guard !closing else {
                context.close(promise: nil)
                return
            }
            closing = true
            var data = context.channel.allocator.buffer(capacity: 2)
            data.write(webSocketErrorCode: .normalClosure)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)))
                .whenComplete { _ in context.close(promise: nil) }
        case .binary:
            client?.drop(reason: "binary messages are not understood")
        default: break
        }
    }

    /// `{"subscribe":[…]}` → `{"subscribed":[…]}` or `{"error":…}`.
    private func handle(_ buffer: ByteBuffer, client: BrowserClient) {
        guard case .object(let fields)? = try? EventValue(jsonBytes: buffer.readableBytesView),
            case .array(let names)? = fields.first(where: { $0.name == "subscribe" })?.value,
            !names.isEmpty, names.count <= 64
        else {
            return client.sendText(#"{"error":"expected {\"subscribe\":[\"E_NAME\",…]} with 1 to 64 events"}"#)
        }
        var events: [String] = []
        for case .string(let name) in names { events.append(name) }
        guard events.count == names.count else { return client.sendText(#"{"error":"event names are strings"}"#) }
        // `"filter"`: applies to the events of this message (as `/events?filter=`).
        var filter: EventFilter?
        switch fields.first(where: { $0.name == "filter" })?.value {
        case nil: break
        case .string(let text)?:
            do throws(FilterError) {
                if !text.isEmpty { filter = try EventFilter(parsing: text) }
            } catch {
                var writer = JSONWriter()
                writer.append(.object([EventField("error", .string("filter: \(error.message)"))]))
                return client.sendText(String(decoding: writer.bytes, as: UTF8.self))
            }
        default: return client.sendText(#"{"error":"filter is a string"}"#)
        }
        let streams = self.streams
        Task {
            var writer = JSONWriter()
            if let failure = await streams.subscribe(client, to: events, filter: filter) {
                writer.append(.object([EventField("error", .string(failure))]))
            } else {
                writer.append(
                    .object([EventField("subscribed", .array(client.subscribedEvents.map(EventValue.string)))]))
            }
            client.sendText(String(decoding: writer.bytes, as: UTF8.self))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pings?.cancel()
        if let client { streams.closed(client) }
        streams.release()
        client = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
