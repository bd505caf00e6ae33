import EventInterface
import EviModules
import NIOCore

extension DaemonConfiguration {
    /// `evi serve --print-config`: every key at its built-in value, with what it means. Written
    /// from the defaults themselves, so it cannot drift from what `evi serve` runs with.
    package static func annotatedDefaults(
        modules: [any EventModule.Type] = BuiltInModules.all
    ) throws(ConfigurationError) -> String {
        let d = try DaemonConfiguration(modules: modules)
        func address(_ value: ListenAddress?) -> String { value.map(\.description) ?? "off" }
        func milliseconds(_ value: Duration) -> Int64 {
            value.components.seconds * 1000 + value.components.attoseconds / 1_000_000_000_000_000
        }
        func number(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(value) }
        func optional(_ value: Int?) -> String { value.map(String.init) ?? "null" }
        func seconds(_ value: TimeAmount) -> String { number(Double(value.nanoseconds) / 1e9) }
        // Each module's own keys, from the module's defaults.
        let moduleSections = d.moduleTypes.map { module in
            "\n  \(module.name):"
                + module.defaultSection.map { "\n    " + $0 }
                .joined()
        }.joined()
        let text = """
            # evi: the built-in configuration, every key at its default (`evi serve --print-config`).
            # Save it, change what you need, and run `evi serve --config FILE`. Unknown keys, keys given
            # twice and values out of range stop start-up (exit 2) with a message naming the key.
            mi:
              http: \(address(d.miHTTP))        # MI over HTTP (POST /mi, GET /metrics); "off" disables; port 0: any free port
              datagram: \(address(d.miDatagram))    # MI over UDP, one JSON-RPC request per datagram; "off" disables
              token: null                 # required when a listener is not on loopback; also guards /metrics
              max_connections: \(d.miLimits.maxConnections)       # HTTP; at the cap the oldest unauthenticated one is closed
              header_timeout: \(seconds(d.miLimits.headerTimeout))         # s for a request's head once started, as long again for its body
              idle_timeout: \(seconds(d.miLimits.idleTimeout))           # s an HTTP connection may wait between requests
              max_stream_clients: \(d.miLimits.maxStreamClients)    # status pages, SSE and WebSocket subscribers (GET /events)
              max_stream_bytes: \(d.miLimits.maxStreamBytes >> 20)m     # waiting for all stream clients together; past it the largest backlog is dropped
              allowed_hosts: []           # Host names browsers and scrapers may use besides the bound address, localhost, [::1]
            state: \(d.state)             # directory of subscriptions.sqlite, relative to this file; "memory" keeps nothing
            queue_size: \(d.queueSize)             # events queued per subscriber and per virtual member
            queue_bytes: \(d.queueBytes >> 20)m            # and bytes (k, m, g): past either, "queue full"
            max_events: \(d.maxEvents)             # published events at most
            max_subscriptions: \(d.maxSubscriptions)     # subscriptions at most, over all events
            shutdown_grace: \(number(d.shutdownGrace))             # seconds to deliver what is queued on SIGTERM or SIGINT
            log_level: \(d.logLevel.rawValue)             # trace, debug, info, notice, warning, error, critical
            allowed_destinations: null    # e.g. [127.0.0.0/8, "::1/128"]: udp, tcp, xmlrpc, rabbitmq targets allowed
            events: []                    # published at start, e.g. [E_PIKE_BLOCKED, E_MY_EVENT]
            subscriptions: []             # made at start, e.g. - {event: E_PIKE_BLOCKED, socket: "udp:127.0.0.1:9000"}
            delivery: \(d.delivery.rawValue)              # or durable: every event spooled on disk until delivered
            spool:
              dir: null                   # default <state>/spool; required for durable delivery when state is memory
              max_bytes: \(d.spool.maxBytes >> 30)g                # per stream; past it the oldest events become dead letters
              max_total_bytes: \(d.spool.maxTotalBytes >> 30)g         # over all streams
              max_age: \(Int(d.spool.maxAge))              # seconds an event may wait for its subscriber
              retry_min: \(number(d.spool.retryMin))                # seconds before the first retry, doubling
              retry_max: \(number(d.spool.retryMax))               # to at most this
              fsync_interval_ms: \(d.spool.fsyncIntervalMs)        # background fdatasync: the power-loss window
              fsync: interval             # or always: fdatasync every write before the raise returns
              id_param: null              # e.g. evi_id: a unique id parameter for receivers to de-duplicate
            ingress: []                   # where events come in: udp:, unix:, tcp:, tls:, evapi:, rabbitmq:, kafka:
                                          # {socket, event_param, publish_unknown, allowed_sources, event, framing, prefetch, client_ca_file}
            modules:\(moduleSections)

            """
        return alignComments(text, column: 32)
    }

    /// Lines of `key: value    # comment` with every comment starting at `column`.
    private static func alignComments(_ text: String, column: Int) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard !line.hasPrefix("#"), let mark = line.range(of: " # ") else { return String(line) }
            let content = line[..<mark.lowerBound].reversed().drop { $0 == " " }.reversed()
            let padding = String(repeating: " ", count: max(1, column - content.count))
            return String(content) + padding + "# " + line[mark.upperBound...]
        }.joined(separator: "\n")
    }
}
