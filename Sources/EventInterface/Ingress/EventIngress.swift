import Logging
import Metrics
import Synchronization

/// One `ingress:` entry of the configuration: a socket evi listens on (or consumes from), and
/// how to read it. Which keys apply depends on the scheme.
public struct IngressSettings: Sendable, Hashable {
    /// `udp:HOST:PORT`, `unix:/PATH`, `tcp:HOST:PORT`, …
    public var socket: String
    /// Take the event name from this parameter (``IngressDecoder/eventParam``).
    public var eventParam: String?
    /// Publish an event nobody published on first sight (default: refuse and count it).
    public var publishUnknown = false
    /// Who may send; nil: anyone who can reach the socket (loopback by default).
    public var allowedSources: [CIDR]?
    /// The event a plain JSON object (not JSON-RPC) is raised as (Kamailio evapi).
    public var event: String?
    /// Messages a broker may hand over before evi acknowledges any (RabbitMQ's `basic.qos`
    /// prefetch count): what bounds the events a broker-backed ingress holds unsettled.
    public var prefetch = 100
    /// A `tls:` ingress: clients must present a certificate signed by one of these CAs.
    public var clientCAFile: String?
    /// How messages are delimited on a Kamailio evapi connection: netstrings (`LEN:DATA,`,
    /// Kamailio's default) or JSON values back to back.
    public var framing = Framing.netstring

    public enum Framing: String, Sendable, Hashable {
        case netstring
        case json
    }

    /// The socket's scheme and what follows its colon (`("udp", "127.0.0.1:9000")`).
    public var schemeAndRest: (scheme: String, rest: String) {
        guard let colon = socket.firstIndex(of: ":") else { return (socket, "") }
        return (String(socket[..<colon]), String(socket[socket.index(after: colon)...]))
    }

    public init(socket: String, eventParam: String? = nil, publishUnknown: Bool = false, allowedSources: [CIDR]? = nil)
    {
        self.socket = socket
        self.eventParam = eventParam
        self.publishUnknown = publishUnknown
        self.allowedSources = allowedSources
    }
}

/// A running ingress: where it listens and how many connections it holds (0 for datagrams).
public protocol EventIngress: Sendable {
    /// Where it listens, as bound (the port the system chose for port 0).
    var socket: String { get }
    var connections: Int { get }
    /// Stops taking messages and releases the socket.
    func close() async
}

/// Where every ingress hands what it received: decodes, raises exactly as a local raise would,
/// and counts (`evi_ingress_received_total{ingress}`, `evi_ingress_rejected_total{ingress,reason}`).
public final class IngressSink: Sendable {
    public let socket: String
    public let settings: IngressSettings
    private let hub: EventHub
    private let decoder: IngressDecoder
    private let receivedCount = Atomic<Int>(0)
    private let rejectedCounts = Mutex<[IngressDecoder.Rejection: Int]>([:])
    private let receivedMetric: Counter
    private let rejectedMetrics: [IngressDecoder.Rejection: Counter]
    private let logger: Logger
    /// When refusals were last logged (monotonic ns) and how many came since: a peer sending
    /// garbage flat out costs one log line per ``logInterval``, not one per message.
    private let refusalLog = Mutex<(last: UInt64?, since: Int)>((nil, 0))
    static let logInterval: UInt64 = 10_000_000_000

    public init(settings: IngressSettings, hub: EventHub) {
        // The label of its metrics and logs: a broker's password stays out of them.
        self.socket = redactingCredentials(settings.socket)
        self.settings = settings
        self.hub = hub
        self.logger = hub.logger
        decoder = IngressDecoder(eventParam: settings.eventParam, plainObjectEvent: settings.event)
        var metrics: [IngressDecoder.Rejection: Counter] = [:]
        for reason in IngressDecoder.Rejection.allCases {
            metrics[reason] = Counter(
                label: "evi_ingress_rejected_total",
                dimensions: [("ingress", socket), ("reason", reason.rawValue)])
        }
        rejectedMetrics = metrics
        receivedMetric = Counter(label: "evi_ingress_received_total", dimensions: [("ingress", socket)])
    }

    /// Decodes and raises one message; the decoded message on success (a request's `id` is in
    /// it), the reason it was refused otherwise (counted).
    ///
    /// With `onSettled`, that is called once every subscriber is done with the event (never when
    /// the message is refused): a broker-backed ingress acknowledges the message then.
    @discardableResult
    public func accept(
        _ bytes: some Collection<UInt8>, onSettled: (@Sendable () -> Void)? = nil
    ) -> Result<IngressDecoder.Message, IngressDecoder.Rejection> {
        switch decoder.decode(bytes) {
        case .failure(let reason): return .failure(reject(reason))
        case .success(let message):
            if hub.event(named: message.event) == nil {
                guard settings.publishUnknown, (try? hub.publish(message.event)) != nil else {
                    return .failure(reject(.unknownEvent))
                }
            }
            do throws(EventInterfaceError) {
                if let onSettled {
                    try hub.raise(message.event, message.params, onSettled: onSettled)
                } else {
                    try hub.raise(message.event, message.params)
                }
            } catch .notStored {
                return .failure(reject(.notStored))
            } catch {
                return .failure(reject(.unknownEvent))
            }
            receivedCount.add(1, ordering: .relaxed)
            receivedMetric.increment()
            return .success(message)
        }
    }

    /// Counts a message refused before decoding (a source not allowed, a truncated datagram).
    @discardableResult
    public func reject(_ reason: IngressDecoder.Rejection) -> IngressDecoder.Rejection {
        rejectedCounts.withLock { $0[reason, default: 0] += 1 }
        rejectedMetrics[reason]?.increment()
        let now = monotonicNanoseconds()
        let refusedSinceLog = refusalLog.withLock { log -> Int? in
            log.since += 1
            if let last = log.last, now &- last < Self.logInterval { return nil }
            defer { log = (now, 0) }
            return log.since
        }
        if let refusedSinceLog {
            logger.warning(
                "ingress refused a message",
                metadata: [
                    "ingress": "\(socket)", "reason": "\(reason.rawValue)",
                    "refused_since_last_report": "\(refusedSinceLog)",
                ])
        }
        return reason
    }

    public var received: Int { receivedCount.load(ordering: .relaxed) }

    /// Refusals by reason, the reasons that occurred only.
    public var rejected: [(reason: String, count: Int)] {
        let counts = rejectedCounts.withLock { $0 }
        return IngressDecoder.Rejection.allCases.compactMap { reason in
            counts[reason].map { (reason.rawValue, $0) }
        }
    }
}
