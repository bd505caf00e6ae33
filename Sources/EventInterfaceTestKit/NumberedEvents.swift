import EventInterface

/// The number parameter `n` of each JSON-RPC notification (or request) in `messages`, in order:
/// tests raise `{"n":1}`, `{"n":2}`… and check what arrived, in what order, how many times.
/// Messages without one are left out.
public func numbered(_ messages: [String], parameter: String = "n") -> [Int] {
    messages.compactMap { message in
        guard case .object(let fields)? = try? EventValue(json: message),
            case .object(let params)? = fields.first(where: { $0.name == "params" })?.value,
            case .int(let number)? = params.first(where: { $0.name == parameter })?.value
        else { return nil }
        return Int(number)
    }
}
