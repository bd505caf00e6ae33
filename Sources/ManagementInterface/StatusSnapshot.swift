import EventInterface

/// What the status page shows, as one JSON object its stream sends every second: every event with
/// its raise count and subscribers (transport, expiry, counts, a virtual socket's members), open
/// browser streams, and the MI's own replies for ingresses, spools and dead letters when those
/// commands exist. Rates are worked out by the page from successive snapshots.
public enum StatusSnapshot {
    /// Subscribers listed per event at most; the rest are counted (`"more": K`), so that one
    /// snapshot stays small however many subscriptions there are.
    public static let maximumSubscribersListed = 100

    public static func render(hub: EventHub, mi: ManagementInterface, streams: BrowserStreams?, version: String)
        async -> [UInt8]
    {
        var events: [EventValue] = []
        for event in hub.events {
            let subscribers = (try? hub.subscribers(of: event.name)) ?? []
            var list: [EventValue] = []
            for info in subscribers.prefix(maximumSubscribersListed) {
                var fields: [EventField] = [
                    EventField("socket", .string(info.socket)),
                    EventField("transport", .string(String(info.socket.prefix { $0 != ":" }))),
                    EventField("expire", .string(info.ttl.map { "\($0) s" } ?? "never")),
                ]
                if let filter = info.attributes.filter { fields.append(EventField("filter", .string(filter.text))) }
                if let names = info.attributes.fields {
                    fields.append(EventField("fields", .string(names.joined(separator: ","))))
                }
                if let tally = info.tally {
                    fields.append(EventField("delivered", .int(Int64(tally.delivered.load(ordering: .relaxed)))))
                    fields.append(EventField("failed", .int(Int64(tally.failed.load(ordering: .relaxed)))))
                    fields.append(EventField("dropped", .int(Int64(tally.dropped.load(ordering: .relaxed)))))
                }
                fields += info.status?.fields ?? []
                list.append(.object(fields))
            }
            let counters = hub.statistics.event(event.name)
            var fields: [EventField] = [
                EventField("name", .string(event.name)),
                EventField("raised", .int(Int64(counters.raised.load(ordering: .relaxed)))),
                EventField("subscribers", .array(list)),
            ]
            if subscribers.count > list.count {
                fields.append(EventField("more", .int(Int64(subscribers.count - list.count))))
            }
            events.append(.object(fields))
        }
        var fields: [EventField] = [
            EventField("version", .string(version)),
            EventField("events", .array(events)),
            EventField("streams", .int(Int64(streams?.count ?? 0))),
        ]
        for (name, method) in [
            ("ingress", "evi:ingress"), ("spool", "evi:spool"), ("dead_letters", "evi:dead_letters"),
        ] {
            fields.append(EventField(name, await result(of: method, mi: mi) ?? .null))
        }
        var writer = JSONWriter()
        writer.append(.object(fields))
        return writer.bytes
    }

    /// The `result` of an MI command run in-process, or nil when it is not there or failed.
    static func result(of method: String, mi: ManagementInterface) async -> EventValue? {
        let request = Array(#"{"jsonrpc":"2.0","method":"\#(method)","id":1}"#.utf8)
        let reply: [UInt8]?
        switch mi.process(request, origin: .http) {
        case .done(let done): reply = done
        case .pending(let work): reply = await work()
        }
        guard let reply, case .object(let fields)? = try? EventValue(jsonBytes: reply) else { return nil }
        return fields.first { $0.name == "result" }?.value
    }
}
