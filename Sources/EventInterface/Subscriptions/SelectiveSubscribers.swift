/// The subscriptions of one event that have a filter or a field list, ready for a raise to pick
/// from: those whose filter has a literal condition (`callid=abc`) are indexed by that
/// condition's name and value, so a raise costs one lookup per indexed name however many such
/// subscribers there are; the rest are tried one by one. A value of copy-on-write collections:
/// a raise takes it from under the lock by reference, a subscribe adds to it in place.
struct SelectiveSubscribers: Sendable {
    struct Entry: Sendable {
        let subscriber: any EventSubscriber
        let durable: (any DurableSubscriber)?
        let attributes: SubscriptionAttributes
    }

    /// Parameter name → literal value → the entries indexed there.
    private(set) var indexed: [String: [String: [Entry]]] = [:]
    private(set) var scanned: [Entry] = []

    init?(_ entries: [Entry]) {
        guard !entries.isEmpty else { return nil }
        for entry in entries { add(entry) }
    }

    mutating func add(_ entry: Entry) {
        if let key = entry.attributes.filter?.indexKey {
            indexed[key.name, default: [:]][key.value, default: []].append(entry)
        } else {
            scanned.append(entry)
        }
    }

    /// Every entry whose filter holds for `params`, in no particular order.
    func matching(_ params: EventParams) -> [Entry] {
        var matched: [Entry] = []
        for (name, table) in indexed {
            guard let value = params.value(forKey: name), let text = Self.indexText(value),
                let candidates = table[text]
            else { continue }
            for entry in candidates where entry.attributes.filter?.matches(params) ?? true { matched.append(entry) }
        }
        for entry in scanned where entry.attributes.filter?.matches(params) ?? true { matched.append(entry) }
        return matched
    }

    /// What a literal condition compares with: nested values match only `*`, never a literal.
    private static func indexText(_ value: EventValue) -> String? {
        switch value {
        case .array, .object: nil
        default: value.keyText
        }
    }
}
