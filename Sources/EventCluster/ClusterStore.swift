import EventInterface
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Subscriptions shared by several evi daemons through PostgreSQL (`state: postgres://…`).
///
/// Every daemon keeps the cluster's subscriptions in its own hub (the raise path never touches
/// the database). What the MI changes on one daemon is written to `evi_subscriptions` before the
/// reply, with its absolute expiry, and announced with `NOTIFY evi_subscriptions` carrying the
/// row; every daemon (the writer too: applying it again changes nothing) applies it on arrival.
/// On every (re)connection a daemon resynchronises fully, since notifications sent while it was
/// cut off are lost: it publishes the stored events, subscribes every stored subscription and
/// removes the ones it had from the cluster that are gone. Configuration-file subscriptions are
/// the node's own and never stored.
public final class ClusterStore: SubscriptionObserver, Sendable {
    public let url: PostgresURL
    public let node: String
    private let hub: WeakHub
    private let logger: Logger
    private let startedAt: Double

    private struct State {
        var connection: PostgresConnection?
        /// (event, identity) → socket text, for the subscriptions this node took from the cluster.
        var applied: [Key: String] = [:]
        var running = true
        var lastError = "not connected yet"
    }

    struct Key: Hashable, Sendable {
        var event: String
        var identity: String
    }

    private let state = Mutex(State())
    private let loop = Mutex<Task<Void, Never>?>(nil)

    /// What is applied to the hub, strictly in order: notifications as they arrive, and each
    /// resynchronisation queued behind the notifications received before it (a notification for
    /// a newer change is never overtaken by an older row, nor the other way round).
    private enum Work: Sendable {
        case notification(channel: String, payload: String)
        case resynchronise(PostgresConnection, CheckedContinuation<PostgresError?, Never>)
    }
    private let inbox: AsyncStream<Work>.Continuation

    /// The schema version this build creates and expects.
    static let schemaVersion = 1

    public init(url: PostgresURL, node: String, hub: EventHub, logger: Logger) {
        self.url = url
        self.node = node
        self.hub = WeakHub(hub)
        self.logger = logger
        startedAt = Self.now()
        let (stream, inbox) = AsyncStream<Work>.makeStream()
        self.inbox = inbox
        Task { [weak self] in
            for await work in stream {
                guard let self else { return }
                switch work {
                case .notification(let channel, let payload): await self.apply(channel: channel, payload: payload)
                case .resynchronise(let connection, let done):
                    do throws(PostgresError) {
                        try await self.resynchronise(connection)
                        done.resume(returning: nil)
                    } catch {
                        done.resume(returning: error)
                    }
                }
            }
        }
    }

    /// Whether the store is reachable now (`evi_state_store_up`).
    public var isUp: Bool { state.withLock { $0.connection?.isActive ?? false } }

    /// Connects (and keeps reconnecting, every 0.25–1 s, while it cannot): migrate, resynchronise,
    /// follow. Returns once the first attempt has ended, connected or not; the daemon runs either
    /// way with what it knows.
    public func start() async {
        let first = CompletionSignal()
        let task = Task { [self] in
            var delay = 0.25
            var signalled = false
            while !Task.isCancelled, state.withLock({ $0.running }) {
                do throws(PostgresError) {
                    let connection = try await connect()
                    delay = 0.25
                    if !signalled {
                        signalled = true
                        first.signal()
                    }
                    // Held until the connection closes; heartbeats meanwhile.
                    while connection.isActive, !Task.isCancelled {
                        _ = try? await connection.query(heartbeatSQL())
                        try? await Task.sleep(for: .seconds(1))
                    }
                    state.withLock { state in
                        if state.connection === connection { state.connection = nil }
                        state.lastError = "connection lost"
                    }
                    if state.withLock({ $0.running }) {
                        logger.error("state store unreachable: connection lost", metadata: ["store": "\(url)"])
                    }
                } catch {
                    state.withLock { $0.lastError = error.description }
                    if !signalled {
                        signalled = true
                        logger.error(
                            "state store unreachable, retrying",
                            metadata: ["store": "\(url)", "reason": "\(error.description)"])
                        first.signal()
                    }
                }
                try? await Task.sleep(for: .seconds(delay))
                delay = min(1, delay * 2)
            }
        }
        loop.withLock { $0 = task }
        _ = await first.wait(timeout: .seconds(30))
    }

    /// One connection: authenticated, schema migrated, listening, resynchronised.
    private func connect() async throws(PostgresError) -> PostgresConnection {
        let connection = try await PostgresConnection.connect(to: url) { [weak self] channel, payload in
            guard let self, channel == "evi_subscriptions" || channel == "evi_events" else { return }
            self.inbox.yield(.notification(channel: channel, payload: payload))
        }
        do throws(PostgresError) {
            try await migrate(connection)
            _ = try await connection.query("LISTEN evi_subscriptions; LISTEN evi_events")
            let inbox = self.inbox
            let failure = await withCheckedContinuation { continuation in
                if case .terminated = inbox.yield(.resynchronise(connection, continuation)) {
                    continuation.resume(returning: PostgresError(message: "stopped"))
                }
            }
            if let failure { throw failure }
        } catch {
            await connection.close()
            throw error
        }
        state.withLock { $0.connection = connection }
        logger.info("state store connected", metadata: ["store": "\(url)", "node": "\(node)"])
        return connection
    }

    /// Creates or upgrades the schema, one daemon at a time (an advisory lock).
    private func migrate(_ connection: PostgresConnection) async throws(PostgresError) {
        _ = try await connection.query("SELECT pg_advisory_lock(72640019)")
        defer { Task { _ = try? await connection.query("SELECT pg_advisory_unlock(72640019)") } }
        _ = try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS evi_schema (version integer NOT NULL);
            INSERT INTO evi_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM evi_schema)
            """)
        let version =
            Int((try await connection.query("SELECT version FROM evi_schema").first?.first ?? nil) ?? "0") ?? 0
        guard version <= Self.schemaVersion else {
            throw PostgresError(
                message: "the database's evi schema is version \(version), newer than this evi's \(Self.schemaVersion)")
        }
        if version < 1 {
            _ = try await connection.query(
                """
                CREATE TABLE evi_subscriptions (
                  event text NOT NULL, identity text NOT NULL, socket text NOT NULL,
                  expire integer, expires_at double precision,
                  updated_at timestamptz NOT NULL DEFAULT now(), updated_by text NOT NULL,
                  PRIMARY KEY (event, identity));
                CREATE TABLE evi_events (name text PRIMARY KEY);
                CREATE TABLE evi_nodes (name text PRIMARY KEY, started double precision NOT NULL,
                  last_seen double precision NOT NULL);
                UPDATE evi_schema SET version = 1
                """)
        }
    }

    private func heartbeatSQL() -> String {
        let name = (try? PostgresLiteral.string(node)) ?? "'?'"
        return """
            INSERT INTO evi_nodes (name, started, last_seen) VALUES (\(name), \(startedAt), \(Self.now()))
            ON CONFLICT (name) DO UPDATE SET started = EXCLUDED.started, last_seen = EXCLUDED.last_seen
            """
    }

    /// The cluster's nodes: name, start and last heartbeat (Unix seconds).
    public func nodes() async throws(PostgresError) -> [(name: String, started: Double, lastSeen: Double)] {
        guard let connection = state.withLock({ $0.connection }) else { throw unreachable }
        return try await connection.query("SELECT name, started, last_seen FROM evi_nodes ORDER BY name").map {
            ($0[0] ?? "", Double($0[1] ?? "") ?? 0, Double($0[2] ?? "") ?? 0)
        }
    }

    private var unreachable: PostgresError { PostgresError(message: "state store unreachable") }

    // MARK: Writes (SubscriptionObserver: the MI calls these before it answers)

    public func subscriptionChanged(event: String, socket: String, identity: String, expiry: Expiry) async throws {
        guard let connection = state.withLock({ $0.connection }), connection.isActive else { throw unreachable }
        let key = Key(event: event, identity: identity)
        let sql: String
        var fields: [EventField] = [
            EventField("event", .string(event)), EventField("identity", .string(identity)),
            EventField("socket", .string(socket)),
        ]
        if expiry == .seconds(0) {
            fields.append(EventField("removed", .bool(true)))
            sql = """
                DELETE FROM evi_subscriptions WHERE event = \(try PostgresLiteral.string(event))
                  AND identity = \(try PostgresLiteral.string(identity));
                SELECT pg_notify('evi_subscriptions', \(try PostgresLiteral.string(Self.json(fields))))
                """
            state.withLock { _ = $0.applied.removeValue(forKey: key) }
        } else {
            var expire = "NULL"
            var expiresAt = "NULL"
            if case .seconds(let seconds) = expiry {
                // One clock reading: the stored row and the notification carry the same expiry.
                let at = Self.now() + Double(seconds)
                expire = String(seconds)
                expiresAt = String(at)
                fields.append(EventField("expire", .int(Int64(seconds))))
                fields.append(EventField("expires_at", .double(at)))
            }
            sql = """
                INSERT INTO evi_subscriptions (event, identity, socket, expire, expires_at, updated_by)
                VALUES (\(try PostgresLiteral.string(event)), \(try PostgresLiteral.string(identity)),
                  \(try PostgresLiteral.string(socket)), \(expire), \(expiresAt), \(try PostgresLiteral.string(node)))
                ON CONFLICT (event, identity) DO UPDATE SET socket = EXCLUDED.socket, expire = EXCLUDED.expire,
                  expires_at = EXCLUDED.expires_at, updated_at = now(), updated_by = EXCLUDED.updated_by;
                SELECT pg_notify('evi_subscriptions', \(try PostgresLiteral.string(Self.json(fields))))
                """
            state.withLock { $0.applied[key] = socket }
        }
        _ = try await connection.query(sql)
    }

    public func eventPublished(_ name: String) async throws {
        guard let connection = state.withLock({ $0.connection }), connection.isActive else { throw unreachable }
        let literal = try PostgresLiteral.string(name)
        _ = try await connection.query(
            "INSERT INTO evi_events VALUES (\(literal)) ON CONFLICT DO NOTHING; SELECT pg_notify('evi_events', \(literal))"
        )
    }

    // MARK: Following

    /// A notification from any node (this one included).
    private func apply(channel: String, payload: String) async {
        guard let hub = hub.hub else { return }
        if channel == "evi_events" {
            if hub.event(named: payload) == nil { _ = try? hub.publish(payload) }
            return
        }
        guard case .object(let fields)? = try? EventValue(json: payload) else { return }
        func text(_ name: String) -> String? {
            if case .string(let value)? = fields.first(where: { $0.name == name })?.value { return value }
            return nil
        }
        guard let event = text("event"), let identity = text("identity"), let socket = text("socket") else { return }
        let key = Key(event: event, identity: identity)
        if fields.contains(where: { $0.name == "removed" }) {
            state.withLock { _ = $0.applied.removeValue(forKey: key) }
            _ = try? await hub.unsubscribe(event: event, socket: socket)
            return
        }
        var expire: Int?
        var expiresAt: Double?
        for field in fields {
            if field.name == "expire", case .int(let value) = field.value { expire = Int(value) }
            if field.name == "expires_at" {
                if case .double(let value) = field.value { expiresAt = value }
                if case .int(let value) = field.value { expiresAt = Double(value) }
            }
        }
        await subscribe(hub, key: key, socket: socket, expire: expire, expiresAt: expiresAt)
    }

    private func subscribe(_ hub: EventHub, key: Key, socket: String, expire: Int?, expiresAt: Double?) async {
        let remaining = expiresAt.map { $0 - Self.now() }
        if let remaining, remaining <= 0 { return }
        if hub.event(named: key.event) == nil { _ = try? hub.publish(key.event) }
        do throws(EventInterfaceError) {
            _ = try await hub.subscribe(
                event: key.event, socket: socket, expiry: expire.map { .seconds($0) } ?? .never, remaining: remaining,
                delivery: nil)
            state.withLock { $0.applied[key] = socket }
        } catch {
            logger.warning(
                "cluster subscription not taken on this node",
                metadata: ["event": "\(key.event)", "socket": "\(key.identity)", "reason": "\(error)"])
        }
    }

    /// Everything the database holds, applied; what this node took from the cluster and the
    /// database no longer holds, removed.
    private func resynchronise(_ connection: PostgresConnection) async throws(PostgresError) {
        guard let hub = hub.hub else { return }
        for row in try await connection.query("SELECT name FROM evi_events") {
            if let name = row.first ?? nil, hub.event(named: name) == nil { _ = try? hub.publish(name) }
        }
        let rows = try await connection.query(
            "SELECT event, identity, socket, expire, expires_at FROM evi_subscriptions")
        var present = Set<Key>()
        for row in rows {
            guard row.count == 5, let event = row[0], let identity = row[1], let socket = row[2] else { continue }
            let key = Key(event: event, identity: identity)
            present.insert(key)
            await subscribe(
                hub, key: key, socket: socket, expire: row[3].flatMap { Int($0) },
                expiresAt: row[4].flatMap { Double($0) })
        }
        let gone = state.withLock { state -> [(Key, String)] in
            let gone = state.applied.filter { !present.contains($0.key) }
            for (key, _) in gone { state.applied[key] = nil }
            return gone.map { ($0.key, $0.value) }
        }
        for (key, socket) in gone { _ = try? await hub.unsubscribe(event: key.event, socket: socket) }
        logger.info(
            "state store synchronised", metadata: ["subscriptions": "\(rows.count)", "removed": "\(gone.count)"])
    }

    public func stop() async {
        let connection = state.withLock { state -> PostgresConnection? in
            state.running = false
            return state.connection
        }
        loop.withLock { $0?.cancel() }
        inbox.finish()
        await connection?.close()
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    static func json(_ fields: [EventField]) -> String {
        var writer = JSONWriter()
        writer.append(.object(fields))
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
