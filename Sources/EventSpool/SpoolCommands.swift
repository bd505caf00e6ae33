import EventInterface

extension Spool {
    /// The operator's commands on the spool, in the core's terms (the MI adapts them):
    /// `evi:spool` and `evi:dead_letters` (filters `[event, [socket]]` as `evi:subscribers`),
    /// `evi:replay event socket [to_socket]`, `evi:purge event socket`.
    public func commands(hub: EventHub) -> [ModuleCommand] {
        [
            ModuleCommand(names: ["evi:spool"], parameterSets: [[], ["event"], ["event", "socket"]]) {
                params throws(CommandError) in
                let now = unixTime()
                let streams = try await self.select(hub: hub, params, required: false)
                return [
                    "Spools": .array(
                        streams.map { stream in
                            let report = stream.report()
                            var fields = Self.identify(stream)
                            fields += [
                                EventField("events", .int(Int64(report.events))),
                                EventField("bytes", .int(Int64(report.bytes))),
                                EventField(
                                    "oldest_age", report.oldestStoredAt.map { .int(Int64(max(0, now - $0))) } ?? .null),
                                EventField(
                                    "retry_in", report.retryIn.map { .double(($0 * 10).rounded() / 10) } ?? .null),
                                EventField("last_error", report.lastError.map(EventValue.string) ?? .null),
                                EventField("corrupt_records", .int(Int64(report.corruptRecords))),
                                EventField("corrupt_bytes", .int(Int64(report.corruptBytes))),
                            ]
                            return .object(fields)
                        })
                ]
            },
            ModuleCommand(names: ["evi:dead_letters"], parameterSets: [[], ["event"], ["event", "socket"]]) {
                params throws(CommandError) in
                let now = unixTime()
                let streams = try await self.select(hub: hub, params, required: false)
                return [
                    "DeadLetters": .array(
                        streams.compactMap { stream in
                            let report = stream.report()
                            guard report.deadLetters > 0 else { return nil }
                            return .object(
                                Self.identify(stream) + [
                                    EventField("count", .int(Int64(report.deadLetters))),
                                    EventField(
                                        "oldest_age", report.deadOldest.map { .int(Int64(max(0, now - $0))) } ?? .null),
                                    EventField("last_error", report.lastError.map(EventValue.string) ?? .null),
                                ])
                        })
                ]
            },
            ModuleCommand(
                names: ["evi:replay"], parameterSets: [["event", "socket"], ["event", "socket", "to_socket"]]
            ) {
                params throws(CommandError) in
                let sources = try await self.select(hub: hub, params, required: true)
                var targets: [SpoolStream]?
                if let to = params.first(where: { $0.name == "to_socket" }) {
                    guard case .string(let text) = to.value else { throw .badParameter("to_socket must be a string") }
                    targets = try await self.select(
                        hub: hub, [params[0], EventField("socket", .string(text))], required: true)
                }
                var replayed = 0
                for source in sources {
                    let records = source.takeDeadLetters()
                    // Into the stream itself, or into every stream of the other subscription.
                    let into = targets ?? [source]
                    for target in into {
                        do throws(StoreError) { try target.restore(records) } catch {
                            // What was not stored again is among the target's dead letters.
                            throw CommandError(code: 500, message: "Internal error", data: "not stored: \(error)")
                        }
                    }
                    replayed += records.count
                }
                return ["replayed": .int(Int64(replayed))]
            },
            ModuleCommand(names: ["evi:purge"], parameterSets: [["event", "socket"]]) { params throws(CommandError) in
                let streams = try await self.select(hub: hub, params, required: true)
                let purged = streams.reduce(0) { $0 + $1.purge() }
                return ["purged": .int(Int64(purged))]
            },
        ]
    }

    /// `event` and `socket` (the subscription's, printed without a password), and for a stream of
    /// a PARALLEL socket the `member` it delivers to.
    static func identify(_ stream: SpoolStream) -> [EventField] {
        var fields = [
            EventField("event", .string(stream.event.name)),
            EventField("socket", .string(redactingCredentials(stream.socket))),
        ]
        if stream.name != stream.socket {
            fields.append(EventField("member", .string(redactingCredentials(stream.name))))
        }
        return fields
    }

    /// The streams the parameters name; with `required`, a durable subscription must match.
    private func select(hub: EventHub, _ params: [EventField], required: Bool) async throws(CommandError)
        -> [SpoolStream]
    {
        func text(_ name: String) throws(CommandError) -> String? {
            guard let field = params.first(where: { $0.name == name }) else { return nil }
            guard case .string(let value) = field.value else { throw .badParameter("\(name) must be a string") }
            return value
        }
        let event = try text("event")
        if let event, hub.event(named: event) == nil {
            throw CommandError(code: 404, message: "Event not registered", data: "unknown event: \(event)")
        }
        var identity: String?
        if let socket = try text("socket") {
            do { identity = try await hub.registry.parseSocket(socket).identity } catch {
                throw .badParameter(error.message)
            }
        }
        let found = streams(event: event, identity: identity)
        if required && found.isEmpty {
            throw CommandError(
                code: 404, message: "Subscription not found",
                data: "no durable subscription of \(event ?? "?") on \(redactingCredentials(try text("socket") ?? "?"))"
            )
        }
        return found
    }
}

extension CommandError {
    fileprivate static func badParameter(_ data: String) -> CommandError {
        CommandError(code: 400, message: "Bad parameter value", data: data)
    }
}
