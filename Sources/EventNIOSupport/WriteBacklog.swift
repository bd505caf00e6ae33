import Metrics
import NIOCore

/// What a listener holds for one peer that writes and does not read: its replies, waiting for
/// the socket. Above ``pauseAbove`` unsent bytes the connection is not read from (so the peer
/// cannot ask for more), reading resumes below half of it, and past ``closeAbove`` — replies
/// that one read's worth of requests produced — the connection is closed.
///
/// A pure state machine: the driver (``WriteBacklogHandler``) tells it what the channel reports
/// and does what it answers.
public struct WriteBacklog: Sendable {
    public static let pauseAbove = 1 << 20
    public static let resumeBelow = pauseAbove / 2
    public static let closeAbove = 16 << 20

    public enum ReadAction: Sendable, Equatable {
        case forward
        /// Not now: the peer has not read what it was sent.
        case hold
    }

    /// Whether the channel is above the pause mark (it says so with its writability).
    public private(set) var paused = false
    /// A read was asked for while paused: it is made once the backlog drains.
    public private(set) var readHeld = false

    public init() {}

    public mutating func readRequested() -> ReadAction {
        guard paused else { return .forward }
        readHeld = true
        return .hold
    }

    /// The channel crossed a water mark; true when a held read is to be made now.
    public mutating func writabilityChanged(writable: Bool) -> Bool {
        paused = !writable
        guard writable, readHeld else { return false }
        readHeld = false
        return true
    }

    /// Whether `buffered` unsent bytes are too many to keep the connection.
    public func mustClose(buffered: Int) -> Bool { paused && buffered > Self.closeAbove }
}

/// The first handler (nearest the socket) of every connection a listener answers: MI HTTP (and
/// the SSE and WebSocket streams it becomes), tcp and tls ingress. It sets the channel's water
/// marks to ``WriteBacklog``'s, holds `read()` while the channel is not writable, and closes the
/// connection when its backlog passes the hard limit, counted as
/// `evi_connections_closed_total{listener, reason="write_backlog"}`.
///
/// State on the channel's event loop; the listener name may change as the connection does (an
/// HTTP connection that becomes an SSE stream).
public final class WriteBacklogHandler: ChannelDuplexHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny

    /// The `listener` label values; every one's series exists from start-up (``prepareMetrics()``).
    public enum Listener: String, Sendable, CaseIterable {
        case miHTTP = "mi_http"
        case websocket
        case sse
        case ingress
    }

    public var listener: Listener
    private var backlog = WriteBacklog()
    private var closing = false

    public init(listener: Listener) { self.listener = listener }

    /// Makes every `evi_connections_closed_total{reason="write_backlog"}` series, at zero.
    public static func prepareMetrics() {
        for listener in Listener.allCases { _ = counter(listener) }
    }

    static func counter(_ listener: Listener) -> Counter {
        Counter(
            label: "evi_connections_closed_total",
            dimensions: [("listener", listener.rawValue), ("reason", "write_backlog")])
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let marks = ChannelOptions.Types.WriteBufferWaterMark(
            low: WriteBacklog.resumeBelow, high: WriteBacklog.pauseAbove)
        if let options = context.channel.syncOptions {
            try? options.setOption(ChannelOptions.writeBufferWaterMark, value: marks)
        }
    }

    public func read(context: ChannelHandlerContext) {
        if backlog.readRequested() == .forward { context.read() }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if backlog.writabilityChanged(writable: context.channel.isWritable) { context.read() }
        context.fireChannelWritabilityChanged()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard backlog.paused, !closing,
            let buffered = try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes),
            backlog.mustClose(buffered: buffered)
        else { return }
        closing = true
        Self.counter(listener).increment()
        context.close(promise: nil)
    }
}
