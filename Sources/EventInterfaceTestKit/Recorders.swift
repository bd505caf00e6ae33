import Synchronization

/// A count shared across tasks and threads (how often a callback ran).
public final class Counter: Sendable {
    private let value = Mutex(0)
    public init() {}
    public func add() { value.withLock { $0 += 1 } }
    public var count: Int { value.withLock { $0 } }
}

/// Lines recorded across tasks and threads, in the order they came.
public final class Recorder: Sendable {
    private let lines = Mutex<[String]>([])
    public init() {}
    public func add(_ line: String) { lines.withLock { $0.append(line) } }
    public var all: [String] { lines.withLock { $0 } }
}
