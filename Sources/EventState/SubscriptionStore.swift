import EventInterface
import EventNIOSupport
import GRDB

#if canImport(Glibc)
    import Glibc
#endif

/// Durable subscriptions (Docs/configuration.md, State): what is subscribed over MI is written to SQLite
/// before the reply is sent, with its absolute expiry, and comes back after a restart or a crash.
///
/// GRDB rather than sqlite-nio: its synchronous, serialized `DatabaseQueue` is exactly the "write,
/// then answer" the MI needs (a few hundred microseconds a write here), it links the system's
/// SQLite instead of compiling the amalgamation, and migrations and upserts come ready-made.
public final class SubscriptionStore: Sendable {
    /// One stored subscription.
    public struct Record: Sendable, Hashable {
        public var event: String
        /// The socket as given (credentials included: the printed form drops the password).
        public var socket: String
        /// The expire asked for; nil: never.
        public var expire: Int?
        /// Seconds left at load time; nil: never expires.
        public var remaining: Double?
        /// Its filter and fields (`attributes`, a JSON object), as stored; nil: none.
        public var attributes: String?

        public init(event: String, socket: String, expire: Int?, remaining: Double?, attributes: String? = nil) {
            self.event = event
            self.socket = socket
            self.expire = expire
            self.remaining = remaining
            self.attributes = attributes
        }
    }

    private let database: DatabaseQueue
    public let path: String
    /// Where the MI's writes run: SQLite may wait (busy timeout) and fsync, which must hold up
    /// neither the cooperative threads the deliveries run on nor an event loop.
    /// One thread: SQLite takes one writer at a time anyway.
    private let writer = BlockingPool(threads: 1)

    /// Runs `work` on the store's own thread and waits for it without holding a task thread.
    public func offThread<T: Sendable>(_ work: @escaping @Sendable (SubscriptionStore) throws -> T) async throws -> T {
        try await writer.run { try work(self) }
    }

    /// Opens (creating the directory, mode 700, and the database as needed) `DIRECTORY/subscriptions.sqlite`.
    /// The database holds sockets with their passwords: it is made (or made again) mode 600, and
    /// SQLite gives its `-wal`/`-shm`/journal files the same mode. A state directory that others
    /// can write to is refused: they could replace the database.
    public init(directory: String, busyTimeout: Double = 5) throws {
        try Self.makeDirectory(directory)
        path = directory + "/subscriptions.sqlite"
        for file in [path, path + "-wal", path + "-shm", path + "-journal"] {
            if file == path {
                let fd = open(file, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw StateError("cannot create \(file): \(String(cString: strerror(errno)))") }
                close(fd)
            }
            _ = chmod(file, 0o600)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(busyTimeout)
        database = try DatabaseQueue(path: path, configuration: configuration)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "subscription") { table in
                table.column("event", .text).notNull()
                table.column("canonical", .text).notNull()
                table.column("socket", .text).notNull()
                table.column("expire", .integer)
                table.column("expires_at", .double)
                table.primaryKey(["event", "canonical"])
            }
            try db.create(table: "event") { table in
                table.column("name", .text).primaryKey()
            }
        }
        // Filters and field lists (and what later versions add to subscriptions): one JSON text.
        migrator.registerMigration("v2") { db in
            try db.alter(table: "subscription") { table in table.add(column: "attributes", .text) }
        }
        try migrator.migrate(database)
    }

    private static func makeDirectory(_ directory: String) throws {
        var prefix = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            _ = mkdir(prefix, 0o700)
        }
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw StateError("cannot create state directory \(directory)")
        }
        guard info.st_mode & 0o022 == 0 else {
            throw StateError(
                "state directory \(directory) is writable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))): chmod go-w it"
            )
        }
    }

    /// Records a subscription (or its refresh), keyed by event and the socket's identity (what
    /// matching compares: a PARALLEL's members in any order are one subscription); expire 0
    /// removes it. `now` is Unix time.
    public func save(
        event: String, canonical: String, socket: String, expiry: Expiry, attributes: String? = nil,
        now: Double = unixTime()
    ) throws {
        try database.write { db in
            let (expire, expiresAt): (Int?, Double?)
            switch expiry {
            case .seconds(0):
                try db.execute(
                    sql: "DELETE FROM subscription WHERE event = ? AND canonical = ?", arguments: [event, canonical])
                return
            case .seconds(let seconds): (expire, expiresAt) = (seconds, now + Double(seconds))
            case .never: (expire, expiresAt) = (nil, nil)
            }
            try db.execute(
                sql: """
                    INSERT INTO subscription (event, canonical, socket, expire, expires_at, attributes)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(event, canonical) DO UPDATE SET socket = excluded.socket, expire = excluded.expire,
                    expires_at = excluded.expires_at, attributes = excluded.attributes
                    """, arguments: [event, canonical, socket, expire, expiresAt, attributes])
        }
    }

    /// Records an event published at run time, so that its subscriptions can come back.
    public func savePublished(_ name: String) throws {
        try database.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO event (name) VALUES (?)", arguments: [name])
        }
    }

    /// Events published at run time, in the order they were first published.
    public func publishedEvents() throws -> [String] {
        try database.read { db in try String.fetchAll(db, sql: "SELECT name FROM event ORDER BY rowid") }
    }

    /// Every subscription that has not expired at `now`, oldest first; expired ones are deleted.
    public func load(now: Double = unixTime()) throws -> [Record] {
        try database.write { db in
            try db.execute(
                sql: "DELETE FROM subscription WHERE expires_at IS NOT NULL AND expires_at <= ?", arguments: [now])
            return try Row.fetchAll(
                db, sql: "SELECT event, socket, expire, expires_at, attributes FROM subscription ORDER BY rowid"
            ).map {
                row in
                let expiresAt: Double? = row["expires_at"]
                return Record(
                    event: row["event"], socket: row["socket"], expire: row["expire"],
                    remaining: expiresAt.map { $0 - now }, attributes: row["attributes"])
            }
        }
    }
}

/// The store follows the MI's subscription changes, each written on the store's own thread.
extension SubscriptionStore: SubscriptionObserver {
    public func subscriptionChanged(
        event: String, socket: String, identity: String, expiry: Expiry, attributes: SubscriptionAttributes
    ) async throws {
        try await offThread {
            try $0.save(
                event: event, canonical: identity, socket: socket, expiry: expiry, attributes: attributes.storedJSON)
        }
    }

    public func eventPublished(_ name: String) async throws {
        try await offThread { try $0.savePublished(name) }
    }
}

public struct StateError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
