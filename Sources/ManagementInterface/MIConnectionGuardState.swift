/// Where one MI HTTP connection's request stands and when the connection must be closed, without
/// I/O: what happened in (bytes, a head, a whole request, a reply, a stream, the timer), what to
/// do with the one timer out, time as nanoseconds. ``MIConnectionGuard`` drives it on a channel.
///
/// Idle past `idle_timeout`, or a request started and not whole in time (`header_timeout` for the
/// head, as long again for the body), closes the connection; while a reply is made there is no
/// deadline, and a stream has none at all. A request moves the deadline twice; rather than cancel
/// and schedule a timer each time (measured: 7 % of an MI request), the timer fires at most the
/// shorter timeout ahead and, on firing, closes if the deadline has passed or goes again toward it.
struct MIConnectionGuardState {
    enum Phase: Equatable {
        case idle
        case head
        case body
        /// The request is complete: its reply is being made (no deadline).
        case answering
        /// A status page, SSE or WebSocket subscriber: never closed for time.
        case stream
    }

    /// Why a deadline closes the connection (logged).
    enum Reason: String, Equatable {
        case idle
        case head = "request head not received in time"
        case body = "request body not received in time"
    }

    enum TimerAction: Equatable {
        case none
        /// Schedule the connection's timer at this instant (there is none now).
        case schedule(at: UInt64)
        /// Cancel the timer: no deadline any more.
        case cancel
    }

    enum FiredAction: Equatable {
        /// The deadline passed: close the connection.
        case close(Reason)
        /// Not yet: schedule the timer again at this instant.
        case schedule(at: UInt64)
        case none
    }

    let headerTimeout: UInt64
    let idleTimeout: UInt64
    private(set) var phase = Phase.idle
    private(set) var deadline: (at: UInt64, reason: Reason)?
    private var timerScheduled = false
    /// Told to the connection table once, not at every request (its lock showed in a profile).
    private(set) var isAuthenticated = false

    init(headerTimeoutNanoseconds: UInt64, idleTimeoutNanoseconds: UInt64) {
        headerTimeout = headerTimeoutNanoseconds
        idleTimeout = idleTimeoutNanoseconds
    }

    /// The connection was admitted: it may stay idle for `idle_timeout`.
    mutating func opened(now: UInt64) -> TimerAction { arm(now: now, after: idleTimeout, .idle) }

    /// Bytes arrived: an idle connection has started a request.
    mutating func bytesArrived(now: UInt64) -> TimerAction {
        guard phase == .idle else { return .none }
        phase = .head
        return arm(now: now, after: headerTimeout, .head)
    }

    /// The head arrived: the body has as long again.
    mutating func headReceived(now: UInt64) -> TimerAction {
        guard phase != .stream else { return .none }
        phase = .body
        return arm(now: now, after: headerTimeout, .body)
    }

    /// The request is whole: no deadline while its reply is made.
    mutating func requestReceived() {
        guard phase != .stream else { return }
        phase = .answering
        deadline = nil
    }

    /// The reply went out on a connection that stays open.
    mutating func replied(now: UInt64) -> TimerAction {
        guard phase != .stream else { return .none }
        phase = .idle
        return arm(now: now, after: idleTimeout, .idle)
    }

    /// A request passed the token check (or needed none): true the first time only.
    mutating func authenticated() -> Bool {
        defer { isAuthenticated = true }
        return !isAuthenticated
    }

    /// The connection became a stream: no timer from now on.
    mutating func becameStream() -> TimerAction {
        phase = .stream
        deadline = nil
        defer { timerScheduled = false }
        return timerScheduled ? .cancel : .none
    }

    /// The timer fired at `now`.
    mutating func timerFired(now: UInt64) -> FiredAction {
        timerScheduled = false
        guard let deadline else { return .none }
        guard now >= deadline.at else { return .schedule(at: scheduleTimer(now: now, deadline: deadline.at)) }
        return .close(deadline.reason)
    }

    /// The connection closed: its timer goes with it.
    mutating func closed() -> TimerAction {
        deadline = nil
        defer { timerScheduled = false }
        return timerScheduled ? .cancel : .none
    }

    private mutating func arm(now: UInt64, after delay: UInt64, _ reason: Reason) -> TimerAction {
        let at = now + delay
        deadline = (at, reason)
        guard !timerScheduled else { return .none }
        return .schedule(at: scheduleTimer(now: now, deadline: at))
    }

    /// Toward the deadline, at most the shorter timeout ahead: every deadline set later is at
    /// least that far from its own "now", so the timer never fires after one.
    private mutating func scheduleTimer(now: UInt64, deadline: UInt64) -> UInt64 {
        timerScheduled = true
        return min(deadline, now + min(headerTimeout, idleTimeout))
    }
}
