import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The `event_rabbitmq` module options.
public struct RabbitMQOptions: Sendable, Hashable {
    /// Seconds between heartbeats (0: none).
    public var heartbeat: UInt16 = 10
    /// Connect and confirm timeout.
    public var timeout: Duration = .milliseconds(1000)
    /// Whether publishes carry AMQP's `mandatory` flag (`event_rabbitmq.mandatory`).
    public var mandatory: Mandatory = .auto
    /// amqps with the `tls` parameter (`event_rabbitmq.ca_file`, `cert_file`, `key_file`, `verify`).
    public var tls = TLSOptions()
    /// amqps with `tls_domain=NAME` (OpenSIPS' tls_mgm domains): `event_rabbitmq.tls_domains.NAME`.
    public var tlsDomains: [String: TLSOptions] = [:]

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
    /// The TLS profiles: `""` the module's own options, else the domains by name (SIGHUP reloads).
    let tlsProfiles: [String: ReloadableTLS]

    public init(
        options: RabbitMQOptions = RabbitMQOptions(), tlsProfiles: [String: ReloadableTLS] = [:],
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.group = group
        var profiles = tlsProfiles
        if profiles[""] == nil {
            profiles[""] = try? ReloadableTLS(options: options.tls, key: "modules.event_rabbitmq")
        }
        self.tlsProfiles = profiles
    }

    /// The profile and the host name to check for a broker reached over TLS.
    func tls(for broker: BrokerKey) -> AMQPTLS? {
        guard let name = broker.tls, let profile = tlsProfiles[name] else { return nil }
        return AMQPTLS(source: profile, hostname: broker.host.nameToVerify)
    }

    public var scheme: String { "rabbitmq" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let parsed = try RabbitMQAddress.parse(address)
        if let tls = parsed.tls, tlsProfiles[tls] == nil {
            throw SocketError(
                "no TLS domain '\(tls)' (modules.event_rabbitmq.tls_domains has \(tlsProfiles.keys.filter { !$0.isEmpty }.sorted().joined(separator: ", "))): \(parsed.redacted)"
            )
        }
        let resolved = try await context.resolve(
            parsed.hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: parsed.redacted)
        return RabbitMQSocket(
            broker: parsed.broker, address: resolved, exchange: parsed.exchange, routingKey: parsed.target,
            persistent: parsed.persistent, passwordWritten: parsed.passwordWritten, transport: self)
    }

    // MARK: Connections, one per broker and credentials

    func retainConnection(_ key: BrokerKey, address: ResolvedAddress, logger: Logger) -> BrokerConnection {
        connections.retain(key) {
            BrokerConnection(
                key: key, address: address, options: options, tls: tls(for: key), group: group, logger: logger)
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
    /// amqps and its profile (see ``RabbitMQAddress/tls``).
    var tls: String?
}

public struct RabbitMQSocket: DeliverySocket {
    let broker: BrokerKey
    let address: ResolvedAddress
    public let exchange: String
    public let routingKey: String
    public let persistent: Bool
    let passwordWritten: Bool
    let transport: RabbitMQTransport

    public var scheme: String { "rabbitmq" }
    public var secrets: [String] { passwordWritten ? ["the password in \(description)"] : [] }

    /// `rabbitmq:USER@HOST[:PORT]/[PARAMS?]KEY`: no password, the port only when not 5672,
    /// parameters in the order exchange, vhost, persistent.
    public var description: String {
        RabbitMQAddress.describe(broker: broker, exchange: exchange, persistent: persistent, target: routingKey)
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
    private let tls: AMQPTLS?

    init(
        key: BrokerKey, address: ResolvedAddress, options: RabbitMQOptions, tls: AMQPTLS?, group: any EventLoopGroup,
        logger: Logger
    ) {
        self.tls = tls
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
        await AMQPHandler.open(
            address, settings: settings, group: group, timeout: timeout, tls: tls,
            onClose: { [weak self] channel in self?.reconnecting?.lost(channel) })
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
