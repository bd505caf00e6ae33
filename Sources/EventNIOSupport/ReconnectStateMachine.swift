/// The life of a connection that is opened on first use and, once lost, re-opened by a timer
/// whatever the traffic — first after `initialDelay`, then doubling up to `maximumDelay`, back to
/// the start on success — while every delivery meanwhile fails at once instead of trying to
/// connect itself (so a virtual policy moves on without waiting).
///
/// Pure: events in, actions out, time as numbers of seconds; no sockets, clocks or locks. The
/// driver (``ReconnectingChannel``) holds the channel and the timer and does what the actions say.
/// tcp, xmlrpc and rabbitmq share it.
public struct ReconnectStateMachine: Sendable, Hashable {
    public enum Phase: Sendable, Hashable {
        /// Never connected, or closed cleanly by the peer after its work: open on next use.
        case idle
        case connecting
        case up
        /// Lost or never reached; a reconnection is scheduled.
        case down(reason: String)
        case closed
    }

    public static let initialDelay = 0.1
    public static let maximumDelay = 5.0

    public private(set) var phase = Phase.idle
    /// The wait before the next reconnection attempt.
    public private(set) var delay = ReconnectStateMachine.initialDelay

    public init() {}

    // MARK: Events and their actions

    public enum RequestAction: Sendable, Hashable {
        /// The connection is up: use it.
        case use
        /// Open it now (the caller waits for the outcome).
        case connect
        /// Fail this delivery at once with the reason.
        case fail(String)
    }

    /// A delivery wants the connection.
    public mutating func channelRequested() -> RequestAction {
        switch phase {
        case .up: return .use
        case .idle:
            phase = .connecting
            return .connect
        case .connecting: return .fail("not connected (connecting)")
        case .down(let reason): return .fail("not connected (reconnecting after: \(reason))")
        case .closed: return .fail("shutting down")
        }
    }

    public enum ConnectedAction: Sendable, Hashable {
        /// Keep the new connection.
        case keep
        /// Closed meanwhile: close the new connection.
        case discard
    }

    /// A connection attempt succeeded.
    public mutating func connected() -> ConnectedAction {
        guard phase == .connecting else { return .discard }
        phase = .up
        delay = Self.initialDelay
        return .keep
    }

    public enum RetryAction: Sendable, Hashable {
        /// Start the reconnection timer.
        case reconnect(after: Double)
        case none
    }

    /// A connection attempt failed.
    public mutating func connectFailed(reason: String) -> RetryAction {
        guard phase == .connecting else { return .none }
        return goDown(reason)
    }

    /// The open connection was lost (reset, timed out, closed with work outstanding).
    public mutating func connectionLost(reason: String = "connection lost") -> RetryAction {
        guard phase == .up else { return .none }
        return goDown(reason)
    }

    /// The peer closed the open connection after finishing its work (an HTTP server that does
    /// not keep connections alive): nothing is wrong, the next delivery opens a new one.
    public mutating func connectionEnded() {
        if phase == .up { phase = .idle }
    }

    public enum TimerAction: Sendable, Hashable {
        /// Try to connect now (nobody waits for the outcome).
        case connect
        case none
    }

    /// The reconnection timer fired.
    public mutating func reconnectTimerFired() -> TimerAction {
        guard case .down = phase else { return .none }
        phase = .connecting
        return .connect
    }

    /// The owner closes: no more connecting; the driver closes an open connection and cancels
    /// the timer.
    public mutating func close() {
        phase = .closed
    }

    private mutating func goDown(_ reason: String) -> RetryAction {
        phase = .down(reason: reason)
        let wait = delay
        delay = min(delay * 2, Self.maximumDelay)
        return .reconnect(after: wait)
    }
}
