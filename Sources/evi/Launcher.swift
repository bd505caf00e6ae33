import ArgumentParser
import EviDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// `evi bench …`: the benchmark is its own executable, `evi-bench`, built beside `evi` (it holds
/// receivers, load generators and drivers that the daemon's binary does not need). This command
/// replaces itself with it — the same arguments, environment, standard streams and exit status.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure delivery and the MI side by side with a floor (runs evi-bench; see evi bench --help).")

    @Argument(parsing: .captureForPassthrough, help: "Arguments for evi-bench.")
    var arguments: [String] = []

    func run() throws { Self.execute(arguments) }

    /// Runs `evi-bench ARGUMENTS` in place of this process; returns only if it cannot.
    static func execute(_ arguments: [String]) -> Never {
        let path = directoryOf(executablePath()) + "/evi-bench"
        guard access(path, X_OK) == 0 else {
            printError("evi: evi-bench not found beside evi (swift build builds it)")
            Glibc.exit(127)
        }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        execv(path, argv)
        printError("evi: cannot run \(path): \(String(cString: strerror(errno)))")
        Glibc.exit(126)
    }

    /// This process's executable (`/proc/self/exe`), whatever name or link it was started by.
    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
