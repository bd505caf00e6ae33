import EventInterface
import Testing

@testable import EventCluster

/// The `state:` URL as libpq reads it: what it leaves out from the environment, its password
/// never printed, its query keys checked (an unknown key stops start-up, none is dropped).
struct PostgresURLTests {
    func refusal(_ text: String, _ environment: [String: String] = [:]) -> String? {
        do {
            _ = try PostgresURL.parse(text, environment: environment)
            return nil
        } catch { return error.description }
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

    /// libpq's modes and files; the default is libpq's `prefer`; URL keys override variables.
    @Test func sslKeysAreLibpqsAndTheURLWins() throws {
        func tls(_ text: String, _ environment: [String: String] = [:]) throws -> PostgresURL.TLSSettings {
            try PostgresURL.parse(text, environment: environment).tls
        }
        #expect(try tls("postgres://e@h/d").mode == .prefer)
        for mode in PostgresURL.SSLMode.allCases {
            #expect(try tls("postgres://e@h/d?sslmode=\(mode.rawValue)").mode == mode)
        }
        #expect(try tls("postgres://e@h/d", ["PGSSLMODE": "verify-full"]).mode == .verifyFull)
        #expect(try tls("postgres://e@h/d?sslmode=disable", ["PGSSLMODE": "require"]).mode == .disable)
        let files = try tls(
            "postgres://e@h/d?sslmode=verify-ca&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/k.pem",
            ["PGSSLROOTCERT": "/other.pem"])
        #expect(files == .init(mode: .verifyCA, rootCertificate: "/ca.pem", certificate: "/c.pem", key: "/k.pem"))
        #expect(try tls("postgres://e@h/d", ["PGSSLROOTCERT": "/env.pem"]).rootCertificate == "/env.pem")
        // libpq: `require` with a root certificate verifies the chain.
        #expect(try tls("postgres://e@h/d?sslmode=require&sslrootcert=/ca.pem").mode == .verifyCA)
        #expect(!PostgresURL.SSLMode.prefer.guaranteesTLS && PostgresURL.SSLMode.require.guaranteesTLS)
    }

    @Test func badKeysStopStartUpNamingThem() {
        #expect(refusal("postgres://e@h/d?sslmode=sometimes")?.contains("'sometimes' is not one of") == true)
        #expect(refusal("postgres://e@h/d?sslmode=allow")?.contains("use prefer") == true)
        #expect(refusal("postgres://e@h/d", ["PGSSLMODE": "never"])?.contains("PGSSLMODE 'never'") == true)
        #expect(refusal("postgres://e@h/d?sslcert=/c.pem")?.contains("sslcert and sslkey go together") == true)
        #expect(
            refusal("postgres://e@h/d?connect_timeout=5")
                == "state: unknown postgres URL key 'connect_timeout' (known: sslmode, sslrootcert, sslcert, sslkey)")
    }

    @Test func aMissingCertificateFileIsNamed() throws {
        let url = try PostgresURL.parse(
            "postgres://e@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", environment: [:])
        do {
            _ = try url.sslContext()
            Issue.record("a context without its CA file")
        } catch {
            #expect(error.description.contains("sslrootcert /nonexistent/ca.pem"), "\(error)")
        }
        #expect(try PostgresURL.parse("postgres://e@h/d?sslmode=disable", environment: [:]).sslContext() == nil)
    }
}
