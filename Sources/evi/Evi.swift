import ArgumentParser
import EventInterface
import EventNIOSupport
import Logging
import Metrics
import Prometheus

#if canImport(Glibc)
    import Glibc
#endif

@main
struct Evi: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evi",
        abstract: "Event notification server compatible with the OpenSIPS Event Interface.",
        version: eviVersion,
        subcommands: [
            Serve.self, Subscribe.self, Unsubscribe.self, Publish.self, Raise.self, Events.self, Subscribers.self,
            Ingress.self, SpoolList.self, DeadLetters.self, Replay.self, Purge.self,
            Rotate.self, Listen.self, Demo.self, Bench.self,
        ])

    /// The MI options may stand before the subcommand; a mistyped subcommand gets a suggestion.
    static func main() async {
        let arguments = EviCommandLine.hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst()))
        let names = configuration.subcommands.compactMap { $0.configuration.commandName ?? $0._commandName }
        if let message = EviCommandLine.unknownSubcommand(arguments, known: names) {
            printError("evi: \(message)")
            Glibc.exit(64)
        }
        await main(arguments)
    }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon (built-in defaults without --config).")

    @Option(name: .long, help: "YAML configuration file.")
    var config: String?

    @Flag(name: .long, help: "Print the built-in configuration, every key with its default and meaning, and exit.")
    var printConfig = false

    func run() async throws {
        if printConfig {
            print(DaemonConfiguration.annotatedDefaults, terminator: "")
            return
        }
        var configuration = DaemonConfiguration()
        if let config {
            do {
                configuration = try DaemonConfiguration.load(yaml: try readFile(config))
            } catch {
                printError("evi: configuration \(config): \(error)")
                throw ExitCode(2)
            }
        }
        // A relative state directory is the configuration file's neighbour (not wherever the
        // daemon happens to start); without --config, the working directory's.
        let base = config.map { directoryOf($0) } ?? currentDirectory()
        configuration.state = DaemonConfiguration.resolve(state: configuration.state, relativeTo: base)
        configuration.spool.dir = configuration.spool.dir.map {
            DaemonConfiguration.resolve(state: $0, relativeTo: base)
        }
        raiseDescriptorLimit()
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        WriteBacklogHandler.prepareMetrics()
        let logger = Logger(label: "evi")
        let daemon = try await Daemon.startOrExit(configuration, registry: registry, logger: logger)
        let line = daemon.listeningLine
        try await daemon.run(logger: logger) {
            printLine(line)
            releaseStartupCode()
        }
    }
}

/// Writes a line to standard output at once (unbuffered, for scripts waiting on it).
func printLine(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

/// Raises the open-file soft limit to the hard limit: every subscriber may hold a socket or a
/// file and every MI connection one, and the soft limit (often 1,024) is the first to run out.
func raiseDescriptorLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// The directory part of a path ("." for a bare file name).
func directoryOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return currentDirectory() }
    let directory = String(path[..<slash])
    if directory.isEmpty { return "/" }
    return directory.hasPrefix("/") ? directory : currentDirectory() + "/" + directory
}

func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func readFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else {
        throw ConfigurationError("cannot read: \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count <= 0 { break }
        bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
