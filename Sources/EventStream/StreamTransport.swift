import EventInterface
import EventNIOSupport
import NIOCore
import NIOPosix
import NIOSSL

/// The `event_stream` module options (Docs/sockets.md).
public struct StreamOptions: Sendable, Hashable {
    /// Requests with ids, success on a reply without error; off: notifications, success on write.
    public var reliableMode = false
    /// Connect, write and (reliable mode) reply timeout.
    public var timeout: Duration = .milliseconds(1000)
    /// When set, a parameter of this name carrying the event name is put first.
    public var eventParam: String?
    /// Certificates for `tls:` sockets and ingresses.
    public var tls = TLSOptions()

    public init(reliableMode: Bool = false, timeout: Duration = .milliseconds(1000), eventParam: String? = nil) {
        self.reliableMode = reliableMode
        self.timeout = timeout
        self.eventParam = eventParam
    }
}

/// `tcp:HOST:PORT[/METHOD]`: JSON-RPC over a persistent TCP connection per subscriber
/// (OpenSIPS' event_stream); `tls:HOST:PORT[/METHOD]` the same over TLS.
public final class StreamTransport: EventTransport {
    public let options: StreamOptions
    let group: any EventLoopGroup
    public let scheme: String
    /// The TLS profile of `tls:` (nil for `tcp:`), reloaded on SIGHUP.
    let tls: ReloadableTLS?

    public init(
        options: StreamOptions = StreamOptions(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.group = group
        scheme = "tcp"
        tls = nil
    }

    /// The `tls:` transport, connecting with `profile`'s client side.
    public init(
        options: StreamOptions, tls profile: ReloadableTLS,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.group = group
        scheme = "tls"
        tls = profile
    }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "\(scheme):" + address
        var hostPortText = address
        var method: String?
        if let slash = address.firstIndex(of: "/") {
            hostPortText = String(address[..<slash])
            let name = String(address[address.index(after: slash)...])
            guard !name.isEmpty else { throw SocketError("\(scheme) method after '/' is empty: \(text)") }
            guard !name.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "\"" || $0 == "\\" }) else {
                throw SocketError("bad \(scheme) method '\(name)': \(text)")
            }
            method = name
        }
        let hostPort = try HostPort.parse(hostPortText, scheme: scheme, socket: text)
        let resolved = try await context.resolve(hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: text)
        return StreamSocket(hostPort: hostPort, method: method, address: resolved, transport: self)
    }
}

public struct StreamSocket: DeliverySocket {
    public let hostPort: HostPort
    /// Replaces the event name in `method` when set.
    public let method: String?
    let address: ResolvedAddress
    let transport: StreamTransport

    public var scheme: String { transport.scheme }
    public var description: String { "\(scheme):\(hostPort)" + (method.map { "/\($0)" } ?? "") }

    public func matches(_ other: any EventSocket) -> Bool {
        guard let other = other as? StreamSocket else { return false }
        return other.scheme == scheme && other.hostPort == hostPort && other.method == method
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        StreamDeliverer(
            connection: StreamConnection(
                address: address, socket: description, options: transport.options, group: transport.group,
                logger: context.logger,
                tls: transport.tls.map { ($0, hostPort.nameToVerify) }),
            format: StreamPayloadFormat(method: method, eventParam: transport.options.eventParam),
            reliable: transport.options.reliableMode)
    }
}

/// The notification with the socket's method and the `event_param`, shared by every tcp
/// subscriber with the same two.
struct StreamPayloadFormat: PayloadFormat {
    let method: String?
    let eventParam: String?

    func encode(_ event: RaisedEvent) -> [UInt8] {
        if method == nil && eventParam == nil { return event.payload(.jsonRPC) }
        return JSONRPCNotification.encode(
            method: method ?? event.name, params: event.params,
            eventParam: eventParam.map { (name: $0, eventName: event.name) })
    }
}

final class StreamDeliverer: EventDeliverer {
    let connection: StreamConnection
    let format: StreamPayloadFormat
    let reliable: Bool

    init(connection: StreamConnection, format: StreamPayloadFormat, reliable: Bool) {
        self.connection = connection
        self.format = format
        self.reliable = reliable
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        await deliver(batch: [event])[0]
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        let payloads = events.map { $0.payload(format) }
        return reliable ? await connection.request(payloads) : await connection.notify(payloads)
    }

    func close() async {
        await connection.close()
    }
}
