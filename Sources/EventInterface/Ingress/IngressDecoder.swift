/// Reads one message an ingress received — a JSON-RPC 2.0 notification or request, byte for byte
/// what OpenSIPS' event_datagram and event_stream send — into the event to raise. Pure: bytes in,
/// a decision out; the ingress counts and raises.
public struct IngressDecoder: Sendable, Hashable {
    /// Largest message read (bigger ones are refused, never buffered further).
    public static let maximumMessageSize = 1 << 20

    /// Take the event name from this parameter (removed from the params) instead of `method`, for
    /// senders that use a fixed method (OpenSIPS' event_stream `event_param`).
    public var eventParam: String?

    /// Raise a JSON object without a `method` (not JSON-RPC) as this event, the object as its
    /// named parameters (Kamailio scripts relay plain objects).
    public var plainObjectEvent: String?

    public init(eventParam: String? = nil, plainObjectEvent: String? = nil) {
        self.eventParam = eventParam
        self.plainObjectEvent = plainObjectEvent
    }

    /// A message to raise: the event, its parameters, and for a request (OpenSIPS' reliable
    /// mode) the `id` to answer with, exactly as given.
    public struct Message: Sendable, Hashable {
        public var event: String
        public var params: EventParams
        public var id: EventValue?
    }

    /// Why a message was refused, as `evi_ingress_rejected_total{reason}` counts it.
    public enum Rejection: String, Error, Sendable, Hashable, CaseIterable {
        case notJSON = "not_json"
        case notAnObject = "not_an_object"
        case noEvent = "no_event"
        case badParams = "bad_params"
        case tooLarge = "too_large"
        case truncated
        /// A stream peer that stopped in the middle of a message (10 s).
        case incomplete
        /// A stream connection closed to stay within the ingress's connection cap.
        case tooManyConnections = "too_many_connections"
        case unknownEvent = "unknown_event"
        /// A durable subscriber could not store it (disk full…): the sender should try again.
        case notStored = "not_stored"
        case sourceNotAllowed = "source_not_allowed"
    }

    public func decode(_ bytes: some Collection<UInt8>) -> Result<Message, Rejection> {
        guard bytes.count <= Self.maximumMessageSize else { return .failure(.tooLarge) }
        guard let value = try? EventValue(jsonBytes: Array(bytes)) else { return .failure(.notJSON) }
        guard case .object(let fields) = value else { return .failure(.notAnObject) }
        if let plainObjectEvent, !fields.contains(where: { $0.name == "method" }) {
            return .success(Message(event: plainObjectEvent, params: fields.isEmpty ? .none : .named(fields), id: nil))
        }
        var method: String?
        var params = EventParams.none
        var id: EventValue?
        for field in fields {
            switch field.name {
            case "method":
                guard case .string(let name) = field.value else { return .failure(.noEvent) }
                method = name
            case "params":
                switch field.value {
                case .object(let named):
                    // OpenSIPS writes positional parameters as an object whose keys are all empty
                    // with some allocators (`{"":"alice","":"7"}`): read them as positional.
                    if !named.isEmpty, named.allSatisfy({ $0.name.isEmpty }) {
                        params = .positional(named.map(\.value))
                    } else {
                        params = named.isEmpty ? .none : .named(named)
                    }
                case .array(let values): params = values.isEmpty ? .none : .positional(values)
                case .null: params = .none
                default: return .failure(.badParams)
                }
            case "id": id = field.value
            default: break
            }
        }
        var event = method
        if let eventParam {
            guard case .named(let named) = params, let index = named.firstIndex(where: { $0.name == eventParam }),
                case .string(let name) = named[index].value
            else { return .failure(.noEvent) }
            event = name
            var rest = named
            rest.remove(at: index)
            params = rest.isEmpty ? .none : .named(rest)
        }
        guard let event, Event.isValidName(event) else { return .failure(.noEvent) }
        return .success(Message(event: event, params: params, id: id))
    }
}
