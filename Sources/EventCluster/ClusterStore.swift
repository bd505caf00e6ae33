import EventInterface
import Logging
import PostgresNIO
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
///
/// Every statement goes with bind parameters (PostgresNIO's extended protocol): event names and
/// sockets are never part of SQL text. A socket carrying a secret (``EventSocket/secrets``) is
/// stored only over a connection that is certainly encrypted (`sslmode` `require`, `verify-ca`,
/// `verify-full`) or when the operator says `cluster.store_secrets: plaintext`.
public final class ClusterStore: SubscriptionObserver, Sendable {
    public let url: PostgresURL
    public let node: String
    public let storeSecrets: StoreSecrets
    private let hub: WeakHub
    private let logger: Logger
    private let startedAt: Double

    /// `cluster.store_secrets`: whether a socket's secrets may travel to and rest in the store
    /// over a connection that may be in clear.
    public enum StoreSecrets: String, Sendable, CaseIterable {
        case refuse, plaintext
    }

    private struct State {
        var connection: StoreConnection?
        /// Logged once: the stored rows that carry secrets (kept and applied, written before the
        /// rule existed or with `plaintext`).
        var secretsCounted = false
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
        case resynchronise(StoreConnection, CheckedContinuation<StateStoreError?, Never>)
    }
    private let inbox: AsyncStream<Work>.Continuation

    /// The schema version this build creates and expects (2: `evi_nodes.tls`; 3:
    /// `evi_subscriptions.attributes`). Nodes of a cluster are upgraded together: an older build
    /// refuses a newer schema at start.
    static let schemaVersion = 3

    public init(
        url: PostgresURL, node: String, storeSecrets: StoreSecrets = .refuse, hub: EventHub, logger: Logger
    ) {
        self.url = url
        self.node = node
        self.storeSecrets = storeSecrets
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
                    do throws(StateStoreError) {
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

    /// Whether this node's connection to the store is encrypted now (`/ready`'s
    /// `state_store_tls`, `evi:nodes`' `tls`).
    public var isTLS: Bool { state.withLock { ($0.connection?.isActive ?? false) && $0.connection?.isTLS == true } }

    /// Whether a socket's secrets may be stored: over a connection that is certainly encrypted,
    /// or when the operator chose `plaintext`.
    public var secretsAllowed: Bool { storeSecrets == .plaintext || url.tls.mode.guaranteesTLS }

    /// Connects (and keeps reconnecting, every 0.25–1 s, while it cannot): migrate, resynchronise,
    /// follow. Returns once the first attempt has ended, connected or not; the daemon runs either
    /// way with what it knows.
    public func start() async {
        let first = CompletionSignal()
        let task = Task { [self] in
            var delay = 0.25
            var signalled = false
            while !Task.isCancelled, state.withLock({ $0.running }) {
                do throws(StateStoreError) {
                    let connection = try await connect()
                    delay = 0.25
                    if !signalled {
                        signalled = true
                        first.signal()
                    }
                    // Held until the connection closes; heartbeats meanwhile.
                    while connection.isActive, !Task.isCancelled {
                        try? await heartbeat(connection)
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
    private func connect() async throws(StateStoreError) -> StoreConnection {
        let inbox = self.inbox
        let connection = try await StoreConnection.connect(
            to: url, logger: logger, channels: ["evi_subscriptions", "evi_events"]
        ) { channel, payload in
            inbox.yield(.notification(channel: channel, payload: payload))
        }
        do throws(StateStoreError) {
            try await migrate(connection)
            try await heartbeat(connection)
            let failure = await withCheckedContinuation { continuation in
                if case .terminated = inbox.yield(.resynchronise(connection, continuation)) {
                    continuation.resume(returning: StateStoreError(message: "stopped"))
                }
            }
            if let failure { throw failure }
        } catch {
            await connection.close()
            throw error
        }
        state.withLock { $0.connection = connection }
        logger.info(
            "state store connected",
            metadata: [
                "store": "\(url)", "node": "\(node)", "tls": "\(connection.isTLS)",
                "sslmode": "\(url.tls.mode.rawValue)",
            ])
        return connection
    }

    /// Creates or upgrades the schema, one daemon at a time (an advisory lock, released on every
    /// path: a failed migration does not leave the next daemon waiting).
    private func migrate(_ connection: StoreConnection) async throws(StateStoreError) {
        try await connection.execute("SELECT pg_advisory_lock(72640019)")
        do throws(StateStoreError) {
            try await migrateLocked(connection)
        } catch {
            try? await connection.execute("SELECT pg_advisory_unlock(72640019)")
            throw error
        }
        try await connection.execute("SELECT pg_advisory_unlock(72640019)")
    }

    private func migrateLocked(_ connection: StoreConnection) async throws(StateStoreError) {
        try await connection.execute("CREATE TABLE IF NOT EXISTS evi_schema (version integer NOT NULL)")
        try await connection.execute(
            "INSERT INTO evi_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM evi_schema)")
        let version =
            try await connection.rows("SELECT version FROM evi_schema") { try $0.decode(Int32.self) }
            .first.map(Int.init) ?? 0
        guard version <= Self.schemaVersion else {
            throw StateStoreError(
                message: "the database's evi schema is version \(version), newer than this evi's \(Self.schemaVersion)")
        }
        if version < 1 {
            try await connection.execute(
                """
                CREATE TABLE evi_subscriptions (
                  event text NOT NULL, identity text NOT NULL, socket text NOT NULL,
                  expire integer, expires_at double precision,
                  updated_at timestamptz NOT NULL DEFAULT now(), updated_by text NOT NULL,
                  PRIMARY KEY (event, identity))
                """)
            try await connection.execute("CREATE TABLE evi_events (name text PRIMARY KEY)")
            try await connection.execute(
                """
                CREATE TABLE evi_nodes (name text PRIMARY KEY, started double precision NOT NULL,
                  last_seen double precision NOT NULL)
                """)
            try await connection.execute("UPDATE evi_schema SET version = 1")
        }
        if version < 2 {
            try await connection.execute("ALTER TABLE evi_nodes ADD COLUMN tls boolean NOT NULL DEFAULT false")
            try await connection.execute("UPDATE evi_schema SET version = 2")
        }
        if version < 3 {
            try await connection.execute("ALTER TABLE evi_subscriptions ADD COLUMN attributes text")
            try await connection.execute("UPDATE evi_schema SET version = 3")
        }
    }

    private func heartbeat(_ connection: StoreConnection) async throws(StateStoreError) {
        try await connection.execute(
            """
            INSERT INTO evi_nodes (name, started, last_seen, tls)
            VALUES (\(node), \(startedAt), \(Self.now()), \(connection.isTLS))
            ON CONFLICT (name) DO UPDATE SET started = EXCLUDED.started, last_seen = EXCLUDED.last_seen,
              tls = EXCLUDED.tls
            """)
    }

    /// A node of the cluster by its heartbeat row.
    public struct Node: Sendable, Equatable {
        public var name: String
        /// Unix seconds.
        public var started: Double
        public var lastSeen: Double
        /// That node's own connection to the store, as it last wrote.
        public var tls: Bool
    }

    /// The cluster's nodes by name.
    public func nodes() async throws(StateStoreError) -> [Node] {
        guard let connection = state.withLock({ $0.connection }) else { throw unreachable }
        return try await connection.rows("SELECT name, started, last_seen, tls FROM evi_nodes ORDER BY name") {
            let (name, started, lastSeen, tls) = try $0.decode((String, Double, Double, Bool).self)
            return Node(name: name, started: started, lastSeen: lastSeen, tls: tls)
        }
    }

    private var unreachable: StateStoreError { StateStoreError(message: "state store unreachable") }

    // MARK: What the store cannot hold (asked by the MI before anything changes)

    public func refusal(forEvent name: String) -> String? {
        name.utf8.contains(0) ? "event name contains NUL (0x00), which PostgreSQL text cannot hold" : nil
    }

    public func refusal(forSocket text: String, parsed socket: any EventSocket) -> String? {
        if text.utf8.contains(0) { return "socket contains NUL (0x00), which PostgreSQL text cannot hold" }
        let secrets = socket.components.flatMap(\.secrets)
        guard !secrets.isEmpty, !secretsAllowed else { return nil }
        return "not stored: the socket carries a secret (\(secrets.joined(separator: ", "))) and the state store "
            + "connection may be in clear (sslmode=\(url.tls.mode.rawValue)); set sslmode=require, verify-ca or "
            + "verify-full in the state: URL, or cluster.store_secrets: plaintext to store it anyway"
    }

    // MARK: Writes (SubscriptionObserver: the MI calls these before it answers)

    public func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws {
        guard let connection = state.withLock({ $0.connection }), connection.isActive else { throw unreachable }
        let key = Key(event: event, identity: identity)
        let stored = attributes.storedJSON
        var fields = Self.notification(event: event, identity: identity, socket: socket, attributes: stored)
        // One statement each: the row and its notification commit together (the `count(*)`
        // makes the notification go whether or not a row was there).
        if expiry == .seconds(0) {
            fields.append(EventField("removed", .bool(true)))
            try await connection.execute(
                """
                WITH gone AS (DELETE FROM evi_subscriptions WHERE event = \(event) AND identity = \(identity) RETURNING 1)
                SELECT pg_notify('evi_subscriptions', \(Self.json(fields))) FROM (SELECT count(*) FROM gone) AS done
                """)
            state.withLock { _ = $0.applied.removeValue(forKey: key) }
        } else {
            var expire: Int32?
            var expiresAt: Double?
            if case .seconds(let seconds) = expiry {
                // One clock reading: the stored row and the notification carry the same expiry.
                let at = Self.now() + Double(seconds)
                expire = Int32(clamping: seconds)
                expiresAt = at
                fields.append(EventField("expire", .int(Int64(seconds))))
                fields.append(EventField("expires_at", .double(at)))
            }
            try await connection.execute(
                """
                WITH saved AS (
                  INSERT INTO evi_subscriptions (event, identity, socket, expire, expires_at, updated_by, attributes)
                  VALUES (\(event), \(identity), \(socket), \(expire), \(expiresAt), \(node), \(stored))
                  ON CONFLICT (event, identity) DO UPDATE SET socket = EXCLUDED.socket, expire = EXCLUDED.expire,
                    expires_at = EXCLUDED.expires_at, updated_at = now(), updated_by = EXCLUDED.updated_by,
                    attributes = EXCLUDED.attributes
                  RETURNING 1)
                SELECT pg_notify('evi_subscriptions', \(Self.json(fields))) FROM (SELECT count(*) FROM saved) AS done
                """)
            state.withLock { $0.applied[key] = socket }
        }
    }

    public func eventPublished(_ name: String) async throws {
        guard let connection = state.withLock({ $0.connection }), connection.isActive else { throw unreachable }
        try await connection.execute(
            """
            WITH added AS (INSERT INTO evi_events VALUES (\(name)) ON CONFLICT DO NOTHING RETURNING 1)
            SELECT pg_notify('evi_events', \(name)) FROM (SELECT count(*) FROM added) AS done
            """)
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
        var attributes = SubscriptionAttributes.none
        for field in fields {
            if field.name == "attributes", case .string(let text) = field.value {
                guard let read = readAttributes(text, event: event) else { return }
                attributes = read
            }
            if field.name == "expire", case .int(let value) = field.value { expire = Int(value) }
            if field.name == "expires_at" {
                if case .double(let value) = field.value { expiresAt = value }
                if case .int(let value) = field.value { expiresAt = Double(value) }
            }
        }
        await subscribe(hub, key: key, socket: socket, expire: expire, expiresAt: expiresAt, attributes: attributes)
    }

    /// A stored attributes text, or nil (logged) when this build cannot read it: the
    /// subscription is not taken here rather than taken without its filter.
    private func readAttributes(_ text: String, event: String) -> SubscriptionAttributes? {
        do throws(FilterError) { return try SubscriptionAttributes(storedJSON: text) } catch {
            logger.warning(
                "cluster subscription not taken on this node",
                metadata: ["event": "\(event)", "reason": "attributes: \(error.message)"])
            return nil
        }
    }

    /// The `pg_notify` payload's first members (the expiry follows); `attributes` as stored.
    static func notification(event: String, identity: String, socket: String, attributes: String?) -> [EventField] {
        var fields: [EventField] = [
            EventField("event", .string(event)), EventField("identity", .string(identity)),
            EventField("socket", .string(socket)),
        ]
        if let attributes { fields.append(EventField("attributes", .string(attributes))) }
        return fields
    }

    /// PostgreSQL's bound on a `NOTIFY` payload is 8,000 bytes: a subscription whose
    /// notification would not fit is refused before anything changes.
    public func refusal(
        forSubscription event: String, socket: String, identity: String, attributes: SubscriptionAttributes
    ) -> String? {
        var fields = Self.notification(
            event: event, identity: identity, socket: socket, attributes: attributes.storedJSON)
        fields.append(EventField("expire", .int(Int64(Int32.max))))
        fields.append(EventField("expires_at", .double(1e10)))
        let size = Self.json(fields).utf8.count
        guard size > 7_900 else { return nil }
        return "the subscription is too large for the state store's notification (\(size) bytes with its filter "
            + "and fields; at most 7,900)"
    }

    /// Takes a stored subscription on this node; returns whether its socket carries secrets.
    @discardableResult
    private func subscribe(
        _ hub: EventHub, key: Key, socket: String, expire: Int?, expiresAt: Double?,
        attributes: SubscriptionAttributes
    ) async -> Bool {
        let remaining = expiresAt.map { $0 - Self.now() }
        if let remaining, remaining <= 0 { return false }
        if hub.event(named: key.event) == nil { _ = try? hub.publish(key.event) }
        do throws(EventInterfaceError) {
            let parsed: any EventSocket
            do throws(SocketError) { parsed = try await hub.registry.parseSocket(socket) } catch {
                throw .badSocket(error)
            }
            _ = try await hub.subscribe(
                event: key.event, parsed: parsed, expiry: expire.map { .seconds($0) } ?? .never, remaining: remaining,
                attributes: attributes)
            state.withLock { $0.applied[key] = socket }
            return !parsed.components.flatMap(\.secrets).isEmpty
        } catch {
            logger.warning(
                "cluster subscription not taken on this node",
                metadata: ["event": "\(key.event)", "socket": "\(key.identity)", "reason": "\(error)"])
            return false
        }
    }

    /// Everything the database holds, applied; what this node took from the cluster and the
    /// database no longer holds, removed.
    private func resynchronise(_ connection: StoreConnection) async throws(StateStoreError) {
        guard let hub = hub.hub else { return }
        for name in try await connection.rows("SELECT name FROM evi_events", decode: { try $0.decode(String.self) })
        where hub.event(named: name) == nil {
            _ = try? hub.publish(name)
        }
        let rows = try await connection.rows(
            "SELECT event, identity, socket, expire, expires_at, attributes FROM evi_subscriptions"
        ) {
            try $0.decode((String, String, String, Int32?, Double?, String?).self)
        }
        var present = Set<Key>()
        var withSecrets = 0
        for (event, identity, socket, expire, expiresAt, stored) in rows {
            let key = Key(event: event, identity: identity)
            present.insert(key)
            let attributes: SubscriptionAttributes
            if let stored {
                guard let read = readAttributes(stored, event: event) else { continue }
                attributes = read
            } else {
                attributes = .none
            }
            if await subscribe(
                hub, key: key, socket: socket, expire: expire.map(Int.init), expiresAt: expiresAt,
                attributes: attributes)
            {
                withSecrets += 1
            }
        }
        let gone = state.withLock { state -> [(Key, String)] in
            let gone = state.applied.filter { !present.contains($0.key) }
            for (key, _) in gone { state.applied[key] = nil }
            return gone.map { ($0.key, $0.value) }
        }
        for (key, socket) in gone { _ = try? await hub.unsubscribe(event: key.event, socket: socket) }
        logger.info(
            "state store synchronised", metadata: ["subscriptions": "\(rows.count)", "removed": "\(gone.count)"])
        if withSecrets > 0, !state.withLock({ $0.secretsCounted }) {
            state.withLock { $0.secretsCounted = true }
            logger.warning(
                "stored subscriptions carry secrets in clear: kept and applied",
                metadata: [
                    "subscriptions": "\(withSecrets)", "sslmode": "\(url.tls.mode.rawValue)",
                    "store_secrets": "\(storeSecrets.rawValue)",
                ])
        }
    }

    public func stop() async {
        let connection = state.withLock { state -> StoreConnection? in
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
