import NIOCore
import NIOEmbedded
import Testing

@testable import EventNIOSupport

/// A peer that writes and never reads: past the pause mark nothing more is read from it, below
/// half reading resumes, past the hard limit the connection is closed.
@Suite struct WriteBacklogTests {
    @Test func readsAreHeldWhilePausedAndMadeOnceDrained() {
        var backlog = WriteBacklog()
        var actions = [backlog.readRequested()]
        var reads = [backlog.writabilityChanged(writable: false)]
        actions += [backlog.readRequested(), backlog.readRequested()]
        reads += [backlog.writabilityChanged(writable: true), backlog.writabilityChanged(writable: true)]
        actions.append(backlog.readRequested())
        #expect(actions == [.forward, .hold, .hold, .forward])
        #expect(reads == [false, true, false], "the held read is made once, when drained")
    }

    @Test func onlyAPausedConnectionPastTheHardLimitIsClosed() {
        var backlog = WriteBacklog()
        #expect(!backlog.mustClose(buffered: WriteBacklog.closeAbove + 1), "writable: the marks decide")
        _ = backlog.writabilityChanged(writable: false)
        #expect(!backlog.mustClose(buffered: WriteBacklog.closeAbove))
        #expect(backlog.mustClose(buffered: WriteBacklog.closeAbove + 1))
        #expect(WriteBacklog.resumeBelow == 512 << 10 && WriteBacklog.pauseAbove == 1 << 20)
    }

    /// Counts the reads that reach the socket.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    @Test func theHandlerHoldsReadsAndClosesPastTheHardLimit() throws {
        let counter = ReadCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(WriteBacklogHandler(listener: .ingress))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.read()
        #expect(counter.reads == 1)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.read()
        channel.read()
        #expect(counter.reads == 1, "not read while the peer does not read")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(counter.reads == 2, "the held read once drained")
        // Not writable, and more queued than the hard limit (unflushed, as a socket that takes
        // nothing keeps it): closed.
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.write(channel.allocator.buffer(repeating: 0, count: WriteBacklog.closeAbove), promise: nil)
        #expect(channel.isActive)
        channel.write(channel.allocator.buffer(repeating: 0, count: 1), promise: nil)
        #expect(!channel.isActive, "closed past the hard limit")
        _ = try? channel.finish()
    }
}
