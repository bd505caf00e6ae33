import Synchronization

/// What a test started and must stop before the next test starts: cleanups registered as things
/// start, awaited in reverse order when the body ends — returning or throwing. (A `defer { Task {
/// … } }` is not awaited: the next test could start while the last daemon was still stopping.)
public final class Teardown: Sendable {
    private let actions = Mutex<[@Sendable () async -> Void]>([])

    init() {}

    /// Runs `action` when the test's body ends, after every cleanup added later.
    public func add(_ action: @escaping @Sendable () async -> Void) {
        actions.withLock { $0.append(action) }
    }

    fileprivate func run() async {
        let pending = actions.withLock { actions in
            defer { actions = [] }
            return actions
        }
        for action in pending.reversed() { await action() }
    }
}

/// Runs `body`, then awaits every cleanup it added to its ``Teardown``.
public func withTeardown<Result>(
    isolation: isolated (any Actor)? = #isolation,
    _ body: (Teardown) async throws -> Result
) async rethrows -> Result {
    let teardown = Teardown()
    do {
        let result = try await body(teardown)
        await teardown.run()
        return result
    } catch {
        await teardown.run()
        throw error
    }
}
