import NIOCore
import Synchronization

/// How much one HTTP MI listener gives to connections it does not yet trust (`mi.max_connections`,
/// `mi.header_timeout`, `mi.idle_timeout`).
public struct MIConnectionLimits: Sendable, Hashable {
    /// Open connections at most; at the cap the oldest that has made no authenticated request is
    /// closed to make room (or, when every one has, the new one).
    public var maxConnections: Int
    /// A request's head must arrive within this once its first byte has, and then its body
    /// within as long again: a slow sender cannot hold a connection (or a 1 MiB buffer) for long.
    public var headerTimeout: TimeAmount
    /// A connection with no request in progress is closed after this.
    public var idleTimeout: TimeAmount
    /// Open streams (status pages, SSE and WebSocket subscribers) at most; they are not counted
    /// in `maxConnections` and no idle timeout closes them.
    public var maxStreamClients = 2000
    /// Bytes all stream clients together may have waiting (`mi.max_stream_bytes`): past it the
    /// client with the largest backlog is dropped.
    public var maxStreamBytes = 256 << 20
    /// Names a browser may reach the listener by besides its own address, `localhost` and
    /// `[::1]` (`mi.allowed_hosts`): what a Prometheus scraping by name, or a reverse proxy, sends.
    public var allowedHosts: [String] = []

    public init(
        maxConnections: Int = 1024, headerTimeout: TimeAmount = .seconds(10), idleTimeout: TimeAmount = .seconds(60)
    ) {
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }
}

/// The open connections of one listener, oldest first, each with whether it has made an
/// authenticated request (any request when no token is set). Shared by the event loops.
final class MIConnectionTable: Sendable {
    private struct Entry {
        let channel: any Channel
        var authenticated = false
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        /// Arrival order (at most `limit` + 1 long).
        var order: [ObjectIdentifier] = []
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = max(1, limit) }

    var count: Int { state.withLock { $0.entries.count } }

    /// Registers a new connection; returns the channel to close to stay within the cap, if any.
    func admit(_ channel: any Channel) -> (any Channel)? {
        let id = ObjectIdentifier(channel)
        return state.withLock { state in
            state.entries[id] = Entry(channel: channel)
            state.order.append(id)
            guard state.entries.count > limit else { return nil }
            let victim = state.order.first { state.entries[$0]?.authenticated == false } ?? id
            state.order.removeAll { $0 == victim }
            return state.entries.removeValue(forKey: victim)?.channel
        }
    }

    func authenticated(_ channel: any Channel) {
        state.withLock { $0.entries[ObjectIdentifier(channel)]?.authenticated = true }
    }

    func remove(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLock { state in
            guard state.entries.removeValue(forKey: id) != nil else { return }
            state.order.removeAll { $0 == id }
        }
    }
}
