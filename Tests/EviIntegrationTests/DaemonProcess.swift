import EventInterfaceTestKit
import Foundation
import Testing

/// The repository root, found from this file.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The `evi` binary `swift build` made beside the test bundle; `EVI_BINARY` names another (the
/// release build, for the long runs whose figures the README gives).
let eviBinary: URL = {
    if let path = ProcessInfo.processInfo.environment["EVI_BINARY"] {
        return URL(fileURLWithPath: path, relativeTo: repositoryRoot)
    }
    let bundle = Bundle.main.bundleURL
    for candidate in [
        bundle.deletingLastPathComponent().appendingPathComponent("evi"),
        repositoryRoot.appendingPathComponent(".build/debug/evi"),
    ] where FileManager.default.isExecutableFile(atPath: candidate.path) {
        return candidate
    }
    return repositoryRoot.appendingPathComponent(".build/debug/evi")
}()

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
    static func start(
        extra: String = "", token: String? = nil, state: String? = nil, logLevel: String = "warning",
        miExtra: String = ""
    ) async throws -> Daemon {
        var config = "mi:\n  http: 127.0.0.1:0\n  datagram: 127.0.0.1:0\n" + miExtra
        if let token { config += "  token: \(token)\n" }
        config += (state == nil ? "state: memory\n" : "") + "log_level: \(logLevel)\n" + extra
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

    /// The port the daemon's `SCHEME:127.0.0.1:0` ingress got, from `evi:ingress`.
    func ingressPort(_ scheme: String) throws -> Int {
        let listing = try mi(#"{"jsonrpc":"2.0","method":"evi:ingress","id":1}"#)
        let parts = listing.components(separatedBy: "\(scheme):127.0.0.1:")
        guard parts.count > 1, let port = Int(parts[1].prefix { $0.isNumber }) else {
            throw DaemonError(message: "no \(scheme) ingress in \(listing)")
        }
        return port
    }
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
