import EventInterface
import EventInterfaceTestKit
import Foundation
import Logging
import Synchronization
import Testing

@testable import EventCluster

/// Against the private PostgreSQL scripts/test.sh starts (`EVI_POSTGRES_URL`).
@Suite(.serialized) struct StoreConnectionTests {
    static var url: PostgresURL {
        get throws {
            guard let text = ProcessInfo.processInfo.environment["EVI_POSTGRES_URL"] else {
                throw ReceiverError(
                    "EVI_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
            }
            return try PostgresURL.parse(text, environment: [:])
        }
    }

    static let logger = Logger(label: "test")

    /// Bind parameters carry quotes, backslashes, dollar quotes and semicolons byte for byte;
    /// notifications arrive in order; a server error carries its SQLSTATE and leaves the
    /// connection usable.
    @Test func queriesNotificationsAndErrorsAgainstARealServer() async throws {
        let notified = Mutex<[String]>([])
        let connection = try await StoreConnection.connect(
            to: try Self.url, logger: Self.logger, channels: ["evi_wire"]
        ) { channel, payload in
            notified.withLock { $0.append("\(channel) \(payload)") }
        }
        #expect(!connection.isTLS, "the test server has no TLS")
        try await connection.execute("DROP TABLE IF EXISTS evi_wire_test")
        try await connection.execute("CREATE TABLE evi_wire_test (name text, note text)")
        let awkward = #"it's \ $$ ; DROP TABLE evi_wire_test; --"#
        let unset: String? = nil
        try await connection.execute("INSERT INTO evi_wire_test VALUES (\(awkward), \(unset)), ('b', 'ü')")
        let rows = try await connection.rows("SELECT name, note FROM evi_wire_test ORDER BY name") {
            try $0.decode((String, String?).self)
        }
        #expect(rows.map(\.0) == ["b", awkward] && rows.map(\.1) == ["ü", nil])
        let other = try await StoreConnection.connect(to: try Self.url, logger: Self.logger)
        for n in 1...3 { try await other.execute("SELECT pg_notify('evi_wire', \("E_A udp:127.0.0.1:\(n)"))") }
        #expect(
            await eventually {
                notified.withLock { $0 } == (1...3).map { "evi_wire E_A udp:127.0.0.1:\($0)" }
            })
        do {
            try await connection.execute("SELECT * FROM evi_no_such_table")
            Issue.record("no error")
        } catch {
            #expect(error.sqlState == "42P01", "\(error)")
            #expect(error.description.contains("evi_no_such_table"), "\(error)")
        }
        #expect(try await connection.rows("SELECT 1") { try $0.decode(Int32.self) } == [1])
        try await connection.execute("DROP TABLE evi_wire_test")
        await other.close()
        await connection.close()
        #expect(!connection.isActive)
    }

    @Test func aWrongPasswordIsRefusedWithTheServersReason() async throws {
        var url = try Self.url
        url.password = "wrong"
        do {
            _ = try await StoreConnection.connect(to: url, logger: Self.logger)
            Issue.record("connected with a wrong password")
        } catch {
            #expect(error.sqlState == "28P01", "\(error)")
        }
        url.port = try freeTCPPort()
        do {
            _ = try await StoreConnection.connect(to: url, logger: Self.logger)
            Issue.record("connected to nothing")
        } catch {
            #expect(error.message.lowercased().contains("refused"), "\(error)")
        }
    }

    /// A peer that accepts and never answers is given up on within the bound, not waited on.
    @Test func aSilentServerIsGivenUpOn() async throws {
        let silent = try SilentListener()
        defer { silent.close() }
        var url = try Self.url
        url.port = silent.port
        url.tls.mode = .disable
        let started = ContinuousClock.now
        do {
            _ = try await StoreConnection.connect(to: url, logger: Self.logger, timeout: .seconds(1))
            Issue.record("connected to a silent peer")
        } catch {
            #expect(error.message.contains("no answer"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
