import EventInterface
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `flatstore:/ABSOLUTE/PATH`: one line per event appended to a file (transports.md).
public final class FlatstoreTransport: EventTransport {
    public static let rotationEvent = "E_FLATSTORE_ROTATION"

    public let options: FlatstoreOptions
    /// Wall-clock seconds, injectable for period rotation tests.
    let wallClock: @Sendable () -> Double
    private let files = Mutex<[String: FlatstoreFile]>([:])
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
        guard !address.isEmpty else { throw SocketError("flatstore socket needs a file path: \(text)") }
        guard address.hasPrefix("/") else { throw SocketError("flatstore path must be absolute: \(text)") }
        guard !address.contains(where: { $0.isWhitespace || $0 == "\0" }) else {
            throw SocketError("flatstore path contains whitespace: \(text)")
        }
        let components = address.split(separator: "/", omittingEmptySubsequences: true)
        guard !components.contains(where: { $0 == ".." || $0 == "." }) else {
            throw SocketError("flatstore path must not contain '.' or '..' components: \(text)")
        }
        guard !address.hasSuffix("/") else { throw SocketError("flatstore path is a directory: \(text)") }
        let path = "/" + components.joined(separator: "/")
        if let allowed = options.allowedDirs {
            let inside = allowed.contains { directory in
                let prefix = directory.hasSuffix("/") ? directory : directory + "/"
                return path.hasPrefix(prefix)
            }
            guard inside else {
                throw SocketError(
                    "flatstore path is outside allowed_dirs (\(allowed.joined(separator: ", "))): \(text)")
            }
        }
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        var info = stat()
        guard stat(directory.isEmpty ? "/" : directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw SocketError("flatstore directory does not exist: \(directory.isEmpty ? "/" : directory) (\(text))")
        }
        if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw SocketError("flatstore path is a directory: \(text)")
        }
        return FlatstoreSocket(path: path, transport: self)
    }

    // MARK: Files

    /// The shared file of `path`, opened by its first subscriber.
    func retainFile(_ path: String) -> FlatstoreFile {
        files.withLock { table in
            if let file = table[path] {
                file.references += 1
                return file
            }
            let file = FlatstoreFile(path: path, transport: self)
            table[path] = file
            return file
        }
    }

    /// Drops one subscriber of `file`; the last one closes it.
    func releaseFile(_ file: FlatstoreFile) {
        let last = files.withLock { table -> Bool in
            file.references -= 1
            guard file.references <= 0 else { return false }
            table[file.path] = nil
            return true
        }
        if last { file.close() }
    }

    /// Paths written by at least one subscription.
    public var openPaths: [String] { files.withLock { $0.keys.sorted() } }

    /// Open descriptors right now.
    public var openDescriptors: Int { files.withLock { $0.values.filter(\.isOpen).count } }

    /// Keeps at most `max_open_files` descriptors: closes the least recently written ones.
    func makeRoomForDescriptor(except keep: FlatstoreFile) {
        let victims = files.withLock { table -> [FlatstoreFile] in
            let open = table.values.filter { $0 !== keep && $0.isOpen }
            let excess = open.count + 1 - options.maxOpenFiles
            guard excess > 0 else { return [] }
            return Array(open.sorted { $0.lastWrite < $1.lastWrite }.prefix(excess))
        }
        for victim in victims { victim.closeDescriptor() }
    }

    /// Reopens `path` (MI `event_flatstore:rotate`, for logrotate's "move, then signal").
    /// Throws when no subscription writes it.
    public func rotate(path: String) throws(SocketError) {
        guard let file = files.withLock({ $0[path] }) else { throw SocketError("File not found") }
        file.reopen(reason: "mi")
    }

    /// Reopens every file (SIGHUP).
    public func reopenAll() {
        for file in files.withLock({ Array($0.values) }) { file.reopen(reason: "signal") }
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
        file.write(event.payload(transport.format))
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(transport.format)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        file.write(lines: events.map { $0.payload(transport.format) })
    }

    func close() async {
        transport.releaseFile(file)
    }
}
