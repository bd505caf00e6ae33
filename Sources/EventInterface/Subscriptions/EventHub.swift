import Logging
import Synchronization

/// The event interface (OpenSIPS' EVI): published events, their subscriptions and the raise path.
///
/// Everything is `Sendable` and safe to call from any task. `raise` never waits for delivery.
public final class EventHub: Sendable {
    public struct Configuration: Sendable {
        /// Bound of each subscriber's (and member's) queue.
        public var queueSize: Int = 10_000
        /// Networks that network transports may deliver to; nil: anywhere.
        public var allowedDestinations: [CIDR]?
        /// Bytes each subscriber's (and member's) queue may hold (``RaisedEvent/size``).
        public var queueBytes: Int = 16 << 20
        /// Published events at most (those the transports publish included).
        public var maxEvents: Int = 10_000
        /// Subscriptions at most, over all events.
        public var maxSubscriptions: Int = 100_000
        /// How subscriptions keep their events unless their event or themselves say otherwise.
        public var delivery = DeliveryMode.memory
        /// Per event: how its subscriptions keep their events (configuration `events: [{name, delivery}]`).
        public var eventDelivery: [String: DeliveryMode] = [:]
        /// When set, an event with durable subscribers gets a parameter of this name carrying an
        /// id unique to the raise, so receivers can drop the duplicates at-least-once allows
        /// (named parameters only; positional ones are left alone).
        public var idParam: String?

        public init(
            queueSize: Int = 10_000, allowedDestinations: [CIDR]? = nil, queueBytes: Int = 16 << 20,
            maxEvents: Int = 10_000, maxSubscriptions: Int = 100_000
        ) {
            self.queueSize = queueSize
            self.queueBytes = queueBytes
            self.allowedDestinations = allowedDestinations
            self.maxEvents = maxEvents
            self.maxSubscriptions = maxSubscriptions
        }
    }

    struct Subscription: Sendable {
        let socket: any EventSocket
        /// `socket.identity`, computed once.
        let identity: String
        let subscriber: any EventSubscriber
        /// The same subscriber when it stores its events (``DeliveryMode/durable``).
        let durable: (any DurableSubscriber)?
        var expiry: Expiry
        /// Clock time at which it expires; `nil` for never.
        var expiresAt: Double?
        /// Its filter and field list; a subscription with either is handed only what it selects.
        var attributes: SubscriptionAttributes

        /// How ``SelectiveSubscribers`` holds it.
        var selectiveEntry: SelectiveSubscribers.Entry {
            SelectiveSubscribers.Entry(subscriber: subscriber, durable: durable, attributes: attributes)
        }
    }

    struct EventRecord: Sendable {
        let event: Event
        let counters: EventCounters
        /// In subscription order, oldest first.
        private(set) var subscriptions: [Subscription] = []
        /// Where each identity stands in `subscriptions`: matching is a lookup, not a scan with
        /// a dynamic cast per subscription (10 ms a subscribe at 45,000, under the lock raise takes).
        private var positions: [String: Int] = [:]
        /// The live subscribers handed each raise, kept ready so raising allocates nothing.
        /// Those with attributes are in `selective` instead.
        private(set) var subscribers: [any EventSubscriber] = []
        /// The live durable subscribers, which store each raise before it returns.
        private(set) var durable: [any DurableSubscriber] = []
        /// Subscribers with a filter or a field list; nil when there are none, so that a raise
        /// of an event nobody filters pays one nil check.
        private(set) var selective: SelectiveSubscribers?
        /// No subscription expires before this (a lower bound: refreshes may have moved the
        /// earliest one later), so raise checks one number.
        private var nextExpiry = Double.infinity

        init(event: Event, counters: EventCounters) {
            self.event = event
            self.counters = counters
        }

        func index(of identity: String) -> Int? { positions[identity] }

        mutating func append(_ subscription: Subscription) {
            positions[subscription.identity] = subscriptions.count
            subscriptions.append(subscription)
            if !subscription.attributes.isEmpty {
                let entry = subscription.selectiveEntry
                if selective == nil { selective = SelectiveSubscribers([entry]) } else { selective?.add(entry) }
            } else if let durable = subscription.durable {
                self.durable.append(durable)
            } else {
                subscribers.append(subscription.subscriber)
            }
            if let expiresAt = subscription.expiresAt { nextExpiry = min(nextExpiry, expiresAt) }
        }

        mutating func refresh(at index: Int, expiry: Expiry, expiresAt: Double?, attributes: SubscriptionAttributes) {
            subscriptions[index].expiry = expiry
            subscriptions[index].expiresAt = expiresAt
            if let expiresAt { nextExpiry = min(nextExpiry, expiresAt) }
            if subscriptions[index].attributes != attributes {
                subscriptions[index].attributes = attributes
                rebuildLists()
            }
        }

        mutating func remove(at index: Int) -> Subscription {
            let removed = subscriptions.remove(at: index)
            rebuildLists()
            positions[removed.identity] = nil
            for later in index..<subscriptions.count { positions[subscriptions[later].identity] = later }
            return removed
        }

        mutating func removeAll() -> [any EventSubscriber] {
            defer {
                subscriptions = []
                subscribers = []
                durable = []
                selective = nil
                positions = [:]
                nextExpiry = .infinity
            }
            return subscriptions.map(\.subscriber)
        }

        private mutating func rebuildLists() {
            let plain = subscriptions.filter { $0.attributes.isEmpty }
            subscribers = plain.filter { $0.durable == nil }.map(\.subscriber)
            durable = plain.compactMap(\.durable)
            rebuildSelective()
        }

        private mutating func rebuildSelective() {
            selective = SelectiveSubscribers(subscriptions.filter { !$0.attributes.isEmpty }.map(\.selectiveEntry))
        }

        /// Drops what has expired at `now`; returns the dropped subscribers.
        mutating func removeExpired(now: Double) -> [any EventSubscriber] {
            guard now >= nextExpiry else { return [] }
            var expired: [any EventSubscriber] = []
            subscriptions.removeAll { subscription in
                guard let expiresAt = subscription.expiresAt, expiresAt <= now else { return false }
                expired.append(subscription.subscriber)
                return true
            }
            rebuildLists()
            positions = Dictionary(
                uniqueKeysWithValues: subscriptions.enumerated().map { ($0.element.identity, $0.offset) })
            nextExpiry = subscriptions.compactMap(\.expiresAt).min() ?? .infinity
            return expired
        }
    }

    struct State: Sendable {
        var events: [EventRecord] = []
        var idsByName: [String: Int] = [:]
        /// Subscriptions over all events, for `max_subscriptions`.
        var subscriptionCount = 0

        /// Drops what of `id`'s subscriptions has expired at `now`, keeping the count.
        mutating func removeExpired(event id: Int, now: Double) -> [any EventSubscriber] {
            let expired = events[id].removeExpired(now: now)
            subscriptionCount -= expired.count
            return expired
        }
    }

    public let registry: TransportRegistry
    public let statistics = Statistics()
    public let clock: any EventClock
    public let configuration: Configuration
    public let logger: Logger
    /// Where durable subscribers keep their events; nil: durable subscriptions are refused.
    public let durableStore: (any DurableStore)?
    private let state = Mutex(State())
    /// Makes the `id_param` values: unique to this process's start, then counted.
    private let raiseIDs = RaiseIDs()

    /// Creates an interface with `transports` registered and the events they raise published.
    public init(
        transports: [any EventTransport] = [],
        configuration: Configuration = Configuration(),
        clock: any EventClock = SystemEventClock(),
        logger: Logger = Logger(label: "evi"),
        durableStore: (any DurableStore)? = nil
    ) {
        self.durableStore = durableStore
        self.registry = TransportRegistry(
            destinationPolicy: DestinationPolicy(allowed: configuration.allowedDestinations))
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        for transport in transports { register(transport) }
    }

    /// Registers a transport and publishes the events it raises. Returns `false` when its scheme
    /// is already taken.
    @discardableResult
    public func register(_ transport: any EventTransport) -> Bool {
        guard registry.register(transport) else { return false }
        for name in transport.publishedEvents { _ = try? publish(name) }
        transport.attach(to: self)
        return true
    }

    // MARK: Events

    /// Publishes an event; publishing an existing name returns it unchanged.
    @discardableResult
    public func publish(_ name: String) throws(EventInterfaceError) -> Event {
        guard Event.isValidName(name) else { throw .invalidEventName(name) }
        let limit = configuration.maxEvents
        let published = state.withLock { state -> Event? in
            if let id = state.idsByName[name] { return state.events[id].event }
            guard state.events.count < limit else { return nil }
            let event = Event(name: name, id: state.events.count)
            state.events.append(EventRecord(event: event, counters: statistics.event(name)))
            state.idsByName[name] = event.id
            return event
        }
        guard let published else { throw .tooManyEvents(limit: limit) }
        return published
    }

    /// Every published event, in id order.
    public var events: [Event] { state.withLock { $0.events.map(\.event) } }

    public func event(named name: String) -> Event? {
        state.withLock { state in state.idsByName[name].map { state.events[$0].event } }
    }

    // MARK: Raising

    /// Hands the event to every live subscriber and returns at once.
    ///
    /// Throws only when the event was never published; no live subscriber is a result with
    /// `subscribers == 0`. With `inline`, an idle subscriber whose transport can send without
    /// blocking (udp, unix) sends on this thread (``RaisedEvent/inline``): for a producer that
    /// raises one event per request, not for a loop that raises many.
    @discardableResult
    public func raise(
        _ name: String, _ params: EventParams = .none, inline: Bool = false
    ) throws(EventInterfaceError) -> RaiseResult {
        try raise(params, named: name, inline: inline) { state in state.idsByName[name] }
    }

    /// Raises by the handle ``publish(_:)`` returned, as OpenSIPS modules raise by event id: no
    /// name lookup on the hot path. Throws only for an `Event` this interface did not publish.
    @discardableResult
    public func raise(_ event: Event, _ params: EventParams = .none) throws(EventInterfaceError) -> RaiseResult {
        try raise(params, named: event.name) { state in
            state.events.indices.contains(event.id) && state.events[event.id].event == event ? event.id : nil
        }
    }

    /// Raises like `raise(_:_:)` and calls `onSettled` once every subscriber is done
    /// with the event — delivered, or finally failed and counted — at once when nobody is
    /// subscribed. Not called when this throws. For a raiser that must know (an ingress that
    /// acknowledges its broker's message only then).
    @discardableResult
    public func raise(
        _ name: String, _ params: EventParams, onSettled: @escaping @Sendable () -> Void
    ) throws(EventInterfaceError) -> RaiseResult {
        try raise(params, named: name, settlement: RaiseSettlement(onSettled: onSettled)) { state in
            state.idsByName[name]
        }
    }

    /// The raise itself, under one lock whichever way the event was found.
    private func raise(
        _ params: EventParams, named name: String, settlement: RaiseSettlement? = nil, inline: Bool = false,
        locate: (borrowing State) -> Int?
    ) throws(EventInterfaceError) -> RaiseResult {
        let now = clock.now()
        let found = state.withLock { state -> Located? in
            guard let id = locate(state) else { return nil }
            let expired = state.removeExpired(event: id, now: now)
            let record = state.events[id]
            return Located(
                event: record.event, counters: record.counters, subscribers: record.subscribers,
                durable: record.durable, selective: record.selective, expired: expired)
        }
        guard let found else { throw .eventNotPublished(name) }
        let event = found.event
        closeInBackground(found.expired)
        // Filtered subscribers: only those whose filter holds (an index lookup for literal ones).
        let chosen = found.selective?.matching(params) ?? []
        var views = ProjectedViews()
        var raised: RaisedEvent?
        if !found.durable.isEmpty || chosen.contains(where: { $0.durable != nil }) {
            let stored = params.adding(configuration.idParam.map { ($0, .string(raiseIDs.next())) })
            let durableEvent = RaisedEvent(
                event: event, params: stored, raisedAt: now, settlement: settlement, inline: inline)
            // Stored everywhere before anyone is told: a refusal leaves what was stored (at-least-once).
            do throws(StoreError) {
                for subscriber in found.durable { try subscriber.store(durableEvent) }
                for entry in chosen {
                    guard let subscriber = entry.durable else { continue }
                    try subscriber.store(
                        views.view(of: durableEvent, fields: entry.attributes.fields, keeping: configuration.idParam))
                }
            } catch { throw .notStored(error.reason) }
            raised = durableEvent
        }
        found.counters.recordRaised()
        if !found.subscribers.isEmpty || chosen.contains(where: { $0.durable == nil }) {
            let handed =
                raised
                ?? RaisedEvent(event: event, params: params, raisedAt: now, settlement: settlement, inline: inline)
            for subscriber in found.subscribers { subscriber.dispatch(handed) }
            for entry in chosen where entry.durable == nil {
                entry.subscriber.dispatch(views.view(of: handed, fields: entry.attributes.fields, keeping: nil))
            }
        }
        settlement?.release()
        return RaiseResult(event: event, subscribers: found.subscribers.count + found.durable.count + chosen.count)
    }

    /// What a raise takes from under the lock.
    private struct Located {
        let event: Event
        let counters: EventCounters
        let subscribers: [any EventSubscriber]
        let durable: [any DurableSubscriber]
        let selective: SelectiveSubscribers?
        let expired: [any EventSubscriber]
    }

    /// The copies of one raise that carry only some fields, one per field list, so that
    /// subscribers asking for the same fields share one encoding.
    private struct ProjectedViews {
        var made: [(source: ObjectIdentifier, fields: [String], idParam: String?, event: RaisedEvent)] = []

        mutating func view(of event: RaisedEvent, fields: [String]?, keeping idParam: String?) -> RaisedEvent {
            guard let fields else { return event }
            let source = ObjectIdentifier(event)
            if let found = made.first(where: { $0.source == source && $0.fields == fields && $0.idParam == idParam }) {
                return found.event
            }
            let kept = idParam.map { fields.contains($0) ? fields : fields + [$0] } ?? fields
            let view = RaisedEvent(
                event: event.event, params: event.params.selecting(kept), raisedAt: event.raisedAt,
                settlement: event.settlement, inline: event.inline)
            made.append((source, fields, idParam, view))
            return view
        }
    }

    // MARK: Subscriptions

    /// Subscribes `socket` to `event`, refreshes a matching subscription, or with expire 0
    /// removes it. The socket is parsed and validated first; nothing changes when it is bad.
    ///
    /// `remaining`, when given, is how many seconds are left of `expiry` (a subscription restored
    /// from durable state keeps its expire and its remaining time).
    @discardableResult
    public func subscribe(
        event name: String, socket text: String, expiry: Expiry = .default, remaining: Double? = nil,
        delivery: DeliveryMode? = nil, attributes: SubscriptionAttributes = .none
    ) async throws(EventInterfaceError) -> SubscribeResult {
        if case .seconds(let seconds) = expiry, seconds < 0 { throw .negativeExpire(seconds) }
        if case .seconds(let seconds) = expiry, seconds > Expiry.maximumSeconds { throw .expireTooLarge(seconds) }
        guard self.event(named: name) != nil else { throw .eventNotPublished(name) }
        let socket: any EventSocket
        do { socket = try await registry.parseSocket(text) } catch { throw .badSocket(error) }
        return try await subscribe(
            event: name, parsed: socket, expiry: expiry, remaining: remaining, delivery: delivery,
            attributes: attributes)
    }

    /// How a new subscription of `event` keeps its events when it does not say: the event's
    /// setting, else the interface's.
    public func deliveryMode(of event: String) -> DeliveryMode {
        configuration.eventDelivery[event] ?? configuration.delivery
    }

    /// ``subscribe(event:socket:expiry:remaining:)`` with a socket already parsed by this hub's
    /// registry (the MI parses once, to check the socket, then subscribes it).
    @discardableResult
    public func subscribe(
        event name: String, parsed socket: any EventSocket, expiry: Expiry = .default, remaining: Double? = nil,
        delivery: DeliveryMode? = nil, attributes: SubscriptionAttributes = .none
    ) async throws(EventInterfaceError) -> SubscribeResult {
        if case .seconds(let seconds) = expiry, seconds < 0 { throw .negativeExpire(seconds) }
        if case .seconds(let seconds) = expiry, seconds > Expiry.maximumSeconds { throw .expireTooLarge(seconds) }
        if case .seconds(0) = expiry {
            return .unsubscribed(found: await unsubscribe(event: name, parsed: socket))
        }
        let now = clock.now()
        let expiresAt: Double? =
            if case .seconds(let seconds) = expiry { now + min(remaining ?? Double(seconds), Double(seconds)) } else {
                nil
            }
        let identity = socket.identity
        let limit = configuration.maxSubscriptions
        // A durable subscriber opens its spool (file I/O, a backlog to scan): made before the lock,
        // unless the subscription exists already and is only refreshed.
        var durable: (any DurableSubscriber)?
        if (delivery ?? deliveryMode(of: name)) == .durable {
            guard let store = durableStore else { throw .durableUnavailable }
            let existing = state.withLock { state -> Event?? in
                guard let id = state.idsByName[name] else { return nil }
                return .some(state.events[id].index(of: identity) == nil ? state.events[id].event : nil)
            }
            guard let existing else { throw .eventNotPublished(name) }
            if let event = existing {
                let context = SubscriberContext(event: event, socket: socket.description, hub: self)
                do throws(StoreError) {
                    durable = try store.makeSubscriber(
                        socket: socket, streams: socket.durableStreams(context: context), context: context)
                } catch { throw .notStored(error.reason) }
            }
        }
        let made = durable
        let outcome = state.withLock { state -> Result<(SubscribeResult, [any EventSubscriber]), EventInterfaceError> in
            guard let id = state.idsByName[name] else { return .failure(.eventNotPublished(name)) }
            var expired = state.removeExpired(event: id, now: now)
            if let index = state.events[id].index(of: identity) {
                state.events[id].refresh(at: index, expiry: expiry, expiresAt: expiresAt, attributes: attributes)
                if let made { expired.append(made) }  // subscribed meanwhile: ours is not needed
                return .success((.refreshed, expired))
            }
            guard state.subscriptionCount < limit else {
                return .failure(.tooManySubscriptions(limit: limit))
            }
            let subscriber: any EventSubscriber
            if let made {
                subscriber = made
            } else {
                let context = SubscriberContext(event: state.events[id].event, socket: socket.description, hub: self)
                subscriber = socket.makeSubscriber(context: context)
            }
            state.events[id].append(
                Subscription(
                    socket: socket, identity: identity, subscriber: subscriber, durable: made,
                    expiry: expiry, expiresAt: expiresAt, attributes: attributes))
            state.subscriptionCount += 1
            return .success((.subscribed, expired))
        }
        let result: SubscribeResult
        let expired: [any EventSubscriber]
        switch outcome {
        case .success(let success): (result, expired) = success
        case .failure(let error):
            if let made { closeInBackground([made]) }
            throw error
        }
        closeInBackground(expired)
        if result == .subscribed {
            logger.info("subscribed", metadata: ["event": "\(name)", "socket": "\(socket)"])
        }
        return result
    }

    /// Removes the subscription of `event` matching `socket`. Returns whether one was found.
    public func unsubscribe(event name: String, socket text: String) async throws(EventInterfaceError) -> Bool {
        guard self.event(named: name) != nil else { throw .eventNotPublished(name) }
        let socket: any EventSocket
        do { socket = try await registry.parseSocket(text) } catch { throw .badSocket(error) }
        return await unsubscribe(event: name, parsed: socket)
    }

    /// Removes the subscription of `event` matching an already parsed socket; whether one was.
    public func unsubscribe(event name: String, parsed socket: any EventSocket) async -> Bool {
        let now = clock.now()
        let identity = socket.identity
        let removed = state.withLock { state -> [any EventSubscriber]? in
            guard let id = state.idsByName[name] else { return nil }
            var removed = state.removeExpired(event: id, now: now)
            guard let index = state.events[id].index(of: identity) else {
                closeInBackground(removed)
                return nil
            }
            removed.append(state.events[id].remove(at: index).subscriber)
            state.subscriptionCount -= 1
            return removed
        }
        guard let removed else { return false }
        closeInBackground(removed)
        logger.info("unsubscribed", metadata: ["event": "\(name)", "socket": "\(socket)"])
        return true
    }

    /// The live subscriptions of `event`, newest first.
    public func subscribers(of name: String) throws(EventInterfaceError) -> [SubscriberInfo] {
        let now = clock.now()
        let found = state.withLock { state -> ([Subscription], [any EventSubscriber])? in
            guard let id = state.idsByName[name] else { return nil }
            let expired = state.removeExpired(event: id, now: now)
            return (state.events[id].subscriptions, expired)
        }
        guard let (subscriptions, expired) = found else { throw .eventNotPublished(name) }
        closeInBackground(expired)
        return subscriptions.reversed().map { info(of: $0, now: now) }
    }

    /// The live subscription of `event` whose socket matches `socket`, if any.
    public func subscriber(of name: String, matching text: String) async throws(EventInterfaceError) -> SubscriberInfo?
    {
        guard self.event(named: name) != nil else { throw .eventNotPublished(name) }
        let socket: any EventSocket
        do { socket = try await registry.parseSocket(text) } catch { throw .badSocket(error) }
        return subscriber(of: name, matching: socket)
    }

    /// The live subscription of `event` matching an already parsed socket, if any.
    public func subscriber(of name: String, matching socket: any EventSocket) -> SubscriberInfo? {
        let now = clock.now()
        let identity = socket.identity
        let subscription = state.withLock { state -> Subscription? in
            guard let id = state.idsByName[name], let index = state.events[id].index(of: identity) else { return nil }
            let found = state.events[id].subscriptions[index]
            return (found.expiresAt.map { $0 > now } ?? true) ? found : nil
        }
        return subscription.map { info(of: $0, now: now) }
    }

    private func info(of subscription: Subscription, now: Double) -> SubscriberInfo {
        let ttl = subscription.expiresAt.map { wholeSecondsUntil($0, now: now) }
        return SubscriberInfo(
            socket: subscription.socket.description, expiry: subscription.expiry, ttl: ttl,
            status: subscription.subscriber.status(), tally: subscription.subscriber.tally,
            attributes: subscription.attributes)
    }

    /// Removes every expired subscription now and closes its subscriber (its queue drains, then
    /// its connection or file closes). Raising and listing an event do this for that event; the
    /// daemon calls this every second so that an event nobody raises does not keep expired
    /// subscribers' descriptors open. Cheap: one comparison per event with nothing expired.
    public func sweepExpired() {
        let now = clock.now()
        let expired = state.withLock { state -> [any EventSubscriber] in
            var expired: [any EventSubscriber] = []
            for id in state.events.indices { expired += state.removeExpired(event: id, now: now) }
            return expired
        }
        closeInBackground(expired)
    }

    /// Stops every subscriber: queued events get up to `grace` to be delivered, then connections
    /// and files are closed. Subscriptions are forgotten.
    public func shutdown(grace: Duration = .seconds(5)) async {
        let subscribers = state.withLock { state -> [any EventSubscriber] in
            var all: [any EventSubscriber] = []
            for index in state.events.indices { all += state.events[index].removeAll() }
            state.subscriptionCount = 0
            return all
        }
        await withTaskGroup(of: Void.self) { group in
            for subscriber in subscribers { group.addTask { await subscriber.close(grace: grace) } }
        }
    }

    /// Expired and removed subscribers still deliver what they had queued, then close.
    private func closeInBackground(_ subscribers: [any EventSubscriber]) {
        guard !subscribers.isEmpty else { return }
        Task {
            for subscriber in subscribers { await subscriber.close(grace: .seconds(1)) }
        }
    }
}
