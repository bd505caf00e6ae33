import ArgumentParser
import EventInterface
import EviDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// Options every MI client command shares.
struct MIOptions: ParsableArguments {
    @Option(name: .long, help: "MI endpoint: http://HOST:PORT/mi or udp://HOST:PORT.")
    var mi = "http://127.0.0.1:8888/mi"

    @Option(name: .long, help: "MI token (default: $EVI_MI_TOKEN).")
    var token: String?

    /// `--token`, else `$EVI_MI_TOKEN`.
    var resolvedToken: String? { token ?? ProcessEnvironment.value("EVI_MI_TOKEN") }

    /// Calls the command, prints its JSON result; on an error reply prints it (and what `hint`
    /// makes of it, on a line of its own) and exits 1.
    func call(_ method: String, _ params: [EventField], hint: (String) -> String? = { _ in nil }) throws {
        do {
            let client = try MIClient(url: mi, token: resolvedToken)
            print(try client.call(method, params).jsonText)
        } catch {
            printError("evi: \(error)")
            if let hint = hint("\(error)") { printError("evi: \(hint)") }
            throw ExitCode(1)
        }
    }
}

struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Subscribe a socket to an event (evi:subscribe).")
    @OptionGroup var options: MIOptions
    @Argument var event: String
    @Argument var socket: String
    @Argument(help: "Seconds (default 3600; 0 unsubscribes).") var expire: Int?
    @Option(help: "Only events whose parameters match: NAME=GLOB or NAME!=GLOB, joined by ';' (Docs/filters.md).")
    var filter: String?
    @Option(help: "Only these parameters in the payload, in this order: NAME,NAME,…")
    var fields: String?

    func run() throws {
        var params = [EventField("event", .string(event)), EventField("socket", .string(socket))]
        if let expire { params.append(EventField("expire", .int(Int64(expire)))) }
        if let filter { params.append(EventField("filter", .string(filter))) }
        if let fields { params.append(EventField("fields", .string(fields))) }
        try options.call("evi:subscribe", params)
    }
}

struct Unsubscribe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a subscription (evi:unsubscribe).")
    @OptionGroup var options: MIOptions
    @Argument var event: String
    @Argument var socket: String

    func run() throws {
        try options.call(
            "evi:unsubscribe", [EventField("event", .string(event)), EventField("socket", .string(socket))])
    }
}

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish an event at run time (evi:publish).")
    @OptionGroup var options: MIOptions
    @Argument var event: String

    func run() throws {
        try options.call("evi:publish", [EventField("event", .string(event))])
    }
}

struct Raise: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Raise an event (evi:raise).",
        discussion: """
            Parameters are one JSON object or array ('{"ip":"10.0.0.1"}'), or NAME=VALUE pairs where \
            VALUE is read as JSON when it is JSON (42, true, null, [1,2]) and as a string otherwise.
            """)
    @OptionGroup var options: MIOptions
    @Argument var event: String
    @Argument(help: "JSON, or NAME=VALUE …") var params: [String] = []

    /// Parameters checked here rather than in `run`, so a mistake shows `evi raise`'s usage.
    func validate() throws { _ = try Self.params(params) }

    func run() throws {
        var fields = [EventField("event", .string(event))]
        if let value = try Self.params(params) { fields.append(EventField("params", value)) }
        try options.call(
            "evi:raise", fields,
            hint: { error in
                error.contains("unknown event: ")
                    ? "publish it first (evi publish \(event)) or list it under events: in the configuration" : nil
            })
    }

    static func params(_ arguments: [String]) throws -> EventValue? {
        if arguments.isEmpty { return nil }
        if arguments.count == 1, let value = try? EventValue(json: arguments[0]) {
            switch value {
            case .object, .array: return value
            default: break
            }
        }
        var fields: [EventField] = []
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
                throw ValidationError("expected one JSON object or array, or NAME=VALUE pairs; got '\(argument)'")
            }
            let name = String(argument[..<equals])
            let text = String(argument[argument.index(after: equals)...])
            fields.append(EventField(name, (try? EventValue(json: text)) ?? .string(text)))
        }
        return .object(fields)
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List published events (evi:list).")
    @OptionGroup var options: MIOptions

    func run() throws { try options.call("evi:list", []) }
}

struct Ingress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List where evi takes events in, with what each received and refused (evi:ingress).")
    @OptionGroup var options: MIOptions

    func run() throws { try options.call("evi:ingress", []) }
}

struct Subscribers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List subscriptions (evi:subscribers).")
    @OptionGroup var options: MIOptions
    @Argument var event: String?
    @Argument var socket: String?

    func run() throws { try options.call("evi:subscribers", filters(event, socket)) }
}

/// `evi spool` and `evi dead-letters`: durable delivery's spools, filtered as `evi subscribers`.
struct SpoolList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool", abstract: "List durable delivery's spools: events waiting, bytes, retries (evi:spool).")
    @OptionGroup var options: MIOptions
    @Argument var event: String?
    @Argument var socket: String?

    func run() throws { try options.call("evi:spool", filters(event, socket)) }
}

struct DeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List the events moved out of a spool past its bounds (evi:dead_letters).")
    @OptionGroup var options: MIOptions
    @Argument var event: String?
    @Argument var socket: String?

    func run() throws { try options.call("evi:dead_letters", filters(event, socket)) }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver a subscription's dead letters again, or to another subscription (evi:replay).")
    @OptionGroup var options: MIOptions
    @Argument var event: String
    @Argument var socket: String
    @Argument(help: "Another durable subscription of the event to deliver them to.") var toSocket: String?

    func run() throws {
        var params = filters(event, socket)
        if let toSocket { params.append(EventField("to_socket", .string(toSocket))) }
        try options.call("evi:replay", params)
    }
}

struct Purge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drop what a durable subscription has spooled and its dead letters (evi:purge).")
    @OptionGroup var options: MIOptions
    @Argument var event: String
    @Argument var socket: String

    func run() throws { try options.call("evi:purge", filters(event, socket)) }
}

/// `[event, [socket]]` as the listing commands take them.
private func filters(_ event: String?, _ socket: String?) -> [EventField] {
    var params: [EventField] = []
    if let event { params.append(EventField("event", .string(event))) }
    if let socket { params.append(EventField("socket", .string(socket))) }
    return params
}

struct Rotate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reopen a flatstore file after logrotate moved it (event_flatstore:rotate).")
    @OptionGroup var options: MIOptions
    @Argument var path: String

    func run() throws {
        try options.call("event_flatstore:rotate", [EventField("path_to_file", .string(path))])
    }
}
