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

    /// Starts taking requests on a listener bound with `paused: true`. The port is held from the
    /// bind, so a taken port fails start-up before anything else (state on disk) is touched, and
    /// no request is served before the daemon is ready.
    public func startReading() async {
        try? await channel.setOption(ChannelOptions.autoRead, value: true).get()
    }
}
