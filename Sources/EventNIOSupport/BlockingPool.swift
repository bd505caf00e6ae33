import NIOPosix

/// Where calls that can block (files on a slow disk or a stalled NFS server, SQLite waiting for its
/// lock and fsyncing) run: a fixed number of threads, so that a stalled disk ties up those and no
/// more — never the cooperative threads every delivery runs on, nor an event loop, nor a growing
/// number of dispatch threads. Work queues when every thread is busy. (Docs/concurrency.md.)
public final class BlockingPool: Sendable {
    private let pool: NIOThreadPool

    /// Starts `threads` threads, which live as long as the pool.
    public init(threads: Int) {
        pool = NIOThreadPool(numberOfThreads: max(1, threads))
        pool.start()
    }

    /// The threads end once the work queued has run.
    deinit { pool.shutdownGracefully { _ in } }

    /// Runs `work` on one of the pool's threads and waits for it without holding a task thread.
    /// Work submitted is always run, even by a pool shutting down: a write in progress is finished.
    public func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            pool.submit { _ in continuation.resume(returning: work()) }
        }
    }

    /// As ``run(_:)``, for work that throws.
    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            pool.submit { _ in continuation.resume(with: Result { try work() }) }
        }
    }
}
