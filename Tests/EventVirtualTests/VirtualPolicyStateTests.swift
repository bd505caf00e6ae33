import EventInterface
import EventVirtual
import Testing

/// The pure decisions of Docs/virtual.md, with time given as numbers: no sockets, no sleeping.
@Suite struct MemberHealthTests {
    let refused = DeliveryFailure(.subscriberFailed, "connection refused")

    @Test func failureMarksForTheTimeoutAndSuccessClears() {
        var health = MemberHealth()
        #expect(health.recordFailure(refused, now: 100, failoverTimeout: 30) == .down(reason: "connection refused"))
        #expect(health.isMarked(now: 100))
        #expect(health.isMarked(now: 129.9))
        #expect(!health.isMarked(now: 130))
        #expect(health.retryIn(now: 100) == 30)
        #expect(health.retryIn(now: 129.5) == 1)
        #expect(health.retryIn(now: 140) == 0)
        #expect(health.recordSuccess() == .up)
        #expect(health.state == .up)
        #expect(health.retryIn(now: 140) == nil)
        #expect(health.delivered == 1 && health.failed == 1)
    }

    @Test func aSecondFailureRenewsTheMarkWithoutANewTransition() {
        var health = MemberHealth()
        _ = health.recordFailure(refused, now: 100, failoverTimeout: 30)
        #expect(health.recordFailure(refused, now: 120, failoverTimeout: 30) == nil)
        #expect(health.isMarked(now: 140))
        #expect(health.recordSuccess() == .up)
        #expect(health.recordSuccess() == nil)
    }

    @Test func slowIsNotDeadAndABadEventIsNotTheMembersFault() {
        var health = MemberHealth()
        #expect(health.recordFailure(.queueFull, now: 0, failoverTimeout: 30) == nil)
        #expect(health.recordFailure(.payloadTooLarge, now: 0, failoverTimeout: 30) == nil)
        #expect(health.state == .up)
        #expect(health.failed == 2)
    }
}

@Suite struct VirtualPolicyStateTests {
    let refused = DeliveryOutcome.failed(DeliveryFailure(.subscriberFailed, "connection refused"))

    @Test func parallelTargetsEveryMemberAndNeverReroutes() {
        var state = VirtualPolicyState(policy: .parallel, memberCount: 3, failoverTimeout: 30)
        _ = state.record(refused, member: 0, now: 0)
        #expect(state.dispatchTargets(now: 1) == [0, 1, 2])
        #expect(state.reroute(tried: MemberSet(0), after: 0, now: 1) == nil)
    }

    @Test func roundRobinTakesTurns() {
        var state = VirtualPolicyState(policy: .roundRobin, memberCount: 3, failoverTimeout: 30)
        let order = (0..<7).flatMap { _ in state.dispatchTargets(now: 0) }
        #expect(order == [0, 1, 2, 0, 1, 2, 0])
    }

    @Test func roundRobinSkipsAMarkedMemberUntilItsMarkRunsOut() {
        var state = VirtualPolicyState(policy: .roundRobin, memberCount: 3, failoverTimeout: 30)
        #expect(state.record(refused, member: 1, now: 0) == .down(reason: "connection refused"))
        let skipping = (0..<4).flatMap { _ in state.dispatchTargets(now: 10) }
        #expect(skipping == [0, 2, 0, 2])
        let back = (0..<3).flatMap { _ in state.dispatchTargets(now: 30) }
        #expect(back == [0, 1, 2])
    }

    @Test func roundRobinReroutesToTheNextUnmarkedThenToMarkedOnesWithoutMovingTheTurn() {
        var state = VirtualPolicyState(policy: .roundRobin, memberCount: 4, failoverTimeout: 30)
        _ = state.record(refused, member: 3, now: 0)
        #expect(state.dispatchTargets(now: 1) == [0])
        #expect(state.dispatchTargets(now: 1) == [1])
        _ = state.record(refused, member: 1, now: 1)
        // 1 failed: next unmarked after it is 2; 3 is marked, 0 unmarked.
        var tried = MemberSet(1)
        #expect(state.reroute(tried: tried, after: 1, now: 1) == 2)
        tried.insert(2)
        _ = state.record(refused, member: 2, now: 1)
        #expect(state.reroute(tried: tried, after: 2, now: 1) == 0)
        tried.insert(0)
        _ = state.record(refused, member: 0, now: 1)
        #expect(state.reroute(tried: tried, after: 0, now: 1) == 3)  // marked: the last try
        tried.insert(3)
        #expect(state.reroute(tried: tried, after: 3, now: 1) == nil)
        #expect(state.turn == 2)
    }

    @Test func roundRobinWithEveryMemberMarkedStillTriesTheTurnsMember() {
        var state = VirtualPolicyState(policy: .roundRobin, memberCount: 2, failoverTimeout: 30)
        _ = state.record(refused, member: 0, now: 0)
        _ = state.record(refused, member: 1, now: 0)
        #expect(state.dispatchTargets(now: 1) == [0])
        #expect(state.dispatchTargets(now: 1) == [1])
    }

    @Test func failoverPrefersTheFirstHealthyMemberAndFallsBackToMarkedOnes() {
        var state = VirtualPolicyState(policy: .failover, memberCount: 3, failoverTimeout: 5)
        #expect(state.dispatchTargets(now: 0) == [0])
        _ = state.record(refused, member: 0, now: 0)
        #expect(state.reroute(tried: MemberSet(0), after: 0, now: 0) == 1)
        #expect(state.dispatchTargets(now: 1) == [1])
        _ = state.record(refused, member: 1, now: 1)
        #expect(state.dispatchTargets(now: 2) == [2])
        _ = state.record(refused, member: 2, now: 2)
        // Everything marked: the marked members are tried once, in order.
        #expect(state.dispatchTargets(now: 3) == [0])
        var tried = MemberSet(0)
        #expect(state.reroute(tried: tried, after: 0, now: 3) == 1)
        tried.insert(1)
        #expect(state.reroute(tried: tried, after: 1, now: 3) == 2)
        tried.insert(2)
        #expect(state.reroute(tried: tried, after: 2, now: 3) == nil)
        // Member 0's mark ran out at 5: the first event after that tries it again.
        #expect(state.dispatchTargets(now: 5) == [0])
        #expect(state.record(.delivered, member: 0, now: 5) == .up)
        #expect(state.dispatchTargets(now: 5) == [0])
    }

    @Test func memberSetHoldsSixtyFourMembers() {
        var set = MemberSet()
        for member in [0, 1, 63] { set.insert(member) }
        #expect(set.contains(0) && set.contains(1) && set.contains(63))
        #expect(!set.contains(2) && !set.contains(62))
        #expect(Array(set) == [0, 1, 63])
        #expect(Array(MemberSet.all(3)) == [0, 1, 2])
        #expect(Array(MemberSet.all(64)).count == 64)
        #expect(Array(MemberSet()) == [])
    }
}

/// HASH's ranking and failover, with numbers for time.
@Suite struct HashPolicyStateTests {
    let members = ["udp:127.0.0.1:9001", "udp:127.0.0.1:9002", "udp:127.0.0.1:9003"]
    let refused = DeliveryFailure(.subscriberFailed, "connection refused")
    let keys = (0..<1000).map { "call-\($0)@example.org" }

    func placement(_ state: inout VirtualPolicyState, names: [String], now: Double = 0) -> [String: String] {
        var placed: [String: String] = [:]
        for key in keys {
            let targets = Array(state.dispatchTargets(now: now, key: key))
            placed[key] = names[targets[0]]
        }
        return placed
    }

    @Test func eachKeyHasOneMemberAndTheSharesAreEven() {
        var state = VirtualPolicyState(policy: .hash, members: members, failoverTimeout: 30)
        var counts: [String: Int] = [:]
        for key in keys {
            let targets = Array(state.dispatchTargets(now: 0, key: key))
            #expect(targets.count == 1)
            // The same key, the same member, every time.
            #expect(Array(state.dispatchTargets(now: 0, key: key)) == targets)
            counts[members[targets[0]], default: 0] += 1
        }
        for member in members { #expect(abs(counts[member, default: 0] - 333) <= 50, "\(counts)") }
    }

    @Test func reorderingMovesNoKeyAndRemovingMovesOnlyThatMembersKeys() {
        var three = VirtualPolicyState(policy: .hash, members: members, failoverTimeout: 30)
        let before = placement(&three, names: members)
        let reversedMembers = Array(members.reversed())
        var reordered = VirtualPolicyState(policy: .hash, members: reversedMembers, failoverTimeout: 30)
        #expect(placement(&reordered, names: reversedMembers) == before)
        let two = [members[0], members[2]]
        var fewer = VirtualPolicyState(policy: .hash, members: two, failoverTimeout: 30)
        let after = placement(&fewer, names: two)
        var moved = 0
        for key in keys where after[key] != before[key] {
            moved += 1
            #expect(before[key] == members[1])
        }
        #expect(moved == before.values.filter { $0 == members[1] }.count)
    }

    @Test func aMarkedMembersKeysGoToTheirNextRankedMemberAndComeBack() {
        var state = VirtualPolicyState(policy: .hash, members: members, failoverTimeout: 30)
        let before = placement(&state, names: members)
        #expect(state.record(.failed(refused), member: 1, now: 100) == .down(reason: "connection refused"))
        let during = placement(&state, names: members, now: 110)
        for key in keys {
            if before[key] == members[1] {
                let ranking = state.ranking(key: key)
                #expect(ranking[0] == 1)
                #expect(during[key] == members[ranking[1]])
            } else {
                #expect(during[key] == before[key])
            }
        }
        // The mark runs out: the keys return.
        #expect(placement(&state, names: members, now: 130) == before)
    }

    @Test func withEveryMemberMarkedTheFirstRankedGetsTheLastTry() {
        var state = VirtualPolicyState(policy: .hash, members: members, failoverTimeout: 30)
        for member in 0..<3 { _ = state.record(.failed(refused), member: member, now: 0) }
        for key in keys.prefix(50) {
            #expect(Array(state.dispatchTargets(now: 1, key: key)) == [state.ranking(key: key)[0]])
        }
    }

    @Test func aFailedEventGoesDownItsKeysRanking() {
        let state = VirtualPolicyState(policy: .hash, members: members, failoverTimeout: 30)
        for key in keys.prefix(50) {
            let ranking = state.ranking(key: key)
            #expect(state.reroute(tried: MemberSet(ranking[0]), after: ranking[0], now: 0, key: key) == ranking[1])
            var tried = MemberSet(ranking[0])
            tried.insert(ranking[1])
            #expect(state.reroute(tried: tried, after: ranking[1], now: 0, key: key) == ranking[2])
            #expect(state.reroute(tried: .all(3), after: ranking[2], now: 0, key: key) == nil)
        }
    }
}
