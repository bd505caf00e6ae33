import EventInterface
import Synchronization
import Testing

/// The table behind shared flatstore files and RabbitMQ connections.
@Suite struct SharedResourcesTests {
    final class Resource: Sendable {
        let name: String
        init(_ name: String) { self.name = name }
    }

    @Test func theFirstUserMakesItAndTheLastReleaseHandsItBack() {
        let table = SharedResources<String, Resource>()
        let made = Atomic<Int>(0)
        func retain(_ key: String) -> Resource {
            table.retain(key) {
                made.add(1, ordering: .relaxed)
                return Resource(key)
            }
        }
        let first = retain("/var/log/a.log")
        let second = retain("/var/log/a.log")
        let other = retain("/var/log/b.log")
        #expect(first === second)
        #expect(first !== other)
        #expect(made.load(ordering: .relaxed) == 2)
        #expect(table.count == 2)
        #expect(table.release("/var/log/a.log") == nil)  // one user left
        #expect(table.release("/var/log/a.log") === first)  // the last: handed back to be closed
        #expect(table.resource(for: "/var/log/a.log") == nil)
        #expect(table.release("/var/log/a.log") == nil)  // nothing left to release
        #expect(table.keys == ["/var/log/b.log"])
        // Made again after the last release.
        #expect(retain("/var/log/a.log") !== first)
    }

    @Test func concurrentUsersKeepTheCountExact() async {
        let table = SharedResources<Int, Resource>()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for round in 0..<1_000 {
                        _ = table.retain(round % 4) { Resource("\(round % 4)") }
                        _ = table.release(round % 4)
                    }
                }
            }
        }
        #expect(table.count == 0)
    }
}
