import EventInterface
import EventInterfaceTestKit
import Foundation
import Synchronization
import Testing

@testable import EventCluster

/// The PostgreSQL protocol pieces without a server: message decoding, SCRAM-SHA-256 against RFC
/// 7677's example, the MD5 password form, literal quoting, the URL.
struct PostgresProtocolTests {
    func message(_ type: Character, _ body: [UInt8]) -> [UInt8] { PostgresFrontend.message(type, body) }

    @Test func messagesDecodeAcrossArbitrarySplits() throws {
        var row: [UInt8] = [0, 3]
        for value in ["a", nil, "ü'x"] as [String?] {
            if let value {
                PostgresFrontend.append(int32: Int32(value.utf8.count), to: &row)
                row += Array(value.utf8)
            } else {
                PostgresFrontend.append(int32: -1, to: &row)
            }
        }
        var description: [UInt8] = [0, 1] + Array("name".utf8) + [0] + [UInt8](repeating: 0, count: 18)
        description[0] = 0
        let stream =
            message("R", [0, 0, 0, 10] + Array("SCRAM-SHA-256".utf8) + [0, 0])
            + message("S", Array("server_version".utf8) + [0] + Array("15.8".utf8) + [0])
            + message("T", description) + message("D", row)
            + message("C", Array("SELECT 1".utf8) + [0])
            + message("A", [0, 0, 0, 7] + Array("evi".utf8) + [0] + Array("E_A udp:x".utf8) + [0])
            + message("E", Array("SERROR".utf8) + [0] + Array("C42P01".utf8) + [0] + Array("Mno table".utf8) + [0, 0])
            + message("Z", [UInt8(ascii: "I")])
        let expected: [PostgresBackend] = [
            .authentication(.sasl(mechanisms: ["SCRAM-SHA-256"])),
            .parameterStatus(name: "server_version", value: "15.8"),
            .rowDescription(columns: ["name"]), .dataRow(["a", nil, "ü'x"]), .commandComplete("SELECT 1"),
            .notification(channel: "evi", payload: "E_A udp:x"),
            .error(fields: ["S": "ERROR", "C": "42P01", "M": "no table"]), .readyForQuery,
        ]
        for split in [1, 2, 3, 7, 64, stream.count] {
            var decoder = PostgresDecoder()
            var got: [PostgresBackend] = []
            var offset = 0
            while offset < stream.count {
                decoder.feed(stream[offset..<min(offset + split, stream.count)])
                offset += split
                while let next = try decoder.next() { got.append(next) }
            }
            #expect(got == expected, "split \(split)")
        }
    }

    @Test func oversizedOrMalformedMessagesAreErrorsNotBuffers() {
        var decoder = PostgresDecoder()
        decoder.feed([UInt8(ascii: "D"), 0x7F, 0xFF, 0xFF, 0xFF])
        #expect(throws: PostgresDecoder.DecodeError.tooLarge(0x7FFF_FFFF)) { try decoder.next() }
        var short = PostgresDecoder()
        short.feed([UInt8(ascii: "Z"), 0, 0, 0, 2])
        #expect(throws: PostgresDecoder.DecodeError.self) { try short.next() }
        var unterminated = PostgresDecoder()
        unterminated.feed(message("C", Array("SELECT".utf8)))
        #expect(throws: PostgresDecoder.DecodeError.self) { try unterminated.next() }
    }

    /// RFC 7677, section 3.
    @Test func scramMatchesRFC7677() throws {
        var scram = PostgresSCRAM(user: "user", password: "pencil", clientNonce: "rOprNGfwEbeRWgbNEkqO")
        #expect(String(decoding: scram.clientFirst, as: UTF8.self) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        let final = try scram.clientFinal(
            serverFirst: Array(
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".utf8))
        #expect(
            String(decoding: final, as: UTF8.self)
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        try scram.verify(serverFinal: Array("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
        #expect(throws: PostgresSCRAM.Failure.serverSignature) {
            try scram.verify(serverFinal: Array("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".utf8))
        }
        var other = PostgresSCRAM(password: "pencil", clientNonce: "abc")
        #expect(throws: PostgresSCRAM.Failure.badNonce) {
            try other.clientFinal(serverFirst: Array("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".utf8))
        }
    }

    @Test func md5PasswordsAndLiterals() throws {
        // hashlib: "md5" + md5(md5("pencil" + "user").hexdigest() + bytes([1, 2, 3, 4])).hexdigest()
        #expect(
            PostgresSCRAM.md5Password(user: "user", password: "pencil", salt: [1, 2, 3, 4])
                == "md54376eb6913b38f9aaff38dc7cf19ca76")
        #expect(try PostgresLiteral.string("it's") == "'it''s'")
        #expect(try PostgresLiteral.string(#"a\'b"#) == #"'a\''b'"#)
        #expect(try PostgresLiteral.optional(nil) == "NULL")
        #expect(throws: PostgresLiteral.NulError.self) { try PostgresLiteral.string("a\u{0}b") }
    }

    @Test func urlsTakeWhatIsMissingFromTheEnvironmentAndPrintNoPassword() throws {
        let url = try PostgresURL.parse("postgres://evi:s%40cret@db.example:6543/events", environment: [:])
        #expect(url == PostgresURL(user: "evi", password: "s@cret", host: "db.example", port: 6543, database: "events"))
        #expect(url.description == "postgres://evi:***@db.example:6543/events")
        let defaults = try PostgresURL.parse(
            "postgresql://", environment: ["PGUSER": "ops", "PGPASSWORD": "pw", "PGHOST": "10.0.0.5", "PGPORT": "5433"])
        #expect(defaults == PostgresURL(user: "ops", password: "pw", host: "10.0.0.5", port: 5433, database: "ops"))
        #expect(throws: ConfigurationError.self) { try PostgresURL.parse("mysql://x@y/z", environment: [:]) }
        #expect(throws: ConfigurationError.self) { try PostgresURL.parse("postgres://x@y:99999/z", environment: [:]) }
    }

    /// A URL asking for TLS is never connected in clear: this client has none yet, so start-up
    /// stops saying so; an unknown key stops it naming the key (neither is dropped silently).
    @Test func queryKeysAreCheckedNotDropped() throws {
        func refusal(_ text: String, _ environment: [String: String] = [:]) -> String? {
            do {
                _ = try PostgresURL.parse(text, environment: environment)
                return nil
            } catch { return error.description }
        }
        #expect(try PostgresURL.parse("postgres://e@h/d?sslmode=disable", environment: [:]).database == "d")
        #expect(
            refusal("postgres://e@h/d?sslmode=require")
                == "state: sslmode=require: TLS to the state store is not in this build; only sslmode=disable is "
                + "(the connection would go in clear)")
        #expect(refusal("postgres://e@h/d?sslmode=verify-full")?.contains("sslmode=verify-full") == true)
        #expect(refusal("postgres://e@h/d", ["PGSSLMODE": "prefer"])?.contains("PGSSLMODE=prefer") == true)
        #expect(refusal("postgres://e@h/d?sslmode=disable", ["PGSSLMODE": "require"]) == nil, "the URL wins")
        #expect(refusal("postgres://e@h/d?sslmode=sometimes")?.contains("'sometimes' is not one of") == true)
        #expect(refusal("postgres://e@h/d?sslrootcert=/ca.pem")?.contains("sslrootcert") == true)
        #expect(
            refusal("postgres://e@h/d?connect_timeout=5")
                == "state: unknown postgres URL key 'connect_timeout' (known: sslmode, sslrootcert, sslcert, sslkey)")
    }
}

/// Against the private PostgreSQL scripts/test.sh starts (`EVI_POSTGRES_URL`).
@Suite(.serialized) struct PostgresConnectionTests {
    static var url: PostgresURL {
        get throws {
            guard let text = ProcessInfo.processInfo.environment["EVI_POSTGRES_URL"] else {
                throw ReceiverError(
                    "EVI_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
            }
            return try PostgresURL.parse(text, environment: [:])
        }
    }

    @Test func queriesNotificationsAndErrorsAgainstARealServer() async throws {
        let notified = Mutex<[String]>([])
        let connection = try await PostgresConnection.connect(to: try Self.url) { channel, payload in
            notified.withLock { $0.append("\(channel) \(payload)") }
        }
        _ = try await connection.query(
            "DROP TABLE IF EXISTS evi_wire_test; CREATE TABLE evi_wire_test (name text, note text)")
        _ = try await connection.query(
            "INSERT INTO evi_wire_test VALUES (\(try PostgresLiteral.string("it's")), NULL), ('b', 'ü')")
        let rows = try await connection.query("SELECT name, note FROM evi_wire_test ORDER BY name")
        #expect(rows == [["b", "ü"], ["it's", nil]])
        _ = try await connection.query("LISTEN evi_wire")
        let other = try await PostgresConnection.connect(to: try Self.url)
        _ = try await other.query("NOTIFY evi_wire, 'E_A udp:127.0.0.1:9'")
        #expect(await eventually { notified.withLock { $0 } == ["evi_wire E_A udp:127.0.0.1:9"] })
        do {
            _ = try await connection.query("SELECT * FROM evi_no_such_table")
            Issue.record("no error")
        } catch {
            #expect(error.sqlState == "42P01", "\(error)")
        }
        // The connection is still usable after an error.
        #expect(try await connection.query("SELECT 1") == [["1"]])
        _ = try await connection.query("DROP TABLE evi_wire_test")
        await other.close()
        await connection.close()
    }

    @Test func aWrongPasswordIsRefusedWithTheServersReason() async throws {
        var url = try Self.url
        url.password = "wrong"
        do {
            _ = try await PostgresConnection.connect(to: url)
            Issue.record("connected with a wrong password")
        } catch {
            #expect(error.sqlState == "28P01", "\(error)")
        }
        url.port = try freeTCPPort()
        do {
            _ = try await PostgresConnection.connect(to: url)
            Issue.record("connected to nothing")
        } catch {
            #expect(error.message.contains("refused"), "\(error)")
        }
    }
}
