import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import ManagementInterface

/// The guard on `EmbeddedChannel`s: admission within the cap, and closing for time on the
/// embedded loop's clock. No socket.
@Suite struct MIConnectionGuardTests {
    static let limits = MIConnectionLimits(maxConnections: 2, headerTimeout: .seconds(10), idleTimeout: .seconds(60))

    /// A connected channel with a guard first in its pipeline, on `loop`.
    static func connection(_ table: MIConnectionTable, loop: EmbeddedEventLoop) throws -> (
        EmbeddedChannel, MIConnectionGuard
    ) {
        let guardian = MIConnectionGuard(connections: table, limits: limits, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: guardian, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, guardian)
    }

    @Test func anIdleConnectionIsClosedAtTheIdleTimeout() throws {
        let loop = EmbeddedEventLoop()
        let table = MIConnectionTable(limit: 10)
        let (channel, _) = try Self.connection(table, loop: loop)
        #expect(table.count == 1)
        loop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
        #expect(table.count == 0)
    }

    @Test func aHeadThatDoesNotArriveInTimeClosesTheConnection() throws {
        let loop = EmbeddedEventLoop()
        let (channel, _) = try Self.connection(MIConnectionTable(limit: 10), loop: loop)
        try channel.writeInbound(ByteBuffer(string: "POST /mi HTTP/1.1\r\n"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "POST /mi HTTP/1.1\r\n"))
        loop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func whileAReplyIsMadeNothingIsClosedAndAfterItIdleCountsAgain() throws {
        let loop = EmbeddedEventLoop()
        let (channel, guardian) = try Self.connection(MIConnectionTable(limit: 10), loop: loop)
        try channel.writeInbound(ByteBuffer(string: "GET /metrics HTTP/1.1\r\n\r\n"))
        guardian.headReceived()
        guardian.requestReceived()
        loop.advanceTime(by: .seconds(120))
        #expect(channel.isActive)
        guardian.replied()
        loop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func aStreamStaysOpenAndLeavesTheTable() throws {
        let loop = EmbeddedEventLoop()
        let table = MIConnectionTable(limit: 10)
        let (channel, guardian) = try Self.connection(table, loop: loop)
        guardian.becameStream()
        #expect(table.count == 0)
        loop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test func overTheCapTheOldestUnauthenticatedConnectionIsClosed() throws {
        let loop = EmbeddedEventLoop()
        let table = MIConnectionTable(limit: 2)
        let (first, firstGuard) = try Self.connection(table, loop: loop)
        let (second, _) = try Self.connection(table, loop: loop)
        firstGuard.authenticated()
        let (third, _) = try Self.connection(table, loop: loop)
        loop.run()
        #expect(first.isActive, "authenticated: kept")
        #expect(!second.isActive, "the oldest unauthenticated one")
        #expect(third.isActive)
        #expect(table.count == 2)
        _ = try first.finish()
        _ = try third.finish()
    }
}
