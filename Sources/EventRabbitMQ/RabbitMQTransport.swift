import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The `event_rabbitmq` module options.
public struct RabbitMQOptions: Sendable, Hashable {
    /// Seconds between heartbeats (0: none).
    public var heartbeat: UInt16 = 10
    /// Connect and confirm timeout.
    public var timeout: Duration = .milliseconds(1000)
    /// Whether publishes carry AMQP's `mandatory` flag (`event_rabbitmq.mandatory`).
    public var mandatory: Mandatory = .auto

    /// With `mandatory`, a message no queue takes comes back (`basic.return`) and its delivery
    /// fails "unroutable", so FAILOVER moves on; without it the broker confirms and drops it.
    public enum Mandatory: String, Sendable, Hashable, CaseIterable {
        /// On for the default exchange (routing key = queue name: a missing queue is a mistake),
        /// off for named exchanges (where routing nowhere may be intended).
        case auto
        case `true`
        case `false`

        public func applies(toExchange exchange: String) -> Bool {
            switch self {
            case .auto: exchange.isEmpty
            case .true: true
            case .false: false
            }
        }
    }

    public init(heartbeat: UInt16 = 10, timeout: Duration = .milliseconds(1000), mandatory: Mandatory = .auto) {
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.mandatory = mandatory
    }
}

/// `rabbitmq:[USER[:PASSWORD]@]HOST[:PORT]/[PARAMS?]ROUTING_KEY`: publishes the JSON-RPC
/// notification with publisher confirms (Docs/sockets.md).
public final class RabbitMQTransport: EventTransport {
    public let options: RabbitMQOptions
    let group: any EventLoopGroup
    /// One connection per broker and credentials, shared by its subscriptions.
    private let connections = SharedResources<BrokerKey, BrokerConnection>()

    public init(
        options: RabbitMQOptions = RabbitMQOptions(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.group = group
    }

    public var scheme: String { "rabbitmq" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "rabbitmq:" + address
        guard !address.contains(where: \.isWhitespace) else { throw SocketError("rabbitmq socket contains whitespace") }
        var rest = Substring(address)
        var user = "guest"
        var password = "guest"
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                user = String(credentials)
            }
            guard !user.isEmpty else { throw SocketError("rabbitmq user is empty: \(redactingCredentials(text))") }
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw SocketError("rabbitmq socket needs /ROUTING_KEY: \(redactingCredentials(text))")
        }
        let hostText = String(rest[..<slash])
        var target = String(rest[rest.index(after: slash)...])
        let hostPort: HostPort
        if hostText.hasSuffix("]") || !hostText.contains(":") || hostText.hasPrefix("[") && !hostText.contains("]:") {
            let bare = hostText.hasPrefix("[") ? String(hostText.dropFirst().dropLast()) : hostText
            guard !bare.isEmpty else {
                throw SocketError("rabbitmq socket needs a host: \(redactingCredentials(text))")
            }
            hostPort = HostPort(host: bare, port: 5672)
        } else {
            hostPort = try HostPort.parse(hostText, scheme: "rabbitmq", socket: redactingCredentials(text))
        }
        var exchange = ""
        var vhost = "/"
        var persistent = false
        if let question = target.firstIndex(of: "?") {
            let parameters = target[..<question]
            target = String(target[target.index(after: question)...])
            for parameter in parameters.split(separator: ";") {
                if parameter == "persistent" {
                    persistent = true
                } else if parameter.hasPrefix("exchange=") {
                    exchange = String(parameter.dropFirst("exchange=".count))
                } else if parameter.hasPrefix("vhost=") {
                    vhost = String(parameter.dropFirst("vhost=".count))
                } else {
                    throw SocketError(
                        "unknown rabbitmq parameter '\(parameter)' (exchange=NAME, vhost=NAME, persistent): \(redactingCredentials(text))"
                    )
                }
            }
        }
        guard !target.isEmpty else {
            throw SocketError("rabbitmq socket needs a routing key: \(redactingCredentials(text))")
        }
        guard target.utf8.count <= 255, exchange.utf8.count <= 255 else {
            throw SocketError("rabbitmq routing key and exchange are at most 255 bytes: \(redactingCredentials(text))")
        }
        let resolved = try await context.resolve(
            hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: redactingCredentials(text))
        return RabbitMQSocket(
            broker: BrokerKey(host: hostPort, user: user, password: password, vhost: vhost), address: resolved,
            exchange: exchange, routingKey: target, persistent: persistent, transport: self)
    }

    // MARK: Connections, one per broker and credentials

    func retainConnection(_ key: BrokerKey, address: ResolvedAddress, logger: Logger) -> BrokerConnection {
        connections.retain(key) {
            BrokerConnection(key: key, address: address, options: options, group: group, logger: logger)
        }
    }

    func releaseConnection(_ connection: BrokerConnection) async {
        await connections.release(connection.key)?.close()
    }

    /// Open broker connections (shared by subscriptions).
    public var connectionCount: Int { connections.count }
}

struct BrokerKey: Hashable, Sendable {
    var host: HostPort
    var user: String
    var password: String
    var vhost: String
}

public struct RabbitMQSocket: DeliverySocket {
    let broker: BrokerKey
    let address: ResolvedAddress
    public let exchange: String
    public let routingKey: String
    public let persistent: Bool
    let transport: RabbitMQTransport

    public var scheme: String { "rabbitmq" }

    /// `rabbitmq:USER@HOST[:PORT]/[PARAMS?]KEY`: no password, the port only when not 5672,
    /// parameters in the order exchange, vhost, persistent.
    public var description: String {
        var text = "rabbitmq:\(broker.user)@"
        text += broker.host.isIPv6 ? "[\(broker.host.host)]" : broker.host.host
        if broker.host.port != 5672 { text += ":\(broker.host.port)" }
        text += "/"
        var parameters: [String] = []
        if !exchange.isEmpty { parameters.append("exchange=\(exchange)") }
        if broker.vhost != "/" { parameters.append("vhost=\(broker.vhost)") }
        if persistent { parameters.append("persistent") }
        if !parameters.isEmpty { text += parameters.joined(separator: ";") + "?" }
        return text + routingKey
    }

    public func matches(_ other: any EventSocket) -> Bool {
        guard let other = other as? RabbitMQSocket else { return false }
        return other.broker.user == broker.user && other.broker.host == broker.host
            && other.broker.vhost == broker.vhost
            && other.exchange == exchange && other.routingKey == routingKey && other.persistent == persistent
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        RabbitMQDeliverer(
            socket: self, connection: transport.retainConnection(broker, address: address, logger: context.logger))
    }
}

final class RabbitMQDeliverer: EventDeliverer {
    let socket: RabbitMQSocket
    let connection: BrokerConnection

    init(socket: RabbitMQSocket, connection: BrokerConnection) {
        self.socket = socket
        self.connection = connection
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        await deliver(batch: [event])[0]
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(.jsonRPC)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        await connection.publish(
            events.map { $0.payload(.jsonRPC) }, exchange: socket.exchange, routingKey: socket.routingKey,
            persistent: socket.persistent,
            mandatory: socket.transport.options.mandatory.applies(toExchange: socket.exchange))
    }

    func close() async {
        await socket.transport.releaseConnection(connection)
    }
}

/// One AMQP connection and channel to a broker, shared by every subscription with the same
/// broker and credentials.
final class BrokerConnection: Sendable {
    let key: BrokerKey
    private let settings: AMQPHandler.Settings
    private let address: ResolvedAddress
    private let group: any EventLoopGroup
    private let timeout: TimeAmount
    private let link = Mutex<ReconnectingChannel?>(nil)

    init(key: BrokerKey, address: ResolvedAddress, options: RabbitMQOptions, group: any EventLoopGroup, logger: Logger)
    {
        self.key = key
        self.address = address
        self.group = group
        self.timeout = TimeAmount(options.timeout)
        settings = AMQPHandler.Settings(
            user: key.user, password: key.password, vhost: key.vhost, heartbeat: options.heartbeat,
            confirmTimeout: TimeAmount(options.timeout))
        let name = "rabbitmq:\(key.user)@\(key.host)"
        let reconnecting = ReconnectingChannel(name: name, group: group, logger: logger) { [weak self] in
            guard let self else { return .failure(DeliveryFailure(.subscriberFailed, "shutting down")) }
            return await self.open()
        }
        link.withLock { $0 = reconnecting }
    }

    private var reconnecting: ReconnectingChannel? { link.withLock { $0 } }

    private func open() async -> Result<any Channel, DeliveryFailure> {
        let target: SocketAddress
        do { target = try address.socketAddress() } catch {
            return .failure(DeliveryFailure(.subscriberFailed, "bad address"))
        }
        let loop = group.next()
        let ready = loop.makePromise(of: Void.self)
        let settings = self.settings
        let onClose: @Sendable (any Channel) -> Void = { [weak self] channel in self?.reconnecting?.lost(channel) }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            AMQPHandler(settings: settings, ready: ready, onClose: onClose))
                    }
                }
                .connect(to: target).get()
        } catch {
            ready.fail(AMQPError("not connected"))
            return .failure(.connectFailure(error))
        }
        let handshake: Result<Void, any Error>? = await ready.futureResult.map { Result<Void, any Error>.success(()) }
            .recover { .failure($0) }.value(within: timeout)
        switch handshake {
        case .success?: return .success(channel)
        case .failure(let error)?:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "\(error)"))
        case nil:
            channel.close(promise: nil)
            return .failure(DeliveryFailure(.subscriberFailed, "handshake timeout"))
        }
    }

    func publish(
        _ bodies: [[UInt8]], exchange: String, routingKey: String, persistent: Bool, mandatory: Bool
    ) async -> [DeliveryOutcome] {
        let channel: any Channel
        switch await reconnecting?.channel() ?? .failure(DeliveryFailure(.subscriberFailed, "shutting down")) {
        case .success(let open): channel = open
        case .failure(let failure): return Array(repeating: .failed(failure), count: bodies.count)
        }
        let confirms = channel.eventLoop.flatSubmit { () -> EventLoopFuture<[DeliveryOutcome]> in
            do {
                let context = try channel.pipeline.syncOperations.context(handlerType: AMQPHandler.self)
                guard let handler = context.handler as? AMQPHandler else { throw AMQPError("no handler") }
                let futures = bodies.map {
                    handler.publish(
                        context: context, exchange: exchange, routingKey: routingKey, persistent: persistent,
                        mandatory: mandatory, body: $0)
                }
                handler.flush(context: context)
                return EventLoopFuture.whenAllSucceed(futures, on: channel.eventLoop)
            } catch {
                return channel.eventLoop.makeSucceededFuture(
                    Array(
                        repeating: .failed(DeliveryFailure(.subscriberFailed, "connection lost")), count: bodies.count))
            }
        }
        return (try? await confirms.get())
            ?? Array(repeating: .failed(DeliveryFailure(.subscriberFailed, "connection lost")), count: bodies.count)
    }

    func close() async {
        await reconnecting?.close()
    }
}
