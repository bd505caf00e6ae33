import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// What the daemon tells the core commands about itself.
public struct MIServerInfo: Sendable {
    public var version: String
    /// Unix time the daemon started.
    public var startedAt: Double
    /// The running tasks `core:ps` lists (listeners, delivery tasks…).
    public var processes: @Sendable () -> [String]
    /// Told of every subscription change and publish made over MI, before the reply is sent
    /// (durable state). When it throws, the change is undone in memory and the request answered
    /// `500 "Internal error"` with `not stored: <reason>`.
    public var observer: (any SubscriptionObserver)?
    /// Refuses a parsed socket before it is subscribed over MI (the modules' rules for an MI
    /// reachable from elsewhere than loopback); `nil` allows it.
    public var admitSocket: @Sendable (_ socket: any EventSocket) -> String?
    /// This daemon's name in a cluster (`cluster.node`), shown by `evi:subscribers` as `Node`;
    /// nil alone.
    public var node: @Sendable () -> String? = { nil }

    public init(
        version: String,
        startedAt: Double = unixTime(),
        processes: @escaping @Sendable () -> [String] = { [] },
        observer: (any SubscriptionObserver)? = nil,
        admitSocket: @escaping @Sendable (any EventSocket) -> String? = { _ in nil }
    ) {
        self.version = version
        self.startedAt = startedAt
        self.processes = processes
        self.observer = observer
        self.admitSocket = admitSocket
    }
}

extension ManagementInterface {
    /// Registers the event commands of Docs/mi.md for `hub`, and `which` / `core:*`.
    public func registerEventCommands(hub: EventHub, server: MIServerInfo) {
        let changes = AsyncSerializer()
        register(
            MICommand(
                names: ["evi:subscribe", "event_subscribe"],
                required: ["event", "socket"], optional: Self.subscribeOptions,
                handler: .deferred { params throws(MIError) in
                    let event = try params.string("event")
                    let socket = try params.string("socket")
                    let expire = params.has("expire") ? try params.integer("expire") : 3600
                    guard expire >= 0 else { throw .invalidParams("Negative expire value") }
                    let attributes = try Self.attributes(params)
                    _ = try await changes.run { () throws(MIError) in
                        try await Self.change(
                            hub, server, event: event, socket: socket, expiry: .seconds(expire), attributes: attributes)
                    }
                    return "OK"
                }))
        register(
            MICommand(
                names: ["evi:unsubscribe"],
                parameterSets: [["event", "socket"]],
                handler: .deferred { params throws(MIError) in
                    let event = try params.string("event")
                    let socket = try params.string("socket")
                    let found = try await changes.run { () throws(MIError) in
                        try await Self.change(hub, server, event: event, socket: socket, expiry: .seconds(0))
                    }
                    guard found else { throw .notFound("Subscriber does not exist") }
                    return "OK"
                }))
        register(
            MICommand(
                names: ["evi:publish"],
                parameterSets: [["event"]],
                handler: .deferred { params throws(MIError) in
                    let name = try params.string("event")
                    if let refusal = server.observer?.refusal(forEvent: name) { throw .badParameter(refusal) }
                    let event: Event
                    do throws(EventInterfaceError) { event = try hub.publish(name) } catch { throw Self.miError(error) }
                    do { try await server.observer?.eventPublished(event.name) } catch {
                        throw MIError(code: 500, message: "Internal error", data: "not stored: \(error)")
                    }
                    return ["name": .string(event.name), "id": .int(Int64(event.id))]
                }))
        register(
            MICommand(
                names: ["evi:list", "events_list"],
                parameterSets: [[]],
                handler: .immediate { _ in
                    ["Events": .array(hub.events.map(Self.eventValue))]
                }))
        register(
            MICommand(
                names: ["evi:subscribers", "subscribers_list"],
                parameterSets: [[], ["event"], ["event", "socket"]],
                handler: .deferred { params throws(MIError) in
                    var result = try await Self.subscribers(hub: hub, params: params)
                    // In a cluster: whose view of the members this is.
                    if let node = server.node(), case .object(var fields) = result {
                        fields.append(EventField("Node", .string(node)))
                        result = .object(fields)
                    }
                    return result
                }))
        register(
            MICommand(
                names: ["evi:raise", "raise_event"],
                parameterSets: [["event"], ["event", "params"]],
                handler: .immediate { params throws(MIError) in
                    let name = try params.string("event")
                    let eventParams = try Self.raiseParams(params.value("params"))
                    let result: RaiseResult
                    do throws(EventInterfaceError) {
                        result = try hub.raise(name, eventParams, inline: !params.inBatch)
                    } catch .notStored(let reason) {
                        throw MIError(code: 500, message: "Internal error", data: "not stored: \(reason)")
                    } catch {
                        throw .notFound("Event not registered", "unknown event: \(name)")
                    }
                    guard result.subscribers > 0 else {
                        throw MIError(code: 480, message: "Temporarily Unavailable", data: "no subscriber for \(name)")
                    }
                    return "OK"
                }))
        registerCoreCommands(server: server)
    }

    private func registerCoreCommands(server: MIServerInfo) {
        register(
            MICommand(
                names: ["core:which", "which"],
                parameterSets: [[], ["command"]],
                handler: .immediate { [self] params throws(MIError) in
                    guard params.has("command") else { return .array(commandNames.map(EventValue.string)) }
                    let name = try params.string("command")
                    guard let command = command(named: name) else { throw .badParameter("unknown command: \(name)") }
                    return .array(command.parameterSets.map { .array($0.map(EventValue.string)) })
                }))
        register(
            MICommand(
                names: ["core:version", "version"],
                parameterSets: [[]],
                handler: .immediate { _ in ["Server": .string("evi \(server.version)")] }))
        register(
            MICommand(
                names: ["core:uptime", "uptime"],
                parameterSets: [[]],
                handler: .immediate { _ in
                    let now = unixTime()
                    return [
                        "Now": .string(Self.ctime(now)), "Up since": .string(Self.ctime(server.startedAt)),
                        "Up time": .string("\(Int(now - server.startedAt)) [sec]"),
                    ]
                }))
        register(
            MICommand(
                names: ["core:ps", "ps"],
                parameterSets: [[]],
                handler: .immediate { _ in
                    let pid = Int64(getpid())
                    let entries = server.processes().enumerated().map { index, type -> EventValue in
                        ["ID": .int(Int64(index)), "PID": .int(pid), "Type": .string(type)]
                    }
                    return ["Processes": .array(entries)]
                }))
    }

    // MARK: Helpers

    /// What `evi:subscribe` takes after `event` and `socket`, in positional order (Docs/mi.md).
    static let subscribeOptions = ["expire", "filter", "fields"]

    /// A subscription's `filter` and `fields` from the call; `""` is none (positionally, `""`
    /// leaves a text parameter out).
    static func attributes(_ params: MIParams) throws(MIError) -> SubscriptionAttributes {
        var attributes = SubscriptionAttributes()
        if params.has("filter") {
            let text = try params.string("filter")
            do throws(FilterError) {
                if !text.isEmpty { attributes.filter = try EventFilter(parsing: text) }
            } catch {
                throw .badParameter("filter: \(error.message)")
            }
        }
        var names: [String]?
        var text: String?
        switch params.value("fields") {
        case nil: break
        case .array(let values)?:
            names = values.compactMap { value -> String? in
                if case .string(let name) = value { return name }
                return nil
            }
            guard names?.count == values.count else { throw .badParameter("fields: fields must be strings") }
        default: text = try params.string("fields")
        }
        do throws(FilterError) {
            if let text { attributes.fields = try SubscriptionAttributes.fields(parsing: text) }
            if let names { attributes.fields = try SubscriptionAttributes.fields(names) }
        } catch {
            throw .badParameter("fields: \(error.message)")
        }
        return attributes
    }

    static func eventValue(_ event: Event) -> EventValue {
        ["name": .string(event.name), "id": .int(Int64(event.id))]
    }

    static func subscriberValue(_ info: SubscriberInfo) -> EventValue {
        var fields = [EventField("socket", .string(info.socket))]
        switch info.expiry {
        case .never: fields.append(EventField("expire", "never"))
        case .seconds(let seconds):
            fields.append(EventField("expire", .int(Int64(seconds))))
            fields.append(EventField("ttl", .int(Int64(info.ttl ?? 0))))
        }
        // Only when set: every other subscriber lists exactly as OpenSIPS lists it.
        if let filter = info.attributes.filter { fields.append(EventField("filter", .string(filter.text))) }
        if let names = info.attributes.fields {
            fields.append(EventField("fields", .array(names.map(EventValue.string))))
        }
        fields += info.status?.fields ?? []
        return .object(fields)
    }

    static func subscribers(hub: EventHub, params: MIParams) async throws(MIError) -> EventValue {
        guard params.has("event") else {
            let events = hub.events.compactMap { event -> EventValue? in
                guard let subscribers = try? hub.subscribers(of: event.name), !subscribers.isEmpty else { return nil }
                return .object([
                    EventField("name", .string(event.name)), EventField("id", .int(Int64(event.id))),
                    EventField("Subscribers", .array(subscribers.map(subscriberValue))),
                ])
            }
            return ["Events": .array(events)]
        }
        let name = try params.string("event")
        guard let event = hub.event(named: name) else {
            throw .notFound("Event not published", "unknown event: \(name)")
        }
        if params.has("socket") {
            let socket = try params.string("socket")
            let found: SubscriberInfo?
            do throws(EventInterfaceError) {
                found = try await hub.subscriber(of: name, matching: socket)
            } catch {
                throw miError(error)
            }
            guard let found else { throw .notFound("Subscriber does not exist") }
            return [
                "Event": .object([
                    EventField("name", .string(event.name)), EventField("id", .int(Int64(event.id))),
                    EventField("Subscriber", subscriberValue(found)),
                ])
            ]
        }
        let subscribers = (try? hub.subscribers(of: name)) ?? []
        guard !subscribers.isEmpty else { return ["Event": .object([])] }
        return [
            "Event": .object([
                EventField("name", .string(event.name)), EventField("id", .int(Int64(event.id))),
                EventField("Subscribers", .array(subscribers.map(subscriberValue))),
            ])
        ]
    }

    /// `params` of a raise: an object, an array, or a string holding a JSON object (`"{}"`: none).
    static func raiseParams(_ value: EventValue?) throws(MIError) -> EventParams {
        let badParams = MIError(code: 400, message: "Bad Params")
        switch value {
        case nil: return .none
        case .object?, .array?:
            guard let value, let params = EventParams(json: value) else { throw badParams }
            return params
        case .string(let text)?:
            guard let parsed = try? EventValue(json: text) else {
                throw MIError(code: 400, message: "Bad Params", data: "params string is not valid JSON")
            }
            guard case .object = parsed, let params = EventParams(json: parsed) else {
                throw MIError(code: 400, message: "Bad Params", data: "params string must hold a JSON object")
            }
            return params
        default:
            throw MIError(code: 400, message: "Bad Params", data: "params must be an object, an array or a JSON string")
        }
    }

    /// One subscription change over MI: in memory, then in durable state; when the durable write
    /// fails, memory is put back as it was and the request fails. Returns whether a subscription
    /// matched (for expire 0). Callers serialize changes, so memory and disk see one order.
    static func change(
        _ hub: EventHub, _ server: MIServerInfo, event: String, socket text: String, expiry: Expiry,
        attributes: SubscriptionAttributes = .none
    ) async throws(MIError) -> Bool {
        if case .seconds(let seconds) = expiry, seconds > Expiry.maximumSeconds {
            throw miError(.expireTooLarge(seconds))
        }
        guard hub.event(named: event) != nil else { throw miError(.eventNotPublished(event)) }
        // Parsed once: checked, matched, subscribed and stored as the same socket.
        let socket: any EventSocket
        do throws(SocketError) { socket = try await hub.registry.parseSocket(text) } catch {
            throw miError(.badSocket(error))
        }
        if expiry != .seconds(0),
            let refusal = server.admitSocket(socket) ?? server.observer?.refusal(forEvent: event)
                ?? server.observer?.refusal(forSocket: text, parsed: socket)
                ?? server.observer?.refusal(
                    forSubscription: event, socket: text, identity: socket.identity, attributes: attributes)
        {
            throw .badParameter(refusal)
        }
        let before = hub.subscriber(of: event, matching: socket)
        let result: SubscribeResult
        do throws(EventInterfaceError) {
            result = try await hub.subscribe(event: event, parsed: socket, expiry: expiry, attributes: attributes)
        } catch {
            throw miError(error)
        }
        if case .unsubscribed(found: false) = result { return false }
        do {
            try await server.observer?.subscriptionChanged(
                event: event, socket: text, identity: socket.identity, expiry: expiry, attributes: attributes)
        } catch {
            if let before {
                _ = try? await hub.subscribe(
                    event: event, parsed: socket, expiry: before.expiry, remaining: before.ttl.map(Double.init),
                    attributes: before.attributes)
            } else {
                _ = try? await hub.subscribe(event: event, parsed: socket, expiry: .seconds(0))
            }
            throw MIError(code: 500, message: "Internal error", data: "not stored: \(error)")
        }
        return true
    }

    static func miError(_ error: EventInterfaceError) -> MIError {
        switch error {
        case .eventNotPublished(let name): .badParameter("unknown event: \(name)")
        case .invalidEventName(let name): .badParameter("invalid event name: '\(name)'")
        case .badSocket(let socketError): .badParameter(socketError.message)
        case .negativeExpire: .invalidParams("Negative expire value")
        case .expireTooLarge, .tooManyEvents, .tooManySubscriptions, .durableUnavailable:
            .badParameter(error.description)
        case .notStored: MIError(code: 500, message: "Internal error", data: error.description)
        }
    }

    /// `Thu Nov 26 17:13:57 2026`, as OpenSIPS prints times.
    static func ctime(_ time: Double) -> String {
        var seconds = time_t(time)
        var parts = tm()
        localtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a %b %e %H:%M:%S %Y", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
