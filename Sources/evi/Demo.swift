import ArgumentParser
import EventInterface
import EviDaemon
import EviModules
import Logging
import Prometheus
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A guided tour: the three virtual policies, a receiver killed midway, and its recovery.")

    @Option(name: .long, help: "failover_timeout for the tour, in seconds.")
    var failoverTimeout = 3

    func run() async throws {
        let configuration = try DaemonConfiguration.load(
            yaml: """
                mi: { http: "127.0.0.1:0", datagram: "127.0.0.1:0" }
                state: memory
                events: [E_DEMO_PARALLEL, E_DEMO_ROUND_ROBIN, E_DEMO_FAILOVER]
                modules: { event_virtual: { failover_timeout: \(failoverTimeout) } }
                """)
        var logger = Logger(label: "evi-demo")
        logger.logLevel = .critical
        let daemon = await Daemon.startOrExit(
            configuration, registry: PrometheusCollectorRegistry(), logger: logger)
        let hub = daemon.hub
        let directory = "/tmp/evi-demo-\(getpid())"
        _ = mkdir(directory, 0o700)
        let a = try DemoReceiver(name: "A", socket: "udp:127.0.0.1:0")
        var b = try DemoReceiver(name: "B", socket: "unix:\(directory)/b.sock")
        let c = try DemoReceiver(name: "C", socket: "udp:127.0.0.1:0")
        let watcher = try DemoReceiver(name: "notices", socket: "udp:127.0.0.1:0")
        for event in BuiltInModules.memberNotices {
            try await hub.subscribe(event: event, socket: watcher.socket)
        }

        printLine("evi demo — an in-process daemon (\(daemon.listeners))")
        printLine("receivers: A = \(a.socket), B = \(b.socket), C = \(c.socket); failover_timeout \(failoverTimeout) s")

        // PARALLEL: everyone gets everything; B dies after event 3 and delays nobody.
        let parallel = "virtual:PARALLEL \(a.socket) \(b.socket) \(c.socket)"
        try await hub.subscribe(event: "E_DEMO_PARALLEL", socket: parallel)
        try await raise(hub, "E_DEMO_PARALLEL", 1...3)
        await b.close()
        try await raise(hub, "E_DEMO_PARALLEL", 4...6)
        report(
            "PARALLEL — every member gets every event; B is killed after event 3", socket: parallel,
            event: "E_DEMO_PARALLEL", numbers: 1...6, receivers: [a, b, c], hub: hub,
            notes: [4: "B killed"])

        // ROUND-ROBIN with B dead: A and C take turns, nothing is lost.
        let roundRobin = "virtual:ROUND-ROBIN \(a.socket) \(b.socket) \(c.socket)"
        try await hub.subscribe(event: "E_DEMO_ROUND_ROBIN", socket: roundRobin)
        try await raise(hub, "E_DEMO_ROUND_ROBIN", 1...7)
        report(
            "ROUND-ROBIN — turns 1, 2, 3, …; dead B is skipped and its turn re-routed, nothing lost",
            socket: roundRobin, event: "E_DEMO_ROUND_ROBIN", numbers: 1...7, receivers: [a, b, c], hub: hub, notes: [:])

        // FAILOVER B then A: B is dead, A takes over; B comes back and gets events again after
        // failover_timeout.
        let failover = "virtual:FAILOVER \(b.socket) \(a.socket)"
        try await hub.subscribe(event: "E_DEMO_FAILOVER", socket: failover)
        try await raise(hub, "E_DEMO_FAILOVER", 1...2)
        b = try DemoReceiver(name: "B", socket: "unix:\(directory)/b.sock")
        try await raise(hub, "E_DEMO_FAILOVER", 3...3)
        printLine("\n(B restarted after event 2; waiting failover_timeout = \(failoverTimeout) s …)")
        try await Task.sleep(for: .seconds(failoverTimeout) + .milliseconds(200))
        try await raise(hub, "E_DEMO_FAILOVER", 4...5)
        report(
            "FAILOVER — B first, A when B fails; B restarted after event 2, tried again after failover_timeout",
            socket: failover, event: "E_DEMO_FAILOVER", numbers: 1...5, receivers: [b, a], hub: hub,
            notes: [3: "B back, still marked", 4: "mark ran out"])

        printLine("\nE_VIRTUAL_MEMBER_DOWN / _UP events received by a subscriber (\(watcher.socket)):")
        for message in watcher.messages {
            guard case .object(let fields) = message,
                case .string(let method)? = fields.first(where: { $0.name == "method" })?.value,
                case .object(let params)? = fields.first(where: { $0.name == "params" })?.value
            else { continue }
            let member = params.first { $0.name == "member" }?.value
            let event = params.first { $0.name == "event" }?.value
            let memberName = [a, b, c].first { .string($0.socket) == member }?.name ?? "?"
            printLine("  \(method)  member \(memberName)  of the \(event.map(Self.text) ?? "?") subscription")
        }
        await hub.shutdown(grace: .seconds(1))
        for receiver in [a, b, c, watcher] { await receiver.close() }
        _ = unlink("\(directory)/b.sock")
        _ = rmdir(directory)
        await daemon.http?.close()
        await daemon.datagram?.close()
    }

    static func text(_ value: EventValue) -> String {
        if case .string(let text) = value { return text }
        return value.jsonText
    }

    private func raise(_ hub: EventHub, _ event: String, _ numbers: ClosedRange<Int>) async throws {
        for number in numbers {
            try hub.raise(event, ["n": .int(Int64(number))])
            try await Task.sleep(for: .milliseconds(40))
        }
        try await Task.sleep(for: .milliseconds(150))
    }

    private func report(
        _ title: String, socket: String, event: String, numbers: ClosedRange<Int>, receivers: [DemoReceiver],
        hub: EventHub, notes: [Int: String]
    ) {
        printLine("\n\(title)\n  \(socket)")
        printLine("  event  " + receivers.map { $0.name.padding(4) }.joined())
        for number in numbers {
            let marks = receivers.map { ($0.got(event).contains(number) ? "got" : " - ").padding(4) }.joined()
            printLine("  \(String(number).padding(7))" + marks + (notes[number].map { "  ← \($0)" } ?? ""))
        }
        let members = (try? hub.subscribers(of: event).first?.members) ?? nil
        let states = (members ?? []).map { member in
            let name = receivers.first { $0.socket == member.socket }?.name ?? member.socket
            let retry = member.retryIn.map { ", retry in \($0) s" } ?? ""
            return "\(name) \(member.state.rawValue)\(retry) (\(member.delivered) delivered, \(member.failed) failed)"
        }
        printLine("  members: " + states.joined(separator: "; "))
    }
}

/// A demo receiver that remembers the `n` of each event it got.
final class DemoReceiver: Sendable {
    let name: String
    private let listener: any MessageReceiver
    private let inbox: Inbox

    final class Inbox: Sendable {
        let messages = Mutex<[EventValue]>([])
    }

    var socket: String { listener.socket }
    var messages: [EventValue] { inbox.messages.withLock { $0 } }

    init(name: String, socket: String) throws {
        self.name = name
        let inbox = Inbox()
        self.inbox = inbox
        listener = try BuiltInModules.receiver(socket: socket) { datagram in
            if let value = try? EventValue(jsonBytes: datagram) { inbox.messages.withLock { $0.append(value) } }
        }
    }

    /// The `n` parameters of the `event` notifications received.
    func got(_ event: String) -> [Int] {
        messages.compactMap { message in
            guard case .object(let fields) = message,
                fields.first(where: { $0.name == "method" })?.value == .string(event),
                case .object(let params)? = fields.first(where: { $0.name == "params" })?.value,
                case .int(let number)? = params.first(where: { $0.name == "n" })?.value
            else { return nil }
            return Int(number)
        }
    }

    func close() async { await listener.close() }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
