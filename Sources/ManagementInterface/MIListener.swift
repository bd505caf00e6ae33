import NIOCore

/// A bound MI listener (HTTP or datagram): served until its channel closes.
public protocol MIListener: Sendable {
    var channel: any Channel { get }
}

extension MIListener {
    /// Waits until the listener is closed; cancelling the waiting task closes it.
    public func run() async throws {
        try await withTaskCancellationHandler {
            try await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    public func close() async {
        try? await channel.close()
    }
}
