import EventNIOSupport
import Testing

/// The reconnect state machine, event by event: no sockets, no timers, no sleeps.
@Suite struct ReconnectStateMachineTests {
    @Test func theFirstUseConnectsAndAConnectionIsThenUsed() {
        var machine = ReconnectStateMachine()
        #expect(machine.phase == .idle)
        #expect(machine.channelRequested() == .connect)
        #expect(machine.channelRequested() == .fail("not connected (connecting)"))
        #expect(machine.connected() == .keep)
        #expect(machine.phase == .up)
        #expect(machine.channelRequested() == .use)
    }

    @Test func aFailedConnectFailsFastAndRetriesWithDoublingBackoffUpToFiveSeconds() {
        var machine = ReconnectStateMachine()
        #expect(machine.channelRequested() == .connect)
        var waits: [Double] = []
        for _ in 0..<8 {
            guard case .reconnect(let after) = machine.connectFailed(reason: "connection refused") else {
                Issue.record("no reconnect scheduled")
                return
            }
            waits.append(after)
            // Meanwhile deliveries fail at once, saying why.
            #expect(machine.channelRequested() == .fail("not connected (reconnecting after: connection refused)"))
            #expect(machine.reconnectTimerFired() == .connect)
        }
        #expect(waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
    }

    @Test func successResetsTheBackoff() {
        var machine = ReconnectStateMachine()
        _ = machine.channelRequested()
        _ = machine.connectFailed(reason: "refused")
        _ = machine.reconnectTimerFired()
        _ = machine.connectFailed(reason: "refused")
        _ = machine.reconnectTimerFired()
        #expect(machine.connected() == .keep)
        #expect(machine.delay == 0.1)
        #expect(machine.connectionLost() == .reconnect(after: 0.1))
        #expect(machine.phase == .down(reason: "connection lost"))
    }

    @Test func aLossIsOnlyALossWhenUp() {
        var machine = ReconnectStateMachine()
        #expect(machine.connectionLost() == .none)
        #expect(machine.reconnectTimerFired() == .none)
        _ = machine.channelRequested()
        #expect(machine.connectionLost() == .none)  // still connecting
        _ = machine.connected()
        #expect(machine.connectionLost(reason: "reply timeout") == .reconnect(after: 0.1))
        #expect(machine.connectionLost() == .none)  // already down
    }

    @Test func aCleanEndGoesBackToIdleWithoutBackoff() {
        var machine = ReconnectStateMachine()
        _ = machine.channelRequested()
        _ = machine.connected()
        machine.connectionEnded()
        #expect(machine.phase == .idle)
        #expect(machine.channelRequested() == .connect)
    }

    @Test func closingStopsEverything() {
        var machine = ReconnectStateMachine()
        _ = machine.channelRequested()
        machine.close()
        #expect(machine.connected() == .discard)
        #expect(machine.channelRequested() == .fail("shutting down"))
        #expect(machine.connectFailed(reason: "x") == .none)
        #expect(machine.reconnectTimerFired() == .none)
    }
}
