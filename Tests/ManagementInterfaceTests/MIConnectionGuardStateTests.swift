import Testing

@testable import ManagementInterface

/// When an MI HTTP connection is closed for time, with time as numbers (seconds × 10⁹).
@Suite struct MIConnectionGuardStateTests {
    static let second: UInt64 = 1_000_000_000

    /// header_timeout 10 s, idle_timeout 60 s.
    static func state() -> MIConnectionGuardState {
        MIConnectionGuardState(headerTimeoutNanoseconds: 10 * second, idleTimeoutNanoseconds: 60 * second)
    }

    @Test func anIdleConnectionIsClosedAtTheIdleTimeout() {
        var state = Self.state()
        // The timer goes at most the shorter timeout ahead, then again toward the deadline.
        #expect(state.opened(now: 0) == .schedule(at: 10 * Self.second))
        #expect(state.timerFired(now: 10 * Self.second) == .schedule(at: 20 * Self.second))
        for tick in 2...5 {
            #expect(
                state.timerFired(now: UInt64(tick) * 10 * Self.second)
                    == .schedule(at: UInt64(tick + 1) * 10 * Self.second))
        }
        #expect(state.timerFired(now: 60 * Self.second) == .close(.idle))
    }

    @Test func aStartedHeadHasTheHeaderTimeoutAndTheBodyAsLongAgain() {
        var state = Self.state()
        _ = state.opened(now: 0)
        #expect(state.bytesArrived(now: 1 * Self.second) == .none, "the timer is already on its way")
        #expect(state.phase == .head)
        #expect(state.deadline?.at == 11 * Self.second)
        #expect(state.timerFired(now: 10 * Self.second) == .schedule(at: 11 * Self.second))
        #expect(state.timerFired(now: 11 * Self.second) == .close(.head))

        var slowBody = Self.state()
        _ = slowBody.opened(now: 0)
        _ = slowBody.bytesArrived(now: 0)
        _ = slowBody.headReceived(now: 5 * Self.second)
        #expect(slowBody.phase == .body)
        #expect(slowBody.timerFired(now: 10 * Self.second) == .schedule(at: 15 * Self.second))
        #expect(slowBody.timerFired(now: 15 * Self.second) == .close(.body))
        #expect(MIConnectionGuardState.Reason.body.rawValue == "request body not received in time")
    }

    @Test func noDeadlineWhileAReplyIsMadeThenIdleAgain() {
        var state = Self.state()
        _ = state.opened(now: 0)
        _ = state.bytesArrived(now: 0)
        _ = state.headReceived(now: 0)
        state.requestReceived()
        #expect(state.phase == .answering)
        #expect(state.timerFired(now: 10 * Self.second) == .none)
        // The timer is gone: the next deadline schedules one.
        #expect(state.replied(now: 100 * Self.second) == .schedule(at: 110 * Self.second))
        #expect(state.phase == .idle)
        #expect(state.deadline?.at == 160 * Self.second)
    }

    @Test func keepAliveRequestsMoveTheDeadlineWithoutNewTimers() {
        var state = Self.state()
        #expect(state.opened(now: 0) == .schedule(at: 10 * Self.second))
        for request in 0..<100 {
            let now = UInt64(request) * 1_000_000
            #expect(state.bytesArrived(now: now) == .none)
            #expect(state.headReceived(now: now) == .none)
            state.requestReceived()
            #expect(state.replied(now: now) == .none)
        }
    }

    @Test func aStreamIsNeverClosedForTime() {
        var state = Self.state()
        _ = state.opened(now: 0)
        _ = state.bytesArrived(now: 0)
        #expect(state.becameStream() == .cancel)
        #expect(state.phase == .stream)
        #expect(state.replied(now: 1) == .none)
        #expect(state.headReceived(now: 1) == .none)
        #expect(state.timerFired(now: 1_000 * Self.second) == .none)
    }

    @Test func authenticationIsToldOnce() {
        var state = Self.state()
        let first = state.authenticated()
        let second = state.authenticated()
        #expect(first && !second)
        #expect(state.isAuthenticated)
    }

    @Test func closingCancelsTheTimerOnce() {
        var state = Self.state()
        _ = state.opened(now: 0)
        #expect(state.closed() == .cancel)
        #expect(state.closed() == .none)
        #expect(state.timerFired(now: 100 * Self.second) == .none)
    }
}
