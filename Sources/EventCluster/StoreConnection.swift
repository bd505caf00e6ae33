import EventInterface
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// Why a state-store call failed, in words an operator can act on: the server's message with
/// its SQLSTATE, or what happened to the connection (refused, TLS verification, timeout).
/// PostgresNIO's own description is deliberately generic; this one is not, and carries no
/// query text or bind values.
public struct StateStoreError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var sqlState: String?

    public init(message: String, sqlState: String? = nil) {
        self.message = message
        self.sqlState = sqlState
    }

    public var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }

    init(_ error: any Error) {
        if let error = error as? StateStoreError {
            self = error
        } else if let error = error as? PSQLError {
            if let server = error.serverInfo, let message = server[.message] {
                self.init(message: message, sqlState: server[.sqlState])
            } else if let underlying = error.underlying {
                self.init(message: "\(error.code): \(String(describing: underlying))")
            } else {
                self.init(message: "\(error.code)")
            }
        } else {
            self.init(message: String(describing: error))
        }
    }
}

/// One connection to the state store, on PostgresNIO: queries with bind parameters, each bounded
/// in time (a server that stops answering closes the connection, and the store reconnects),
/// and every `NOTIFY` on the given channels handed to `onNotification` in the order the server
/// sent them, on the connection's event loop.
public final class StoreConnection: Sendable {
    let connection: PostgresConnection
    /// Whether this connection is encrypted, as the server sees it (`pg_stat_ssl`): with
    /// `sslmode=prefer` it may or may not be.
    public let isTLS: Bool
    let timeout: Duration

    private init(connection: PostgresConnection, isTLS: Bool, timeout: Duration) {
        self.connection = connection
        self.isTLS = isTLS
        self.timeout = timeout
    }

    /// `duration` on NIO's clock, to the nanosecond.
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    public var isActive: Bool { !connection.isClosed }

    public static func connect(
        to url: PostgresURL, logger: Logger, timeout: Duration = .seconds(10), channels: [String] = [],
        onNotification: @escaping @Sendable (_ channel: String, _ payload: String) -> Void = { _, _ in }
    ) async throws(StateStoreError) -> StoreConnection {
        let tls: PostgresConnection.Configuration.TLS
        do throws(ConfigurationError) {
            switch (url.tls.mode, try url.sslContext()) {
            case (.disable, _), (_, nil): tls = .disable
            case (.prefer, let context?): tls = .prefer(context)
            case (_, let context?): tls = .require(context)
            }
        } catch {
            throw StateStoreError(message: error.description)
        }
        var configuration = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.user, password: url.password, database: url.database,
            tls: tls)
        configuration.options.connectTimeout = timeAmount(timeout)
        let connection: PostgresConnection
        let settings = configuration
        do {
            connection = try await bounded(timeout) {
                try await PostgresConnection.connect(
                    on: MultiThreadedEventLoopGroup.singleton.any(), configuration: settings, id: 1,
                    logger: logger)
            }
        } catch {
            // NIO's connect timeout also bounds the start-up exchange: the same words as our own bound.
            if let error = error as? PSQLError, case .connectTimeout? = error.underlying as? ChannelError {
                throw StateStoreError(message: "no answer from the state store within \(timeout)")
            }
            throw StateStoreError(error)
        }
        for channel in channels {
            connection.addListener(channel: channel) { _, notification in
                onNotification(notification.channel, notification.payload)
            }
        }
        let store = StoreConnection(connection: connection, isTLS: false, timeout: timeout)
        do throws(StateStoreError) {
            for channel in channels { try await store.execute("LISTEN \(unescaped: channel)") }
            let encrypted = try await store.rows("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") {
                try $0.decode(Bool.self)
            }.first
            return StoreConnection(connection: connection, isTLS: encrypted ?? false, timeout: timeout)
        } catch {
            await store.close()
            throw error
        }
    }

    /// Runs a statement, its rows (if any) read and dropped.
    public func execute(_ query: PostgresQuery) async throws(StateStoreError) {
        _ = try await rows(query) { _ in () }
    }

    /// Every row of a query, each decoded by `decode` (`try $0.decode((String, Double).self)`).
    /// The bound is a timer on the connection's event loop that closes it (a query has no
    /// cancellation of its own): cheaper on every statement than a racing task.
    public func rows<Row: Sendable>(
        _ query: PostgresQuery, decode: @escaping @Sendable (PostgresRow) throws -> Row
    ) async throws(StateStoreError) -> [Row] {
        let connection = connection
        let expired = Mutex(false)
        let timer = connection.eventLoop.scheduleTask(in: Self.timeAmount(timeout)) {
            expired.withLock { $0 = true }
            connection.close().whenComplete { _ in }
        }
        defer { timer.cancel() }
        do {
            var rows: [Row] = []
            for try await row in try await connection.query(query, logger: connection.logger) {
                rows.append(try decode(row))
            }
            return rows
        } catch {
            if expired.withLock({ $0 }) {
                throw StateStoreError(message: "no answer from the state store within \(timeout)")
            }
            throw StateStoreError(error)
        }
    }

    public func close() async { try? await connection.close() }

    /// `body` (a connection attempt, which ends when its task is cancelled), or `StateStoreError`
    /// after `timeout`: the attempt's TCP connect has its own limit, but not its TLS handshake
    /// and authentication with a peer that says nothing.
    static func bounded<R: Sendable>(
        _ timeout: Duration, _ body: @escaping @Sendable () async throws -> R
    ) async throws -> R {
        try await withThrowingTaskGroup(of: R?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return nil }
                throw StateStoreError(message: "no answer from the state store within \(timeout)")
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw StateStoreError(message: "no answer from the state store")
        }
    }
}
