import EventInterface
import EventNIOSupport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `flatstore:/ABSOLUTE/PATH`: one line per event appended to a file (Docs/sockets.md).
public final class FlatstoreTransport: EventTransport {
    public static let rotationEvent = "E_FLATSTORE_ROTATION"

    public let options: FlatstoreOptions
    /// Wall-clock seconds, injectable for period rotation tests.
    let wallClock: @Sendable () -> Double
    /// One file per path, shared by every subscription that writes it.
    private let files = SharedResources<String, FlatstoreFile>()
    private let hub = Mutex<WeakHub?>(nil)
    let format: FlatstoreLineFormat

    public init(options: FlatstoreOptions = FlatstoreOptions(), wallClock: @escaping @Sendable () -> Double = unixTime)
    {
        self.options = options
        self.wallClock = wallClock
        self.format = FlatstoreLineFormat(options: options)
    }

    public var scheme: String { "flatstore" }
    public var publishedEvents: [String] { [Self.rotationEvent] }

    public func attach(to hub: EventHub) {
        self.hub.withLock { $0 = WeakHub(hub) }
    }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let text = "flatstore:" + address
        let policy = PathPolicy(allowedDirs: options.allowedDirs)
        let path = try policy.normalise(address, kind: "flatstore", socket: text)
        try policy.realDirectory(of: path, kind: "flatstore", socket: text)
        var info = stat()
        if stat(path, &info) == 0 {
            if (info.st_mode & S_IFMT) == S_IFDIR { throw SocketError("flatstore path is a directory: \(text)") }
            // A FIFO (or a device) would block the writer on open or on write.
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                throw SocketError("flatstore path is not a regular file: \(text)")
            }
        }
        return FlatstoreSocket(path: path, transport: self)
    }

    // MARK: Files

    /// The shared file of `path`, opened by its first subscriber.
    func retainFile(_ path: String) -> FlatstoreFile {
        files.retain(path) { FlatstoreFile(path: path, transport: self) }
    }

    /// Drops one subscriber of `file`; the last one closes it.
    func releaseFile(_ file: FlatstoreFile) {
        files.release(file.path)?.close()
    }

    /// Paths written by at least one subscription.
    public var openPaths: [String] { files.keys.sorted() }

    /// Open descriptors right now.
    public var openDescriptors: Int { files.resources.filter(\.isOpen).count }

    /// Keeps at most `max_open_files` descriptors: closes the least recently written ones.
    func makeRoomForDescriptor(except keep: FlatstoreFile) {
        let open = files.resources.filter { $0 !== keep && $0.isOpen }
        let excess = open.count + 1 - options.maxOpenFiles
        guard excess > 0 else { return }
        let victims = open.sorted { $0.lastWrite < $1.lastWrite }.prefix(excess)
        for victim in victims { victim.closeDescriptor() }
    }

    /// Reopens `path` (MI `event_flatstore:rotate`, for logrotate's "move, then signal").
    /// Throws when no subscription writes it.
    public func rotate(path: String) throws(SocketError) {
        guard let file = files.resource(for: path) else { throw SocketError("File not found") }
        file.reopen(reason: "mi")
    }

    /// Where files are opened, written and renamed: file calls can block (a slow disk, a full
    /// NFS server), which must hold up neither the cooperative threads every other delivery runs
    /// on nor an event loop. Two threads for every flatstore file of the process: each file has its
    /// own lock, and a stalled disk ties up two threads, not a new one per write.
    static let io = BlockingPool(threads: 2)

    /// Runs `work` on the file I/O threads and waits for it without holding a task thread.
    public func onIOThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await Self.io.run(work)
    }

    /// Reopens every file (SIGHUP).
    public func reopenAll() {
        for file in files.resources { file.reopen(reason: "signal") }
    }

    /// Raises `E_FLATSTORE_ROTATION` with `timestamp`, `reason`, `filename`, `old_filename`.
    func announceRotation(reason: String, path: String, oldPath: String) {
        let params: EventParams = .named([
            EventField("timestamp", .string(String(Int(wallClock())))), EventField("reason", .string(reason)),
            EventField("filename", .string(path)), EventField("old_filename", .string(oldPath)),
        ])
        let hub = self.hub.withLock { $0?.hub }
        _ = try? hub?.raise(Self.rotationEvent, params)
    }
}

public struct FlatstoreSocket: DeliverySocket {
    public let path: String
    let transport: FlatstoreTransport

    public var scheme: String { "flatstore" }
    public var description: String { "flatstore:\(path)" }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? FlatstoreSocket)?.path == path
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        FlatstoreDeliverer(file: transport.retainFile(path), transport: transport)
    }
}

final class FlatstoreDeliverer: EventDeliverer {
    let file: FlatstoreFile
    let transport: FlatstoreTransport

    init(file: FlatstoreFile, transport: FlatstoreTransport) {
        self.file = file
        self.transport = transport
    }

    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        await deliver(batch: [event])[0]
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(transport.format)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        let lines = events.map { $0.payload(transport.format) }
        let file = self.file
        return await transport.onIOThread { file.write(lines: lines) }
    }

    func close() async {
        transport.releaseFile(file)
    }
}
