import EventInterface
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The driver of a ``ReconnectStateMachine`` on SwiftNIO: holds the channel and the reconnection
/// timer and does what the machine decides. tcp, xmlrpc and rabbitmq connections are one of these
/// with their own `open`.
public final class ReconnectingChannel: Sendable {
    private struct State {
        var machine = ReconnectStateMachine()
        var channel: (any Channel)?
        var timer: Scheduled<Void>?
    }

    private let name: String
    private let group: any EventLoopGroup
    private let logger: Logger
    private let open: @Sendable () async -> Result<any Channel, DeliveryFailure>
    private let state = Mutex(State())

    /// - Parameter open: opens a ready-to-use channel (handshakes included); it must call
    ///   ``lost(_:reason:)`` or ``ended(_:)`` when that channel closes.
    public init(
        name: String, group: any EventLoopGroup, logger: Logger,
        open: @escaping @Sendable () async -> Result<any Channel, DeliveryFailure>
    ) {
        self.name = name
        self.group = group
        self.logger = logger
        self.open = open
    }

    /// The open channel; opens it on first use; fails at once while reconnecting.
    public func channel() async -> Result<any Channel, DeliveryFailure> {
        let (action, channel) = state.withLock { ($0.machine.channelRequested(), $0.channel) }
        switch action {
        case .use:
            if let channel { return .success(channel) }
            return .failure(DeliveryFailure(.subscriberFailed, "connection lost"))
        case .fail(let reason): return .failure(DeliveryFailure(.subscriberFailed, reason))
        case .connect: return await connect()
        }
    }

    private func connect() async -> Result<any Channel, DeliveryFailure> {
        switch await open() {
        case .success(let channel):
            let action = state.withLock { state -> ReconnectStateMachine.ConnectedAction in
                let action = state.machine.connected()
                if action == .keep { state.channel = channel }
                return action
            }
            guard action == .keep else {
                channel.close(promise: nil)
                return .failure(DeliveryFailure(.subscriberFailed, "shutting down"))
            }
            if !channel.isActive {
                lost(channel, reason: "connection closed")
                return .failure(DeliveryFailure(.subscriberFailed, "connection closed"))
            }
            logger.debug("connected", metadata: ["to": "\(name)"])
            return .success(channel)
        case .failure(let failure):
            execute(state.withLock { $0.machine.connectFailed(reason: failure.reason) })
            return .failure(failure)
        }
    }

    /// The channel open now, if any; never opens one (a client closing down asks this).
    public var current: (any Channel)? { state.withLock { $0.channel } }

    /// `channel` was lost: deliveries fail at once and the reconnection timer starts.
    public func lost(_ channel: any Channel, reason: String = "connection lost") {
        let action = state.withLock { state -> ReconnectStateMachine.RetryAction in
            guard let current = state.channel, current === channel else { return .none }
            state.channel = nil
            return state.machine.connectionLost(reason: reason)
        }
        if action != .none { logger.debug("connection lost", metadata: ["to": "\(name)", "reason": "\(reason)"]) }
        execute(action)
    }

    /// The peer closed `channel` after finishing its work: the next delivery opens a new one.
    public func ended(_ channel: any Channel) {
        state.withLock { state in
            guard let current = state.channel, current === channel else { return }
            state.channel = nil
            state.machine.connectionEnded()
        }
    }

    private func execute(_ action: ReconnectStateMachine.RetryAction) {
        guard case .reconnect(let seconds) = action else { return }
        let timer = group.next().scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) { [weak self] in
            guard let self else { return }
            Task { await self.timerFired() }
        }
        state.withLock { $0.timer = timer }
    }

    private func timerFired() async {
        guard state.withLock({ $0.machine.reconnectTimerFired() }) == .connect else { return }
        _ = await connect()
    }

    /// Stops reconnecting and closes the channel.
    public func close() async {
        let channel = state.withLock { state -> (any Channel)? in
            state.timer?.cancel()
            state.machine.close()
            defer { state.channel = nil }
            return state.channel
        }
        try? await channel?.close()
    }
}

extension DeliveryFailure {
    /// Why a connection could not be opened, from NIO's error itself (its errno or its kind),
    /// not from its text: "connection refused", "connect timeout", or what the system said.
    public static func connectFailure(_ error: any Error) -> DeliveryFailure {
        let reason: String
        switch error {
        case let error as IOError where error.errnoCode == ECONNREFUSED: reason = "connection refused"
        case let error as IOError: reason = "cannot connect: \(String(cString: strerror(error.errnoCode)))"
        case ChannelError.connectTimeout: reason = "connect timeout"
        default: reason = "cannot connect: \(error)"
        }
        return DeliveryFailure(.subscriberFailed, reason)
    }
}
