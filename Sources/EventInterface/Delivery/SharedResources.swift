import Synchronization

/// Resources that several subscribers share, by key, with how many use each: a flatstore file
/// per path, a RabbitMQ connection per broker and credentials. The first user makes it, the last
/// one's release hands it back to be closed. The count lives here, under the table's lock, not in
/// the resource.
public final class SharedResources<Key: Hashable & Sendable, Resource: Sendable>: Sendable {
    private struct Entry {
        let resource: Resource
        var users: Int
    }

    private let table = Mutex<[Key: Entry]>([:])

    public init() {}

    /// The resource of `key` with one more user; `make` builds it for the first one.
    public func retain(_ key: Key, make: () -> Resource) -> Resource {
        table.withLock { table in
            if let entry = table[key] {
                table[key]?.users += 1
                return entry.resource
            }
            let resource = make()
            table[key] = Entry(resource: resource, users: 1)
            return resource
        }
    }

    /// One user fewer; returns the resource when that was the last user (the caller closes it).
    public func release(_ key: Key) -> Resource? {
        table.withLock { table in
            guard let entry = table[key] else { return nil }
            guard entry.users > 1 else {
                table[key] = nil
                return entry.resource
            }
            table[key]?.users -= 1
            return nil
        }
    }

    public func resource(for key: Key) -> Resource? { table.withLock { $0[key]?.resource } }

    /// Every resource in use now.
    public var resources: [Resource] { table.withLock { $0.values.map(\.resource) } }

    public var keys: [Key] { table.withLock { Array($0.keys) } }

    public var count: Int { table.withLock { $0.count } }
}
