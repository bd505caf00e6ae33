/// Which offset of each partition a Kafka ingress may commit: the one after every record of the
/// partition that is settled, stopping at the first one that is not. Records settle out of order
/// (each with its own subscribers); committing past an unsettled one would lose it if evi died.
/// Pure: offsets in, the offset to store out.
public struct KafkaOffsets: Sendable, Hashable {
    private struct Partition: Sendable, Hashable {
        /// Received and not settled.
        var pending: Set<Int64> = []
        var highestReceived: Int64 = -1
        /// The last offset handed out to store (the next record to read).
        var stored: Int64 = -1
    }

    private var partitions: [Int32: Partition] = [:]

    public init() {}

    /// Records handed over and not settled, over all partitions.
    public var unsettled: Int { partitions.values.reduce(0) { $0 + $1.pending.count } }

    public mutating func received(partition: Int32, offset: Int64) {
        var state = partitions[partition] ?? Partition()
        state.pending.insert(offset)
        state.highestReceived = max(state.highestReceived, offset)
        partitions[partition] = state
    }

    /// `offset` is settled; returns the offset to store now (the next one to read after everything
    /// settled so far), or nil when that did not move.
    public mutating func settled(partition: Int32, offset: Int64) -> Int64? {
        guard var state = partitions[partition], state.pending.remove(offset) != nil else { return nil }
        let next = state.pending.min() ?? (state.highestReceived + 1)
        defer { partitions[partition] = state }
        guard next > state.stored else { return nil }
        state.stored = next
        return next
    }
}
