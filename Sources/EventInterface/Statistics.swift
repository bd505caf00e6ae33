import Synchronization

/// Counters of one transport, shared by all its subscribers; atomics so that delivery tasks
/// never contend on a lock to count.
public final class TransportCounters: Sendable {
    public let delivered = Atomic<Int>(0)
    public let failed = Atomic<Int>(0)
    /// Events refused because the subscriber's queue was full.
    public let dropped = Atomic<Int>(0)
    /// Events waiting in this transport's queues right now.
    public let queued = Atomic<Int>(0)

    init() {}
}

/// Counters of one event.
public final class EventCounters: Sendable {
    /// Every raise of the event, subscribers or not.
    public let raised = Atomic<Int>(0)
    /// Events a virtual subscriber could hand to none of its members.
    public let undelivered = Atomic<Int>(0)

    init() {}
}

/// A copy of the counters at one moment.
public struct StatisticsSnapshot: Sendable, Hashable {
    public struct Transport: Sendable, Hashable {
        public var delivered: Int
        public var failed: Int
        public var dropped: Int
        public var queued: Int
    }
    public struct EventCount: Sendable, Hashable {
        public var raised: Int
        public var undelivered: Int
    }
    public var transports: [String: Transport]
    public var events: [String: EventCount]
}

/// Every counter of an interface, by transport scheme and by event name.
public final class Statistics: Sendable {
    private let transports = Mutex<[String: TransportCounters]>([:])
    private let events = Mutex<[String: EventCounters]>([:])

    public init() {}

    /// The counters of `scheme`, created at first use; callers keep the reference.
    public func transport(_ scheme: String) -> TransportCounters {
        transports.withLock { table in
            if let counters = table[scheme] { return counters }
            let counters = TransportCounters()
            table[scheme] = counters
            return counters
        }
    }

    /// The counters of `event`, created at first use; callers keep the reference.
    public func event(_ name: String) -> EventCounters {
        events.withLock { table in
            if let counters = table[name] { return counters }
            let counters = EventCounters()
            table[name] = counters
            return counters
        }
    }

    public func snapshot() -> StatisticsSnapshot {
        let transportTable = transports.withLock { $0 }
        let eventTable = events.withLock { $0 }
        return StatisticsSnapshot(
            transports: transportTable.mapValues {
                .init(
                    delivered: $0.delivered.load(ordering: .relaxed),
                    failed: $0.failed.load(ordering: .relaxed),
                    dropped: $0.dropped.load(ordering: .relaxed),
                    queued: $0.queued.load(ordering: .relaxed))
            },
            events: eventTable.mapValues {
                .init(raised: $0.raised.load(ordering: .relaxed), undelivered: $0.undelivered.load(ordering: .relaxed))
            })
    }
}
