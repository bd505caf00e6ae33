#if canImport(Glibc)
    import Glibc
#endif
import EventInterface
import GRDB

/// Durable subscriptions (daemon.md, State): what is subscribed over MI is written to SQLite
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

        public init(event: String, socket: String, expire: Int?, remaining: Double?) {
            self.event = event
            self.socket = socket
            self.expire = expire
            self.remaining = remaining
        }
    }

    private let database: DatabaseQueue
    public let path: String

    /// Opens (creating the directory, mode 700, and the database as needed) `DIRECTORY/subscriptions.sqlite`.
    public init(directory: String) throws {
        try Self.makeDirectory(directory)
        path = directory + "/subscriptions.sqlite"
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
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
    }

    /// Records a subscription (or its refresh), keyed by event and canonical socket; expire 0
    /// removes it. `now` is Unix time.
    public func save(event: String, canonical: String, socket: String, expiry: Expiry, now: Double = unixTime()) throws {
        try database.write { db in
            switch expiry {
            case .seconds(0):
                try db.execute(sql: "DELETE FROM subscription WHERE event = ? AND canonical = ?", arguments: [event, canonical])
            case .seconds(let seconds):
                try db.execute(
                    sql: """
                        INSERT INTO subscription (event, canonical, socket, expire, expires_at) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT(event, canonical) DO UPDATE SET socket = excluded.socket, expire = excluded.expire,
                        expires_at = excluded.expires_at
                        """, arguments: [event, canonical, socket, seconds, now + Double(seconds)])
            case .never:
                try db.execute(
                    sql: """
                        INSERT INTO subscription (event, canonical, socket, expire, expires_at) VALUES (?, ?, ?, NULL, NULL)
                        ON CONFLICT(event, canonical) DO UPDATE SET socket = excluded.socket, expire = NULL, expires_at = NULL
                        """, arguments: [event, canonical, socket])
            }
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
            try db.execute(sql: "DELETE FROM subscription WHERE expires_at IS NOT NULL AND expires_at <= ?", arguments: [now])
            return try Row.fetchAll(db, sql: "SELECT event, socket, expire, expires_at FROM subscription ORDER BY rowid").map {
                row in
                let expiresAt: Double? = row["expires_at"]
                return Record(
                    event: row["event"], socket: row["socket"], expire: row["expire"], remaining: expiresAt.map { $0 - now })
            }
        }
    }
}

public struct StateError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
