import EventInterfaceTestKit
import Foundation
import Testing

/// The repository root, found from this file.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The `evi` binary `swift build` made beside the test bundle.
let eviBinary: URL = {
    let bundle = Bundle.main.bundleURL
    for candidate in [
        bundle.deletingLastPathComponent().appendingPathComponent("evi"),
        repositoryRoot.appendingPathComponent(".build/debug/evi"),
    ] where FileManager.default.isExecutableFile(atPath: candidate.path) {
        return candidate
    }
    return repositoryRoot.appendingPathComponent(".build/debug/evi")
}()

/// A child process started with a clean signal mask and default signal actions.
///
/// Foundation's `Process` passes on the test runner's blocked signals, so a child started with
/// it never sees SIGTERM; `posix_spawn` with an empty mask starts it as a shell would. Output
/// goes to files, read at any time.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let outputPath: String
    let errorPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    init(executable: String, arguments: [String], directory: String, outputPath: String, errorPath: String) throws {
        self.outputPath = outputPath
        self.errorPath = errorPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        // The shell changes to `directory`, then becomes the program.
        let shellArguments = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", directory, executable] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = shellArguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, "/bin/sh", &actions, &attributes, argv, environ)
        guard result == 0 else { throw DaemonError(message: "cannot start \(executable): error \(result)") }
        pid = child
    }

    /// The exit status once it has ended (a signal death counts as 128 + signal).
    var status: Int32? {
        lock.withLock {
            if let exitStatus { return exitStatus }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            let signal = raw & 0x7F
            exitStatus = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
            return exitStatus
        }
    }

    var isRunning: Bool { status == nil }

    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return status
    }

    func signal(_ number: Int32) { kill(pid, number) }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
}

/// A real `evi` process, its output captured.
final class EviProcess: @unchecked Sendable {
    let directory = TemporaryDirectory(prefix: "evi-daemon")
    let child: ChildProcess

    /// Starts `evi ARGUMENTS…` in a fresh directory, optionally with a configuration file.
    init(_ arguments: [String], config: String? = nil) throws {
        var arguments = arguments
        if let config {
            let path = directory.file("evi.yaml")
            try config.write(toFile: path, atomically: true, encoding: .utf8)
            arguments += ["--config", path]
        }
        child = try ChildProcess(
            executable: eviBinary.path, arguments: arguments, directory: directory.path,
            outputPath: directory.file("stdout"), errorPath: directory.file("stderr"))
    }

    var standardOutput: String { child.output }
    var standardError: String { child.errors }
    var isRunning: Bool { child.isRunning }

    /// Waits for the process to end, at most `timeout`; returns its exit status or nil.
    func waitForExit(timeout: Duration = .seconds(10)) async -> Int32? {
        await child.waitForExit(timeout: timeout)
    }

    func signal(_ number: Int32) { child.signal(number) }

    func stop() async {
        if child.isRunning {
            child.signal(SIGKILL)
            _ = await child.waitForExit(timeout: .seconds(5))
        }
        directory.remove()
    }
}

/// A running daemon on ephemeral loopback ports.
final class Daemon: @unchecked Sendable {
    let process: EviProcess
    let httpPort: Int
    let udpPort: Int
    var miURL: String { "http://127.0.0.1:\(httpPort)/mi" }

    /// Starts `evi serve` with `extra` appended to a configuration that listens on free ports.
    static func start(extra: String = "", token: String? = nil) async throws -> Daemon {
        var config = "mi:\n  http: 127.0.0.1:0\n  datagram: 127.0.0.1:0\n"
        if let token { config += "  token: \(token)\n" }
        config += "state: memory\nlog_level: warning\n" + extra
        let process = try EviProcess(["serve"], config: config)
        let deadline = ContinuousClock.now + .seconds(20)
        while !process.standardOutput.contains("listening"), process.isRunning, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let line = process.standardOutput
        func port(after marker: String) -> Int? {
            guard let range = line.range(of: marker) else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        guard let http = port(after: "http://127.0.0.1:"), let udp = port(after: "MI over UDP on 127.0.0.1:") else {
            await process.stop()
            throw DaemonError(message: "daemon did not start: \(line) \(process.standardError)")
        }
        return Daemon(process: process, httpPort: http, udpPort: udp)
    }

    private init(process: EviProcess, httpPort: Int, udpPort: Int) {
        self.process = process
        self.httpPort = httpPort
        self.udpPort = udpPort
    }

    /// POSTs a JSON-RPC body to /mi and returns the reply body.
    func mi(_ body: String) throws -> String {
        let response = try RawHTTP.request(port: httpPort, method: "POST", path: "/mi", body: Array(body.utf8))
        return response.bodyText
    }

    func stop() async { await process.stop() }
}

struct DaemonError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Runs a command line tool to completion (terminated after `timeout`) and returns its exit
/// status and output.
func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(30)) async throws -> (
    status: Int32, output: String, errors: String
) {
    let directory = TemporaryDirectory(prefix: "evi-run")
    defer { directory.remove() }
    let child = try ChildProcess(
        executable: executable, arguments: arguments, directory: directory.path, outputPath: directory.file("out"),
        errorPath: directory.file("err"))
    var status = await child.waitForExit(timeout: timeout)
    if status == nil {
        child.signal(SIGTERM)
        status = await child.waitForExit(timeout: .seconds(5))
    }
    if status == nil {
        child.signal(SIGKILL)
        status = await child.waitForExit(timeout: .seconds(5))
    }
    return (status ?? -1, child.output, child.errors)
}
