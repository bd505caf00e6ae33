import EventInterface
import Logging
import NIOCore
import Synchronization

/// A connection that is opened on first use and, once lost, re-opened by a timer whatever the
/// traffic: first attempt after 100 ms, then doubling, at most 5 s, reset on success. While it is
/// down, callers get a failure at once instead of a connect attempt each (transports.md, tcp and
/// rabbitmq).
public final class ReconnectingChannel: Sendable {
    private enum Phase {
        case idle
        case connecting
        case up(any Channel)
        case down(reason: String)
        case closed
    }

    private struct State {
        var phase = Phase.idle
        var backoff = ReconnectingChannel.initialBackoff
        var reconnect: Scheduled<Void>?
    }

    public static let initialBackoff = TimeAmount.milliseconds(100)
    public static let maximumBackoff = TimeAmount.seconds(5)

    private let name: String
    private let group: any EventLoopGroup
    private let logger: Logger
    private let open: @Sendable () async -> Result<any Channel, DeliveryFailure>
    private let state = Mutex(State())

    /// - Parameter open: opens a ready-to-use channel (handshakes included); it must call
    ///   ``lost(_:)`` when that channel closes.
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
        enum Step { case use(any Channel), connect, fail(String) }
        let step = state.withLock { state -> Step in
            switch state.phase {
            case .up(let channel): return .use(channel)
            case .idle:
                state.phase = .connecting
                return .connect
            case .connecting: return .fail("not connected (connecting)")
            case .down(let reason): return .fail("not connected (reconnecting after: \(reason))")
            case .closed: return .fail("shutting down")
            }
        }
        switch step {
        case .use(let channel): return .success(channel)
        case .fail(let reason): return .failure(DeliveryFailure(.subscriberFailed, reason))
        case .connect: return await connect()
        }
    }

    private func connect() async -> Result<any Channel, DeliveryFailure> {
        switch await open() {
        case .success(let channel):
            let kept = state.withLock { state -> Bool in
                guard case .connecting = state.phase else { return false }
                state.phase = .up(channel)
                state.backoff = Self.initialBackoff
                return true
            }
            guard kept else {
                channel.close(promise: nil)
                return .failure(DeliveryFailure(.subscriberFailed, "shutting down"))
            }
            if !channel.isActive {
                lost(channel)
                return .failure(DeliveryFailure(.subscriberFailed, "connection closed"))
            }
            logger.debug("connected", metadata: ["to": "\(name)"])
            return .success(channel)
        case .failure(let failure):
            let schedule = state.withLock { state -> Bool in
                guard case .connecting = state.phase else { return false }
                state.phase = .down(reason: failure.reason)
                return true
            }
            if schedule { scheduleReconnect() }
            return .failure(failure)
        }
    }

    /// The channel closed: the timer starts.
    public func lost(_ channel: any Channel) {
        let wasCurrent = state.withLock { state -> Bool in
            guard case .up(let current) = state.phase, current === channel else { return false }
            state.phase = .down(reason: "connection lost")
            return true
        }
        if wasCurrent {
            logger.debug("connection lost", metadata: ["to": "\(name)"])
            scheduleReconnect()
        }
    }

    private func scheduleReconnect() {
        state.withLock { state in
            guard case .down = state.phase else { return }
            let delay = state.backoff
            state.backoff = min(delay * 2, Self.maximumBackoff)
            state.reconnect = group.next().scheduleTask(in: delay) { [weak self] in
                guard let self else { return }
                Task { await self.attemptReconnect() }
            }
        }
    }

    private func attemptReconnect() async {
        let proceed = state.withLock { state -> Bool in
            guard case .down = state.phase else { return false }
            state.phase = .connecting
            return true
        }
        guard proceed else { return }
        _ = await connect()
    }

    /// Stops reconnecting and closes the channel.
    public func close() async {
        let channel = state.withLock { state -> (any Channel)? in
            state.reconnect?.cancel()
            defer { state.phase = .closed }
            if case .up(let channel) = state.phase { return channel }
            return nil
        }
        try? await channel?.close()
    }
}
