import EventInterface
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// What the SwiftNIO-based transports (tcp, xmlrpc) share: the NIO form of a resolved address,
/// and awaiting a future with a time limit.

extension ResolvedAddress {
    /// The NIO form of this address.
    public func socketAddress() throws -> SocketAddress {
        try storage.withUnsafeBytes { raw -> SocketAddress in
            if family == AF_INET { return SocketAddress(raw.loadUnaligned(as: sockaddr_in.self), host: "") }
            if family == AF_INET6 { return SocketAddress(raw.loadUnaligned(as: sockaddr_in6.self), host: "") }
            throw SocketAddressError.unsupported
        }
    }
}

extension EventLoopFuture where Value: Sendable {
    /// The outcome, or `nil` when the future did not complete within `timeout`.
    public func result(within timeout: TimeAmount) async -> Result<Value, any Error>? {
        let result = eventLoop.makePromise(of: Result<Value, any Error>?.self)
        // The timer and the callback both run on the future's loop: the flag is loop-confined.
        let settled = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: eventLoop)
        let first: @Sendable () -> Bool = {
            defer { settled.value = true }
            return !settled.value
        }
        let timer = eventLoop.scheduleTask(in: timeout) {
            if first() { result.succeed(nil) }
        }
        whenComplete { outcome in
            timer.cancel()
            if first() { result.succeed(outcome) }
        }
        return (try? await result.futureResult.get()) ?? nil
    }

    /// The value, or `nil` when the future did not complete within `timeout` (or failed).
    public func value(within timeout: TimeAmount) async -> Value? {
        try? await result(within: timeout)?.get()
    }
}
