#if canImport(Glibc)
    import Glibc
#endif

/// Runs `body` on a new detached thread of its own.
///
/// Only for a loop that blocks for the life of what owns it — one per listener or producer, never
/// one per message (a datagram listener's `recvmmsg`, librdkafka's poll, the spool's syncs) — and
/// for the resolver's bounded lookup threads: on the cooperative pool such calls would starve
/// every other task of a 2-core machine. Other blocking work goes to a bounded pool
/// (`BlockingPool`); Docs/concurrency.md has the rule.
public func detachThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { raw in
            guard let raw else { return nil }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            box.body()
            return nil
        }, context)
    if created == 0 {
        pthread_detach(thread)
    } else {
        Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
    }
}
