import Synchronization

/// A one-shot flag that tasks can await with a time limit.
///
/// Awaiting another task's `value` cannot be abandoned, and shutdown must never hang on a stuck
/// subscriber; this can be.
public final class CompletionSignal: Sendable {
    private struct State {
        var done = false
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    /// Marks it done and wakes every waiter.
    public func signal() {
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.done = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// Waits until done (`true`) or until `timeout` has passed (`false`).
    public func wait(timeout: Duration) async -> Bool {
        await withCheckedContinuation { continuation in
            let ticket = state.withLock { state -> Int? in
                if state.done { return nil }
                let ticket = state.nextWaiter
                state.nextWaiter += 1
                state.waiters[ticket] = continuation
                return ticket
            }
            guard let ticket else {
                continuation.resume(returning: true)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                let expired = self.state.withLock { $0.waiters.removeValue(forKey: ticket) }
                expired?.resume(returning: false)
            }
        }
    }
}
