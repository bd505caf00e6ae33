import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or `postgresql://`); what the URL leaves out comes
/// from the standard `PGUSER`, `PGPASSWORD`, `PGHOST`, `PGPORT`, `PGDATABASE`. Printed without its
/// password.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String

    public var description: String {
        "postgres://\(user)\(password == nil ? "" : ":***")@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    public static func parse(_ text: String, environment: [String: String]) throws(ConfigurationError) -> PostgresURL {
        let rest: Substring
        if text.hasPrefix("postgres://") {
            rest = text.dropFirst(11)
        } else if text.hasPrefix("postgresql://") {
            rest = text.dropFirst(13)
        } else {
            throw ConfigurationError("state: expected a directory, memory or postgres://USER@HOST/DB")
        }
        var user = environment["PGUSER"] ?? "postgres"
        var password = environment["PGPASSWORD"]
        var hostPart = rest
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            hostPart = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = PercentEncoding.decode(credentials[..<colon])
                password = PercentEncoding.decode(credentials[credentials.index(after: colon)...])
            } else {
                user = PercentEncoding.decode(credentials)
            }
        }
        let slash = hostPart.firstIndex(of: "/") ?? hostPart.endIndex
        let authority = hostPart[..<slash]
        var database = slash == hostPart.endIndex ? "" : String(hostPart[hostPart.index(after: slash)...])
        if let question = database.firstIndex(of: "?") {
            try checkQuery(database[database.index(after: question)...], environment: environment)
            database = String(database[..<question])
        } else {
            try checkQuery("", environment: environment)
        }
        if database.isEmpty { database = environment["PGDATABASE"] ?? user }
        var host = environment["PGHOST"] ?? "127.0.0.1"
        var port = Int(environment["PGPORT"] ?? "") ?? 5432
        if !authority.isEmpty {
            do {
                let parsed = try HostPort.parse(
                    authority.hasSuffix("]") || !authority.contains(":") ? "\(authority):\(port)" : String(authority),
                    scheme: "postgres", socket: "postgres://…@\(authority)")
                host = parsed.host
                port = parsed.port
            } catch {
                throw ConfigurationError("state: \(error.message)")
            }
        }
        guard !user.isEmpty, !database.isEmpty else {
            throw ConfigurationError("state: postgres URL needs a user and a database")
        }
        return PostgresURL(user: user, password: password, host: host, port: port, database: String(database))
    }

    /// The URL's query keys libpq users write: `sslmode` (and `PGSSLMODE`) only as `disable`, the
    /// one mode this client has — anything asking for TLS stops start-up rather than being dropped
    /// and the connection made in clear. An unknown key stops start-up naming it.
    static func checkQuery(_ query: Substring, environment: [String: String]) throws(ConfigurationError) {
        let known = ["sslmode", "sslrootcert", "sslcert", "sslkey"]
        var sslmode = environment["PGSSLMODE"].map { ($0, "PGSSLMODE") }
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = PercentEncoding.decode(parts[0])
            let value = parts.count > 1 ? PercentEncoding.decode(parts[1]) : ""
            guard known.contains(key) else {
                throw ConfigurationError(
                    "state: unknown postgres URL key '\(key)' (known: \(known.joined(separator: ", ")))")
            }
            if key == "sslmode" {
                sslmode = (value, "sslmode")
            } else {
                throw ConfigurationError(
                    "state: \(key): TLS to the state store is not in this build; only sslmode=disable is")
            }
        }
        guard let (mode, source) = sslmode, mode != "disable" else { return }
        let modes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
        guard modes.contains(mode) else {
            throw ConfigurationError(
                "state: \(source) '\(mode)' is not one of \(modes.joined(separator: ", "))")
        }
        throw ConfigurationError(
            "state: \(source)=\(mode): TLS to the state store is not in this build; only sslmode=disable is "
                + "(the connection would go in clear)")
    }

}

/// Why a PostgreSQL call failed: the server's message with its SQLSTATE, or the connection's.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var sqlState: String?
    public var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }
}

/// One connection to PostgreSQL: queries one after another (simple protocol, text results), and
/// every `NOTIFY` on a channel it listens to handed to `onNotification`. Its state lives on the
/// channel's event loop in ``PostgresHandler``.
public final class PostgresConnection: Sendable {
    let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    /// Connects and authenticates (trust, cleartext, MD5 or SCRAM-SHA-256) within `timeout`.
    public static func connect(
        to url: PostgresURL, timeout: Duration = .seconds(5),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onNotification: @escaping @Sendable (_ channel: String, _ payload: String) -> Void = { _, _ in },
        onClose: @escaping @Sendable () -> Void = {}
    ) async throws(PostgresError) -> PostgresConnection {
        let address: ResolvedAddress
        do {
            address = try await HostPort(host: url.host, port: url.port).resolve(
                socketType: Int32(SOCK_STREAM.rawValue), socket: url.description)
        } catch {
            throw PostgresError(message: error.message)
        }
        let loop = group.next()
        let ready = loop.makePromise(of: Void.self)
        let channel: any Channel
        do {
            let promise = ready
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(TimeAmount(timeout))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            PostgresHandler(
                                url: url, ready: promise, onNotification: onNotification, onClose: onClose))
                    }
                }
                .connect(to: try address.socketAddress()).get()
        } catch {
            let failure = PostgresError(message: DeliveryFailure.connectFailure(error).reason)
            ready.fail(failure)
            throw failure
        }
        switch await ready.futureResult.result(within: TimeAmount(timeout)) {
        case .success?: return PostgresConnection(channel: channel)
        case .failure(let error)?:
            channel.close(promise: nil)
            throw error as? PostgresError ?? PostgresError(message: "\(error)")
        case nil:
            channel.close(promise: nil)
            throw PostgresError(message: "PostgreSQL did not answer in \(timeout)")
        }
    }

    /// Runs `sql` (one or more statements) and returns the rows of its results, in order.
    public func query(_ sql: String, timeout: Duration = .seconds(10)) async throws(PostgresError) -> [[String?]] {
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: [[String?]].self)
        channel.eventLoop.execute {
            guard let handler = try? channel.pipeline.syncOperations.handler(type: PostgresHandler.self) else {
                promise.fail(PostgresError(message: "connection closed"))
                return
            }
            handler.enqueue(sql, promise: promise, context: channel)
        }
        switch await promise.futureResult.result(within: TimeAmount(timeout)) {
        case .success(let rows)?: return rows
        case .failure(let error)?: throw error as? PostgresError ?? PostgresError(message: "\(error)")
        case nil:
            channel.close(promise: nil)
            throw PostgresError(message: "no reply in \(timeout)")
        }
    }

    public var isActive: Bool { channel.isActive }

    public func close() async {
        channel.writeAndFlush(channel.allocator.buffer(bytes: PostgresFrontend.terminate), promise: nil)
        try? await channel.close()
    }
}

/// The connection's protocol state on its event loop: authentication, then one query at a time
/// from a queue, and notifications whenever they come.
final class PostgresHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case authenticating
        case ready
        case closed
    }

    private let url: PostgresURL
    private let ready: EventLoopPromise<Void>
    private let onNotification: @Sendable (String, String) -> Void
    private let onClose: @Sendable () -> Void
    private var decoder = PostgresDecoder()
    private var phase = Phase.authenticating
    private var scram: PostgresSCRAM?
    private var queue: [(sql: String, promise: EventLoopPromise<[[String?]]>)] = []
    private var running: (promise: EventLoopPromise<[[String?]]>, rows: [[String?]], error: PostgresError?)?
    private var failure: PostgresError?
    private var authenticated = false

    init(
        url: PostgresURL, ready: EventLoopPromise<Void>, onNotification: @escaping @Sendable (String, String) -> Void,
        onClose: @escaping @Sendable () -> Void
    ) {
        self.url = url
        self.ready = ready
        self.onNotification = onNotification
        self.onClose = onClose
    }

    func channelActive(context: ChannelHandlerContext) {
        write(PostgresFrontend.startup(user: url.user, database: url.database), context: context)
        context.fireChannelActive()
    }

    func enqueue(_ sql: String, promise: EventLoopPromise<[[String?]]>, context channel: any Channel) {
        guard phase != .closed else {
            promise.fail(failure ?? PostgresError(message: "connection closed"))
            return
        }
        queue.append((sql, promise))
        if phase == .ready, running == nil { startNext(channel: channel) }
    }

    private func startNext(channel: any Channel) {
        guard running == nil, !queue.isEmpty else { return }
        let (sql, promise) = queue.removeFirst()
        running = (promise, [], nil)
        channel.writeAndFlush(channel.allocator.buffer(bytes: PostgresFrontend.query(sql)), promise: nil)
    }

    private func write(_ bytes: [UInt8], context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        decoder.feed(unwrapInboundIn(data).readableBytesView)
        do {
            while let message = try decoder.next() {
                try handle(message, context: context)
            }
        } catch let error as PostgresError {
            fail(error, context: context)
        } catch {
            fail(PostgresError(message: "protocol error: \(error)"), context: context)
        }
    }

    private func handle(_ message: PostgresBackend, context: ChannelHandlerContext) throws {
        switch message {
        case .authentication(let step):
            try authenticate(step, context: context)
        case .readyForQuery:
            if phase == .authenticating {
                phase = .ready
                authenticated = true
                // Literals are quoted with doubled quotes only: make sure backslashes are plain.
                queue.insert(("SET standard_conforming_strings = on", context.eventLoop.makePromise()), at: 0)
                ready.succeed()
            } else if let finished = running {
                running = nil
                if let error = finished.error {
                    finished.promise.fail(error)
                } else {
                    finished.promise.succeed(finished.rows)
                }
            }
            startNext(channel: context.channel)
        case .dataRow(let values):
            running?.rows.append(values)
        case .error(let fields):
            let error = PostgresError(message: fields["M"] ?? "error", sqlState: fields["C"])
            if phase == .authenticating { throw error }
            if running != nil, running?.error == nil { running?.error = error }
        case .notification(let channel, let payload):
            onNotification(channel, payload)
        default: break
        }
    }

    private func authenticate(_ step: PostgresBackend.Authentication, context: ChannelHandlerContext) throws {
        switch step {
        case .ok: break
        case .cleartext:
            guard let password = url.password else { throw PostgresError(message: "the server asks for a password") }
            write(PostgresFrontend.password(password), context: context)
        case .md5(let salt):
            guard let password = url.password else { throw PostgresError(message: "the server asks for a password") }
            write(
                PostgresFrontend.password(PostgresSCRAM.md5Password(user: url.user, password: password, salt: salt)),
                context: context)
        case .sasl(let mechanisms):
            guard mechanisms.contains("SCRAM-SHA-256") else {
                throw PostgresError(message: "the server offers only \(mechanisms.joined(separator: ", "))")
            }
            guard let password = url.password else { throw PostgresError(message: "the server asks for a password") }
            var generator = SystemRandomNumberGenerator()
            let nonce = Base64.encode((0..<18).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let exchange = PostgresSCRAM(password: password, clientNonce: nonce)
            scram = exchange
            write(
                PostgresFrontend.saslInitial(mechanism: "SCRAM-SHA-256", data: exchange.clientFirst), context: context)
        case .saslContinue(let data):
            guard var exchange = scram else { throw PostgresError(message: "unexpected SCRAM step") }
            let final: [UInt8]
            do throws(PostgresSCRAM.Failure) { final = try exchange.clientFinal(serverFirst: data) } catch {
                throw error.asPostgresError
            }
            scram = exchange
            write(PostgresFrontend.saslResponse(final), context: context)
        case .saslFinal(let data):
            guard let exchange = scram else { throw PostgresError(message: "unexpected SCRAM step") }
            do throws(PostgresSCRAM.Failure) { try exchange.verify(serverFinal: data) } catch {
                throw error.asPostgresError
            }
        case .unsupported(let code):
            throw PostgresError(message: "unsupported authentication method \(code)")
        }
    }

    private func fail(_ error: PostgresError, context: ChannelHandlerContext) {
        failure = failure ?? error
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = failure ?? PostgresError(message: "connection closed")
        phase = .closed
        if !authenticated { ready.fail(error) }
        running?.promise.fail(error)
        running = nil
        for item in queue { item.promise.fail(error) }
        queue = []
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(PostgresError(message: "\(error)"), context: context)
    }
}

extension PostgresSCRAM.Failure {
    var asPostgresError: PostgresError { PostgresError(message: description) }
}
