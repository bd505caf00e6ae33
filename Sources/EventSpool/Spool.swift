import EventInterface
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The spool of durable delivery (`delivery: durable`): a directory holding one sub-directory per
/// durable stream (``SpoolFiles``), the bound on their total size, the background fsync, and what
/// the operator asks of them (`evi:spool`, `evi:dead_letters`, `evi:replay`, `evi:purge`).
public final class Spool: DurableStore {
    /// The `spool:` section of the configuration.
    public struct Settings: Sendable, Hashable {
        public var directory: String
        public var maxBytes = 1 << 30
        public var maxTotalBytes = 10 << 30
        /// Seconds an event may wait for its subscriber before it becomes a dead letter.
        public var maxAge = 86_400.0
        public var retryMinimum = 1.0
        public var retryMaximum = 60.0
        /// How often written segments are fsynced (the power-loss window), unless `fsyncAlways`.
        public var fsyncInterval = Duration.milliseconds(5)
        /// fsync every write before the raise returns (`spool.fsync: always`).
        public var fsyncAlways = false
        /// Largest segment file.
        public var segmentSize = 4 << 20

        public init(directory: String) { self.directory = directory }
    }

    public let settings: Settings
    private let logger: Logger
    private let totals: SpoolTotals
    private let streams = Mutex<[String: SpoolStream]>([:])
    private let running = Atomic<Bool>(false)
    private let syncs = Atomic<Int>(0)

    /// Background fsyncs made so far (`evi bench --durable` reports them per second).
    public var fsyncCount: Int { syncs.load(ordering: .relaxed) }

    /// Opens the spool directory (created if missing, and checked writable).
    public init(settings: Settings, logger: Logger = Logger(label: "evi")) throws(StoreError) {
        self.settings = settings
        self.logger = logger
        totals = SpoolTotals(maxTotalBytes: settings.maxTotalBytes)
        try SpoolFiles.makeDirectory(settings.directory)
        let probe = settings.directory + "/.probe"
        let descriptor = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SpoolFiles.failure("write in \(settings.directory)", errno) }
        close(descriptor)
        unlink(probe)
    }

    /// Starts the background fsync (every `fsync_interval_ms`) and the gauges (every second), on
    /// a thread of its own: on the cooperative pool, two cores busy delivering stretched a 5 ms
    /// interval to 70 ms (measured with `evi bench --durable`), and the interval is the
    /// power-loss window.
    public func start() {
        guard !running.exchange(true, ordering: .relaxed) else { return }
        let interval = settings.fsyncAlways ? Duration.seconds(1) : settings.fsyncInterval
        let microseconds = UInt32(
            max(1, interval.components.seconds * 1_000_000 + interval.components.attoseconds / 1_000_000_000_000))
        detachThread { [weak self] in
            var sinceGauges: UInt32 = 0
            while let spool = self, spool.running.load(ordering: .relaxed) {
                usleep(microseconds)
                if !spool.settings.fsyncAlways { spool.syncAll() }
                sinceGauges += microseconds
                if sinceGauges >= 1_000_000 {
                    sinceGauges = 0
                    spool.updateGauges()
                }
            }
        }
    }

    /// Stops the background work after a last fsync.
    public func stop() {
        running.store(false, ordering: .relaxed)
        syncAll()
    }

    private func syncAll() {
        for stream in streams.withLock({ Array($0.values) }) {
            guard let descriptor = stream.descriptorToSync() else { continue }
            _ = fdatasync(descriptor)
            close(descriptor)
            syncs.add(1, ordering: .relaxed)
        }
    }

    private func updateGauges() {
        for stream in streams.withLock({ Array($0.values) }) {
            let report = stream.report()
            let dimensions = [("event", stream.event.name), ("socket", redactingCredentials(stream.name))]
            Gauge(label: "evi_spool_events", dimensions: dimensions).record(report.events)
            Gauge(label: "evi_spool_bytes", dimensions: dimensions).record(report.bytes)
        }
    }

    // MARK: DurableStore

    public func makeSubscriber(socket: any EventSocket, streams made: [DurableStream], context: SubscriberContext)
        throws(StoreError) -> any DurableSubscriber
    {
        guard !made.isEmpty else { throw StoreError("\(socket.scheme) sockets cannot be durable") }
        var opened: [SpoolStream] = []
        let streamSettings = SpoolStream.Settings(
            maxBytes: settings.maxBytes, maxAge: settings.maxAge, retryMinimum: settings.retryMinimum,
            retryMaximum: settings.retryMaximum, windowCount: context.queueCapacity, windowBytes: 16 << 20)
        // Segments well under the bound, so that shedding the oldest one moves out a small part.
        let segmentSize = min(settings.segmentSize, max(4 << 10, settings.maxBytes / 8))
        for stream in made {
            let directory =
                settings.directory + "/"
                + Self.directoryName(
                    event: context.event.name, identity: socket.identity, stream: stream.key)
            let files: SpoolFiles
            do throws(StoreError) {
                files = try SpoolFiles(
                    directory: directory,
                    describing:
                        "event: \(context.event.name)\nsocket: \(redactingCredentials(socket.description))\nstream: \(redactingCredentials(stream.name))\n",
                    segmentSize: segmentSize, fsyncAlways: settings.fsyncAlways)
            } catch {
                for stream in opened { Task { await stream.close(grace: .zero) } }
                throw error
            }
            let opening = SpoolStream(
                files: files, event: context.event, socket: socket.description, identity: socket.identity,
                stream: stream, settings: streamSettings, spool: totals, clock: context.clock, logger: logger)
            opened.append(opening)
        }
        streams.withLock { streams in
            for stream in opened { streams[stream.directory] = stream }
        }
        return SpoolSubscriber(streams: opened, spool: self)
    }

    func forget(_ closed: [SpoolStream]) {
        streams.withLock { streams in
            for stream in closed where streams[stream.directory] === stream { streams[stream.directory] = nil }
        }
    }

    /// `EVENT-<16 hex digits>`: the event's name (letters, digits, `_`, `-`, `.`; the rest as
    /// `_`) for the operator, and a hash of the subscription's identity and the stream's key.
    static func directoryName(event: String, identity: String, stream: String) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a, 64 bits
        for byte in (event + "\n" + identity + "\n" + stream).utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0100_0000_01B3
        }
        let safe = String(
            event.prefix(64).map { $0.isLetter || $0.isNumber || "_-.".contains($0) ? $0 : "_" })
        let hex = String(hash, radix: 16)
        return safe + "-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Spool directories no subscription opened, with events still in them (a durable
    /// subscription made over MI with `state: memory`, or removed from the configuration): what
    /// they hold stays on disk, undelivered, until the subscription comes back. Logged once at start.
    public func reportUnclaimed() {
        let opened = Set(streams.withLock { Array($0.keys) })
        for name in (try? SpoolFiles.list(settings.directory)) ?? [] where !name.hasPrefix(".") {
            let path = settings.directory + "/" + name
            // A stream's directory (a file is not one: it cannot be listed) with segments left.
            guard !opened.contains(path), let files = try? SpoolFiles.list(path),
                files.contains(where: { $0.hasSuffix(".seg") })
            else { continue }
            var about = [UInt8](repeating: 0, count: 4096)
            let file = open(path + "/stream", O_RDONLY | O_CLOEXEC)
            let length = file >= 0 ? read(file, &about, about.count) : 0
            if file >= 0 { close(file) }
            let description = String(decoding: about.prefix(max(0, length)), as: UTF8.self)
                .split(separator: "\n").joined(separator: "; ")
            logger.warning(
                "spool: events stored for a subscription that does not exist now; subscribe it again to deliver them",
                metadata: ["directory": "\(path)", "stream": "\(description)"])
        }
    }

    // MARK: Operator

    /// The open streams of `event` (or all) whose subscription's identity is `identity` (or any),
    /// ordered by event then socket.
    func streams(event: String?, identity: String?) -> [SpoolStream] {
        streams.withLock { Array($0.values) }.filter { stream in
            (event.map { $0 == stream.event.name } ?? true) && (identity.map { $0 == stream.identity } ?? true)
        }.sorted { ($0.event.name, $0.socket, $0.name) < ($1.event.name, $1.socket, $1.name) }
    }
}

/// What all streams of a spool share: their total size against `max_total_bytes`, and the counters.
final class SpoolTotals: Sendable {
    let maxTotalBytes: Int
    private let bytes = Atomic<Int>(0)

    init(maxTotalBytes: Int) { self.maxTotalBytes = maxTotalBytes }

    /// Adds (or with a negative count frees) bytes; whether the total is now past its bound.
    @discardableResult
    func add(bytes count: Int) -> Bool {
        bytes.add(count, ordering: .relaxed).newValue > maxTotalBytes
    }

    var overTotal: Bool { bytes.load(ordering: .relaxed) > maxTotalBytes }
    var total: Int { bytes.load(ordering: .relaxed) }

    func recordRetries(_ count: Int, transport: String) {
        Counter(label: "evi_delivery_retries_total", dimensions: [("transport", transport)]).increment(by: count)
    }

    func recordCorrupt(_ count: Int, event: String, socket: String) {
        Counter(
            label: "evi_spool_corrupt_records_total",
            dimensions: [("event", event), ("socket", redactingCredentials(socket))]
        ).increment(by: count)
    }

    func recordDeadLetters(_ count: Int, event: String, socket: String) {
        Counter(
            label: "evi_dead_letters_total", dimensions: [("event", event), ("socket", redactingCredentials(socket))]
        ).increment(by: count)
    }
}

/// A durable subscription: its streams store every raise before it returns.
final class SpoolSubscriber: DurableSubscriber {
    let streams: [SpoolStream]
    private let spool: Spool

    init(streams: [SpoolStream], spool: Spool) {
        self.streams = streams
        self.spool = spool
    }

    func store(_ event: RaisedEvent) throws(StoreError) {
        let notification = event.payload(.jsonRPC)
        let now = unixTime()
        for stream in streams { try stream.store(event, notification: notification, storedAt: now) }
    }

    func status() -> (any SubscriberStatus)? {
        DurableStatus(spooled: streams.reduce(0) { $0 + $1.report().events })
    }

    func close(grace: Duration) async {
        for stream in streams { await stream.close(grace: grace) }
        spool.forget(streams)
    }
}

/// What `evi:subscribers` adds for a durable subscription.
struct DurableStatus: SubscriberStatus {
    var spooled: Int
    var fields: [EventField] {
        [EventField("delivery", .string("durable")), EventField("spooled", .int(Int64(spooled)))]
    }
}
