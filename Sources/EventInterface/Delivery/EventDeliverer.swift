import Logging

/// What a deliverer may use: who it delivers for, a logger and the clock.
public struct DelivererContext: Sendable {
    public let event: Event
    public let socket: String
    public let logger: Logger
    public let clock: any EventClock

    public init(event: Event, socket: String, logger: Logger, clock: any EventClock) {
        self.event = event
        self.socket = socket
        self.logger = logger
        self.clock = clock
    }
}

/// The per-subscriber (or per-member) delivery state: a connected socket, a TCP connection…
///
/// Called from one delivery task at a time, events in raise order (an ``ImmediateDeliverer`` also
/// from a raising thread, never at the same time as its task).
public protocol EventDeliverer: Sendable {
    /// Delivers one event.
    func deliver(_ event: RaisedEvent) async -> DeliveryOutcome
    /// Delivers several events, in order; a transport that can pipeline or batch overrides it.
    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome]
    /// Releases what the deliverer holds; no delivery follows.
    func close() async
    /// Called on the raising thread as the event is queued, before the delivery task sees it.
    ///
    /// A deliverer whose task does little but I/O (udp, unix, rabbitmq) encodes its payload here:
    /// there is one delivery task per subscriber but many raising threads, so work done here is
    /// spread over the producers instead of queueing behind the subscriber's single task. The
    /// encoding is cached on the event, so subscribers of the same format share it.
    func prepare(_ event: RaisedEvent)
}

extension EventDeliverer {
    public func prepare(_ event: RaisedEvent) {}
    public func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        var outcomes: [DeliveryOutcome] = []
        outcomes.reserveCapacity(events.count)
        for event in events { outcomes.append(await deliver(event)) }
        return outcomes
    }
    public func close() async {}
}

/// A deliverer whose natural unit is a batch (pipelined HTTP requests, a Kafka produce, an SQS
/// SendMessageBatch): one event is a batch of one. It must implement `deliver(batch:)` (the
/// protocol's default goes the other way).
public protocol BatchDeliverer: EventDeliverer {}

extension BatchDeliverer {
    public func deliver(_ event: RaisedEvent) async -> DeliveryOutcome {
        await deliver(batch: [event])[0]
    }
}

/// A deliverer that sends with system calls that do not block (datagrams): its queue may call it
/// on the raising thread when the event asks for it (``RaisedEvent/inline``), nothing is in
/// flight and no observer is told of outcomes (a virtual socket's members), so no thread is
/// woken for the event.
public protocol ImmediateDeliverer: EventDeliverer {
    /// Delivers events now, in order, on the calling thread, without waiting.
    func deliverNow(batch events: [RaisedEvent]) -> [DeliveryOutcome]
}

extension ImmediateDeliverer {
    public func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] { deliverNow(batch: events) }
    public func deliver(_ event: RaisedEvent) async -> DeliveryOutcome { deliverNow(batch: [event])[0] }
}
