import EventInterface
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

/// The browser subscribers: each open `GET /events` stream (Server-Sent Events) or WebSocket on
/// the MI HTTP listener is a subscriber, listed as `sse:IP:PORT` / `ws:IP:PORT` with expiry
/// "never": it lives while connected. Counted and in metrics like any subscriber (transports
/// `sse`, `ws`), never a virtual member (its socket is not a delivering one). A client that does
/// not keep up is bounded by `queue_size` / `queue_bytes` and then dropped with a close reason,
/// never slowing the others.
public final class BrowserStreams: Sendable {
    public enum Kind: String, Sendable { case sse, ws }

    /// Open streams (subscribers and status pages) at most: `mi.max_stream_clients`.
    public let maxClients: Int
    /// How often an idle stream gets an SSE comment or a WebSocket ping.
    public let pingInterval: TimeAmount
    /// Event bytes all subscribers together may have waiting for their sockets
    /// (`mi.max_stream_bytes`): each is bounded by `queue_bytes` too, but 2,000 of them at 16 MiB
    /// would be 32 GiB.
    public let maxBytes: Int
    private let clients = Mutex<[String: BrowserClient]>([:])
    private let streamCount = Atomic<Int>(0)
    private let queuedBytes = Atomic<Int>(0)
    private let hubLink = Mutex<WeakHub?>(nil)

    public init(maxClients: Int = 2000, maxBytes: Int = 256 << 20, pingInterval: TimeAmount = .seconds(15)) {
        self.maxClients = maxClients
        self.maxBytes = maxBytes
        self.pingInterval = pingInterval
    }

    /// Event bytes waiting for browser subscribers now.
    public var waitingBytes: Int { queuedBytes.load(ordering: .relaxed) }

    /// A subscriber of `client` queued `bytes` (negative: the kernel took them, or they were
    /// dropped). Past ``maxBytes`` the client with the largest backlog is dropped.
    func account(_ bytes: Int, for client: BrowserClient) {
        client.backlog.add(bytes, ordering: .relaxed)
        let total = queuedBytes.add(bytes, ordering: .relaxed).newValue
        guard bytes > 0, total > maxBytes else { return }
        let largest = clients.withLock { table in
            table.values.filter { !$0.isDropped }.max {
                $0.backlog.load(ordering: .relaxed) < $1.backlog.load(ordering: .relaxed)
            }
        }
        largest?.drop(reason: "over the browser streams' memory budget (mi.max_stream_bytes)")
    }

    /// The `sse` and `ws` transports, for the hub's list.
    public var transports: [any EventTransport] {
        [BrowserTransport(kind: .sse, streams: self), BrowserTransport(kind: .ws, streams: self)]
    }

    /// The hub the streams subscribe to (set once it exists).
    public func attach(_ hub: EventHub) { hubLink.withLock { $0 = WeakHub(hub) } }
    var hub: EventHub? { hubLink.withLock { $0?.hub } }

    /// Takes one stream slot; false at the cap.
    func admit() -> Bool {
        while true {
            let count = streamCount.load(ordering: .relaxed)
            guard count < maxClients else { return false }
            if streamCount.compareExchange(expected: count, desired: count + 1, ordering: .relaxed).exchanged {
                return true
            }
        }
    }

    func release() { streamCount.subtract(1, ordering: .relaxed) }

    /// Open streams now.
    public var count: Int { streamCount.load(ordering: .relaxed) }

    func register(_ client: BrowserClient) { clients.withLock { $0[client.name] = client } }

    func client(named name: String) -> BrowserClient? { clients.withLock { $0[name] } }

    /// The client's connection closed: its subscriptions go.
    func closed(_ client: BrowserClient) {
        clients.withLock { table in
            if table[client.name] === client { table[client.name] = nil }
        }
        let events = client.takeEvents()
        guard let hub, !events.isEmpty else { return }
        // By the socket itself: the name no longer parses once the connection has left the table.
        let socket = BrowserSocket(client: client, streams: self)
        Task {
            for event in events { _ = await hub.unsubscribe(event: event, parsed: socket) }
        }
    }

    /// Subscribes `client` to `events`; on the first failure undoes what it did and returns why.
    /// `filter` applies to every event of the connection (`/events?event=E&filter=F`).
    func subscribe(_ client: BrowserClient, to events: [String], filter: EventFilter? = nil) async -> String? {
        guard let hub else { return "not ready" }
        var done: [String] = []
        for event in events {
            do throws(EventInterfaceError) {
                _ = try await hub.subscribe(
                    event: event, socket: client.name, expiry: .never, delivery: .memory,
                    attributes: SubscriptionAttributes(filter: filter))
                done.append(event)
                client.addEvent(event)
            } catch {
                for undo in done {
                    _ = await hub.unsubscribe(event: undo, parsed: BrowserSocket(client: client, streams: self))
                }
                client.removeEvents(done)
                return "\(error)"
            }
        }
        return nil
    }
}

/// One browser connection: where its events are written, framed as its kind wants.
final class BrowserClient: Sendable {
    let kind: BrowserStreams.Kind
    /// `sse:IP:PORT` / `ws:IP:PORT`.
    let name: String
    let channel: any Channel
    private let events = Mutex<Set<String>>([])
    private let dropped = Atomic<Bool>(false)
    /// Event bytes queued for this client and not yet taken by the kernel (``BrowserStreams/account(_:for:)``).
    let backlog = Atomic<Int>(0)

    var isDropped: Bool { dropped.load(ordering: .relaxed) }

    init(kind: BrowserStreams.Kind, channel: any Channel) {
        self.kind = kind
        self.channel = channel
        let peer = channel.remoteAddress
        let host = peer?.ipAddress ?? "unknown"
        let address = host.contains(":") ? "[\(host)]" : host
        name = "\(kind.rawValue):\(address):\(peer?.port ?? 0)"
    }

    func addEvent(_ event: String) { _ = events.withLock { $0.insert(event) } }
    func removeEvents(_ list: [String]) { events.withLock { for event in list { $0.remove(event) } } }
    func takeEvents() -> [String] {
        events.withLock { set in
            defer { set = [] }; return Array(set)
        }
    }
    var subscribedEvents: [String] { events.withLock { $0.sorted() } }

    /// Writes `payloads` (JSON-RPC notifications), one SSE message or WebSocket text frame each,
    /// on the channel's event loop (where it is called); the future completes once they are
    /// handed to the kernel.
    func write(_ payloads: [[UInt8]]) -> EventLoopFuture<Void> {
        let channel = self.channel
        let kind = self.kind
        do {
            switch kind {
            case .sse:
                var buffer = channel.allocator.buffer(capacity: payloads.reduce(0) { $0 + $1.count + 8 })
                for payload in payloads {
                    buffer.writeString("data: ")
                    buffer.writeBytes(payload)
                    buffer.writeString("\n\n")
                }
                return channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)))
            case .ws:
                for payload in payloads.dropLast() {
                    channel.write(
                        WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(bytes: payload)),
                        promise: nil)
                }
                guard let last = payloads.last else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.writeAndFlush(
                    WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(bytes: last)))
            }
        }
    }

    /// A text message outside the event stream (a WebSocket reply).
    func sendText(_ text: String) {
        let channel = self.channel
        channel.eventLoop.execute {
            channel.writeAndFlush(
                WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: text)), promise: nil)
        }
    }

    /// Closes the connection with `reason`: an SSE `close` event, or a WebSocket close frame
    /// (1008, policy violation) — best effort, since a client that does not read may never see it.
    func drop(reason: String) {
        guard !dropped.exchange(true, ordering: .relaxed) else { return }
        let channel = self.channel
        let kind = self.kind
        channel.eventLoop.execute {
            switch kind {
            case .sse:
                // The reason as JSON: a subscription's failure may quote a socket or a name.
                var writer = JSONWriter()
                writer.append(.object([EventField("reason", .string(reason))]))
                var buffer = channel.allocator.buffer(capacity: 64)
                buffer.writeString("event: close\ndata: ")
                buffer.writeBytes(writer.bytes)
                buffer.writeString("\n\n")
                channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
            case .ws:
                var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
                data.write(webSocketErrorCode: .policyViolation)
                data.writeString(reason)
                channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), promise: nil)
            }
            // Closed now: a client that stopped reading would keep the close from being flushed.
            channel.close(promise: nil)
        }
    }
}

/// `sse:IP:PORT` / `ws:IP:PORT`: names an open browser connection; only the MI listener makes
/// such subscriptions (subscribing one by hand works only for a connection open now).
struct BrowserTransport: EventTransport {
    let kind: BrowserStreams.Kind
    let streams: BrowserStreams

    var scheme: String { kind.rawValue }

    func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError) -> any EventSocket {
        let name = "\(kind.rawValue):\(address)"
        guard let client = streams.client(named: name) else {
            throw SocketError(
                "no open \(kind == .sse ? "SSE" : "WebSocket") connection \(name) (browsers subscribe through GET /events)"
            )
        }
        return BrowserSocket(client: client, streams: streams)
    }
}

struct BrowserSocket: EventSocket {
    let client: BrowserClient
    let streams: BrowserStreams

    var scheme: String { client.kind.rawValue }
    var description: String { client.name }

    func matches(_ other: any EventSocket) -> Bool { (other as? BrowserSocket)?.client === client }

    func makeSubscriber(context: SubscriberContext) -> any EventSubscriber {
        BrowserSubscriber(
            client: client, streams: streams, counters: context.statistics.transport(client.kind.rawValue),
            capacity: context.queueCapacity, byteCapacity: context.queueByteCapacity)
    }
}

/// A browser subscriber. No delivery task of its own: a raise appends the notification to the
/// client's pending list and, when the list was empty, schedules one write on the connection's
/// event loop, which takes everything pending. With 1,000 clients a delivery task each meant
/// 1,000 task wake-ups per event on two cooperative threads (p50 30 ms from raise to client);
/// this is two event-loop jobs per batch. Pending counts until the kernel has taken the bytes:
/// past `queue_size` events or `queue_bytes` the client is dropped ("queue full").
final class BrowserSubscriber: EventSubscriber {
    private struct State {
        var pending: [[UInt8]] = []
        var inFlight = 0
        var bytes = 0
        var scheduled = false
        var closed = false
    }

    let client: BrowserClient
    let streams: BrowserStreams
    let counters: TransportCounters
    let counts = SubscriberTally()
    let capacity: Int
    let byteCapacity: Int
    private let state = Mutex(State())

    init(client: BrowserClient, streams: BrowserStreams, counters: TransportCounters, capacity: Int, byteCapacity: Int)
    {
        self.client = client
        self.streams = streams
        self.counters = counters
        self.capacity = max(1, capacity)
        self.byteCapacity = max(1, byteCapacity)
    }

    func dispatch(_ event: RaisedEvent) {
        let payload = event.payload(.jsonRPC)
        enum Action { case ignored, queued(schedule: Bool), drop(freed: Int) }
        let action = state.withLock { state -> Action in
            if state.closed { return .ignored }
            if state.inFlight + state.pending.count >= capacity || state.bytes + payload.count > byteCapacity {
                state.closed = true
                let freed = state.pending.reduce(0) { $0 + $1.count }
                state.pending = []
                state.bytes -= freed
                return .drop(freed: freed)
            }
            state.pending.append(payload)
            state.bytes += payload.count
            if state.scheduled { return .queued(schedule: false) }
            state.scheduled = true
            return .queued(schedule: true)
        }
        switch action {
        case .ignored: break
        case .queued(let schedule):
            streams.account(payload.count, for: client)
            if schedule { client.channel.eventLoop.execute { self.flush() } }
        case .drop(let freed):
            streams.account(-freed, for: client)
            counters.recordDropped()
            counts.dropped.add(1, ordering: .relaxed)
            client.drop(reason: "queue full")
        }
    }

    /// On the connection's event loop: writes what is pending, in one flush.
    private func flush() {
        let batch = state.withLock { state -> [[UInt8]] in
            state.scheduled = false
            let batch = state.pending
            state.pending = []
            state.inFlight += batch.count
            return batch
        }
        guard !batch.isEmpty else { return }
        let bytes = batch.reduce(0) { $0 + $1.count }
        client.write(batch).whenComplete { result in
            self.state.withLock { state in
                state.inFlight -= batch.count
                state.bytes -= bytes
            }
            self.streams.account(-bytes, for: self.client)
            switch result {
            case .success:
                self.counters.recordDelivered(count: batch.count)
                self.counts.delivered.add(batch.count, ordering: .relaxed)
            case .failure:
                self.counters.recordFailed(count: batch.count)
                self.counts.failed.add(batch.count, ordering: .relaxed)
            }
        }
    }

    var tally: SubscriberTally? { counts }

    func close(grace: Duration) async {
        state.withLock { $0.closed = true }
    }
}
