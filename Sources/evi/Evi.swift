import ArgumentParser
import EventInterface
import EventNIOSupport
import EviDaemon
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
        let given = Array(CommandLine.arguments.dropFirst())
        // Everything after `bench` is evi-bench's, untouched by this command line's parsing.
        if given.first == "bench" { Bench.execute(Array(given.dropFirst())) }
        let arguments = EviCommandLine.hoistingGlobalOptions(given)
        let names = configuration.subcommands.compactMap { $0.configuration.commandName ?? $0._commandName }
        if let message = EviCommandLine.unknownSubcommand(arguments, known: names) {
            printError("evi: \(message)")
            Glibc.exit(64)
        }
        await main(arguments)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon (built-in defaults without --config).")

    @Option(name: .long, help: "YAML configuration file.")
    var config: String?

    @Flag(name: .long, help: "Print the built-in configuration, every key with its default and meaning, and exit.")
    var printConfig = false

    func run() async throws {
        var configuration: DaemonConfiguration
        do {
            if printConfig {
                print(try DaemonConfiguration.annotatedDefaults(), terminator: "")
                return
            }
            configuration =
                try config.map { try DaemonConfiguration.load(yaml: try readFile($0)) } ?? DaemonConfiguration()
        } catch {
            printError("evi: configuration \(config ?? "(built in)"): \(error)")
            throw ExitCode(2)
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
        let daemon = await Daemon.startOrExit(configuration, registry: registry, logger: logger)
        let line = daemon.listeningLine
        try await daemon.run(logger: logger) {
            printLine(line)
            releaseStartupCode()
        }
    }
}
