import ArgumentParser
import EventInterface
import EviDaemon
import EviModules
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Receive events on a udp, unix or tcp socket and print each as one JSON line.",
        discussion: """
            With --subscribe the listener subscribes itself through the MI, refreshes the subscription \
            before it expires, and unsubscribes when stopped (SIGINT or SIGTERM). A tcp listener answers \
            reliable-mode requests (messages with an id) with "OK".
            """)

    @Argument(help: "udp:HOST:PORT, unix:/PATH or tcp:HOST:PORT (port 0 picks a free one).")
    var socket: String

    @Option(name: .long, help: "Subscribe this listener to EVENT.")
    var subscribe: String?

    @Option(name: .long, help: "Subscription expire in seconds, refreshed at half of it.")
    var expire = 120

    @Option(help: "With --subscribe: only events whose parameters match NAME=GLOB;NAME!=GLOB (Docs/filters.md).")
    var filter: String?

    @Option(help: "With --subscribe: only these parameters in each event, in this order: NAME,NAME,…")
    var fields: String?

    /// `filter` and `fields` as `evi:subscribe` takes them, sent with every refresh.
    var attributes: [EventField] {
        (filter.map { [EventField("filter", .string($0))] } ?? [])
            + (fields.map { [EventField("fields", .string($0))] } ?? [])
    }

    @OptionGroup var options: MIOptions

    func validate() throws {
        guard expire >= 2 else { throw ValidationError("--expire must be at least 2 seconds") }
        if subscribe == nil, filter != nil || fields != nil {
            throw ValidationError("--filter and --fields go with --subscribe")
        }
    }

    func run() async throws {
        let print: @Sendable ([UInt8]) -> Void = { message in
            var line = message.filter { $0 != UInt8(ascii: "\n") }
            line.append(UInt8(ascii: "\n"))
            line.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
        }
        let listener: any MessageReceiver
        do { listener = try BuiltInModules.receiver(socket: socket, onMessage: print) } catch {
            printError("evi: \(error.message)")
            throw ExitCode(1)
        }
        let bound = listener.socket
        printError("evi: listening on \(bound)")
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        var refresher: Task<Void, Never>?
        if let event = subscribe {
            try subscribeSelf(event: event, socket: bound, expire: expire)
            let expire = self.expire
            let options = self.options
            let attributes = self.attributes
            refresher = Task {
                await Listen.keepSubscribed(
                    options, event: event, socket: bound, expire: expire, attributes: attributes)
            }
        }
        for await _ in signals { break }
        refresher?.cancel()
        await listener.close()
        if let event = subscribe {
            do {
                let client = try MIClient(url: options.mi, token: options.resolvedToken)
                _ = try client.call(
                    "evi:unsubscribe", [EventField("event", .string(event)), EventField("socket", .string(bound))])
                printError("evi: unsubscribed \(bound) from \(event)")
            } catch {
                printError("evi: cannot unsubscribe \(bound) from \(event): \(error)")
                throw ExitCode(1)
            }
        }
    }

    /// Refreshes the subscription at half its expire. A failed refresh is printed and retried
    /// (1 s, doubling, at most a quarter of the expire) until one succeeds: a listener must not
    /// silently stop receiving.
    static func keepSubscribed(
        _ options: MIOptions, event: String, socket: String, expire: Int, attributes: [EventField]
    ) async {
        var delay = Double(expire) / 2
        var retry = 1.0
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(delay))
            if Task.isCancelled { return }
            do {
                try call(options, event: event, socket: socket, expire: expire, attributes: attributes)
                if retry > 1 { printError("evi: subscription of \(socket) to \(event) refreshed again") }
                delay = Double(expire) / 2
                retry = 1
            } catch {
                printError(
                    "evi: cannot refresh the subscription of \(socket) to \(event): \(error); retrying in \(Int(retry)) s"
                )
                delay = retry
                retry = min(retry * 2, max(1, Double(expire) / 4))
            }
        }
    }

    private func subscribeSelf(event: String, socket: String, expire: Int) throws {
        do {
            try Self.call(options, event: event, socket: socket, expire: expire, attributes: attributes)
            printError("evi: subscribed \(socket) to \(event) for \(expire) s")
        } catch {
            printError("evi: cannot subscribe: \(error)")
            throw ExitCode(1)
        }
    }

    static func call(
        _ options: MIOptions, event: String, socket: String, expire: Int, attributes: [EventField]
    ) throws {
        let client = try MIClient(url: options.mi, token: options.resolvedToken)
        _ = try client.call(
            "evi:subscribe",
            [
                EventField("event", .string(event)), EventField("socket", .string(socket)),
                EventField("expire", .int(Int64(expire))),
            ] + attributes)
    }
}
