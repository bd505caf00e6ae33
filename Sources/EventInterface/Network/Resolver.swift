import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Every name lookup evi makes, in one place (Docs/concurrency.md).
///
/// `getaddrinfo` blocks for as long as the system's resolver takes, and cannot be cancelled.
/// Synchronous lookups (``addresses(host:port:socketType:passive:)``) are for start-up and the
/// command line; everything that runs while the daemon serves uses ``lookUp(host:port:socketType:timeout:)``,
/// which runs lookups on at most ``maximumThreads`` threads of its own with at most
/// ``maximumWaiting`` waiting: a timeout abandons the wait, never starts another thread, so a
/// resolver that hangs costs a bounded number of threads and a bounded queue.
public enum Resolver {
    /// Lookup threads at most, alive at once.
    public static let maximumThreads = 4
    /// Lookups waiting for a thread at most; past it a lookup fails at once.
    public static let maximumWaiting = 1024

    /// Every address `host` resolves to, in the resolver's order (empty when it does not).
    /// `passive`: for `bind` (a wildcard host binds every address).
    public static func addresses(
        host: String?, port: Int?, socketType: Int32, passive: Bool = false
    ) -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = socketType
        if port != nil { hints.ai_flags |= AI_NUMERICSERV }
        if passive { hints.ai_flags |= AI_PASSIVE }
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port.map { String($0) }, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var found: [ResolvedAddress] = []
        var cursor = list
        while let entry = cursor {
            if let address = entry.pointee.ai_addr {
                let bytes = UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen))
                found.append(ResolvedAddress(family: entry.pointee.ai_family, storage: Array(bytes)))
            }
            cursor = entry.pointee.ai_next
        }
        return found
    }

    /// Looks `host` up off the caller's thread and gives up waiting after `timeout` (nil: no
    /// answer in time, no address, or too many lookups already waiting).
    public static func lookUp(
        host: String, port: Int, socketType: Int32, timeout: Duration
    ) async -> [ResolvedAddress]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[ResolvedAddress]?, Never>) in
            let request = Request(continuation)
            guard pool.submit({ request.finish(addresses(host: host, port: port, socketType: socketType)) }) else {
                request.finish(nil)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                request.finish(nil)
            }
        }
    }

    /// One waiter: answered once, by the lookup or by its timeout, whichever comes first.
    private final class Request: Sendable {
        private let continuation: Mutex<CheckedContinuation<[ResolvedAddress]?, Never>?>

        init(_ continuation: CheckedContinuation<[ResolvedAddress]?, Never>) {
            self.continuation = Mutex(continuation)
        }

        func finish(_ addresses: [ResolvedAddress]?) {
            let waiting = continuation.withLock { current in
                defer { current = nil }
                return current
            }
            waiting?.resume(returning: addresses.flatMap { $0.isEmpty ? nil : $0 })
        }
    }

    private static let pool = LookupThreads()

    /// The lookup threads: started on demand up to ``maximumThreads``, each taking waiting work
    /// until there is none.
    private final class LookupThreads: Sendable {
        private struct State {
            var threads = 0
            var waiting: [@Sendable () -> Void] = []
        }
        private let state = Mutex(State())

        func submit(_ work: @escaping @Sendable () -> Void) -> Bool {
            let startThread = state.withLock { state -> Bool? in
                if state.threads < Resolver.maximumThreads {
                    state.threads += 1
                    return true
                }
                guard state.waiting.count < Resolver.maximumWaiting else { return nil }
                state.waiting.append(work)
                return false
            }
            guard let startThread else { return false }
            if startThread { detachThread { [self] in run(first: work) } }
            return true
        }

        private func run(first: @Sendable () -> Void) {
            first()
            while let next = state.withLock({ state -> (@Sendable () -> Void)? in
                if state.waiting.isEmpty {
                    state.threads -= 1
                    return nil
                }
                return state.waiting.removeFirst()
            }) {
                next()
            }
        }
    }
}
