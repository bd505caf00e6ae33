import Synchronization

/// Runs async sections one at a time, in arrival order (an actor would interleave them at every
/// `await`). Subscription changes take it so that one socket's subscribe and unsubscribe reach
/// memory and disk in the same order.
public final class AsyncSerializer: Sendable {
    private struct State {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    public func run<T: Sendable, Failure: Error>(
        _ section: () async throws(Failure) -> T
    ) async throws(Failure) -> T {
        await acquire()
        defer { release() }
        return try await section()
    }

    private func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { state -> Bool in
                guard state.busy else {
                    state.busy = true
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.busy = false
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
