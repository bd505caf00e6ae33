import Testing

@testable import EventKafka

/// The commit position of a Kafka ingress: never past a record whose event is not settled.
@Suite struct KafkaOffsetsTests {
    @Test func theStoredOffsetStopsAtTheFirstUnsettledRecord() {
        var offsets = KafkaOffsets()
        for offset in Int64(10)...14 { offsets.received(partition: 0, offset: offset) }
        #expect(offsets.unsettled == 5)
        // 10 and 11 still out: only "everything before 10" can be said.
        #expect(offsets.settled(partition: 0, offset: 12) == 10)
        #expect(offsets.settled(partition: 0, offset: 10) == 11)
        #expect(offsets.settled(partition: 0, offset: 11) == 13)  // 12 was settled already
        #expect(offsets.settled(partition: 0, offset: 14) == nil)  // 13 still out
        #expect(offsets.settled(partition: 0, offset: 13) == 15)
        #expect(offsets.unsettled == 0)
    }

    @Test func partitionsAreIndependentAndUnknownRecordsIgnored() {
        var offsets = KafkaOffsets()
        offsets.received(partition: 0, offset: 0)
        offsets.received(partition: 1, offset: 7)
        #expect(offsets.settled(partition: 1, offset: 7) == 8)
        #expect(offsets.settled(partition: 1, offset: 7) == nil)  // settled twice: nothing new
        #expect(offsets.settled(partition: 2, offset: 0) == nil)  // never received
        #expect(offsets.unsettled == 1)
        #expect(offsets.settled(partition: 0, offset: 0) == 1)
    }

    @Test func aRecordReadAgainAfterARebalanceNeverMovesTheOffsetBack() {
        var offsets = KafkaOffsets()
        offsets.received(partition: 0, offset: 5)
        #expect(offsets.settled(partition: 0, offset: 5) == 6)
        offsets.received(partition: 0, offset: 5)  // delivered again
        #expect(offsets.settled(partition: 0, offset: 5) == nil)
        offsets.received(partition: 0, offset: 6)
        #expect(offsets.settled(partition: 0, offset: 6) == 7)
    }
}
