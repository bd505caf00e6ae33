import EventInterface
import EventNIOSupport
import NIOSSL

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?KEY=VALUE&…]` (or `postgresql://`), read as libpq
/// reads it: what the URL leaves out comes from the standard `PGUSER`, `PGPASSWORD`, `PGHOST`,
/// `PGPORT`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`; a key in the URL
/// overrides its variable. The query keys are libpq's `sslmode`, `sslrootcert`, `sslcert`,
/// `sslkey`; any other stops start-up naming it, rather than being dropped. Printed without its
/// password.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var tls = TLSSettings()

    /// libpq's `sslmode` values that this client has (`allow`, plaintext first, is refused by
    /// name: PostgresNIO tries TLS first or not at all).
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        case disable, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// Whether a connection in this mode is certainly encrypted: `prefer` may be downgraded by
        /// anyone on the path, so it does not count (the rule for storing secrets).
        public var guaranteesTLS: Bool { self == .require || self == .verifyCA || self == .verifyFull }
    }

    public struct TLSSettings: Sendable, Hashable {
        /// libpq's default.
        public var mode: SSLMode = .prefer
        /// The CA file the verify modes trust; without it, the system's store.
        public var rootCertificate: String?
        /// A client certificate chain (PEM) and its key, when the server asks for one.
        public var certificate: String?
        public var key: String?

        public init(
            mode: SSLMode = .prefer, rootCertificate: String? = nil, certificate: String? = nil, key: String? = nil
        ) {
            self.mode = mode
            self.rootCertificate = rootCertificate
            self.certificate = certificate
            self.key = key
        }
    }

    public init(
        user: String, password: String?, host: String, port: Int, database: String, tls: TLSSettings = TLSSettings()
    ) {
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.tls = tls
    }

    public var description: String {
        "postgres://\(user)\(password == nil ? "" : ":***")@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)"
    }

    public static let queryKeys = ["sslmode", "sslrootcert", "sslcert", "sslkey"]

    public static func parse(_ text: String, environment: [String: String]) throws(ConfigurationError) -> PostgresURL {
        let rest: Substring
        if text.hasPrefix("postgres://") {
            rest = text.dropFirst(11)
        } else if text.hasPrefix("postgresql://") {
            rest = text.dropFirst(13)
        } else {
            throw ConfigurationError("state: expected a directory, memory or postgres://USER@HOST/DB")
        }
        var user = environment["PGUSER"] ?? "postgres"
        var password = environment["PGPASSWORD"]
        var hostPart = rest
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            hostPart = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = PercentEncoding.decode(credentials[..<colon])
                password = PercentEncoding.decode(credentials[credentials.index(after: colon)...])
            } else {
                user = PercentEncoding.decode(credentials)
            }
        }
        let slash = hostPart.firstIndex(of: "/") ?? hostPart.endIndex
        let authority = hostPart[..<slash]
        var database = slash == hostPart.endIndex ? "" : String(hostPart[hostPart.index(after: slash)...])
        var query: Substring = ""
        if let question = database.firstIndex(of: "?") {
            query = database[database.index(after: question)...]
            database = String(database[..<question])
        }
        let tls = try tlsSettings(query: query, environment: environment)
        if database.isEmpty { database = environment["PGDATABASE"] ?? user }
        var host = environment["PGHOST"] ?? "127.0.0.1"
        var port = Int(environment["PGPORT"] ?? "") ?? 5432
        if !authority.isEmpty {
            do {
                let parsed = try HostPort.parse(
                    authority.hasSuffix("]") || !authority.contains(":") ? "\(authority):\(port)" : String(authority),
                    scheme: "postgres", socket: "postgres://…@\(authority)")
                host = parsed.host
                port = parsed.port
            } catch {
                throw ConfigurationError("state: \(error.message)")
            }
        }
        guard !user.isEmpty, !database.isEmpty else {
            throw ConfigurationError("state: postgres URL needs a user and a database")
        }
        return PostgresURL(user: user, password: password, host: host, port: port, database: database, tls: tls)
    }

    /// The query's keys over the environment's, each checked: a mode that is not libpq's, a key
    /// that is not one of ours, or a file that cannot be read stops start-up with its name.
    static func tlsSettings(query: Substring, environment: [String: String]) throws(ConfigurationError)
        -> TLSSettings
    {
        var values: [String: (value: String, source: String)] = [:]
        for (key, variable) in [
            ("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"),
        ] {
            if let value = environment[variable], !value.isEmpty { values[key] = (value, variable) }
        }
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = PercentEncoding.decode(parts[0])
            let value = parts.count > 1 ? PercentEncoding.decode(parts[1]) : ""
            guard queryKeys.contains(key) else {
                throw ConfigurationError(
                    "state: unknown postgres URL key '\(key)' (known: \(queryKeys.joined(separator: ", ")))")
            }
            values[key] = (value, key)
        }
        var settings = TLSSettings()
        if let (mode, source) = values["sslmode"] {
            guard let parsed = SSLMode(rawValue: mode) else {
                let hint = mode == "allow" ? " (allow, plaintext first, is not supported: use prefer)" : ""
                throw ConfigurationError(
                    "state: \(source) '\(mode)' is not one of "
                        + "\(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))\(hint)")
            }
            settings.mode = parsed
        }
        settings.rootCertificate = values["sslrootcert"]?.value
        settings.certificate = values["sslcert"]?.value
        settings.key = values["sslkey"]?.value
        guard (settings.certificate == nil) == (settings.key == nil) else {
            throw ConfigurationError("state: sslcert and sslkey go together (a client certificate and its key)")
        }
        // libpq: with a root certificate given, `require` verifies the chain as `verify-ca` does.
        if settings.mode == .require, settings.rootCertificate != nil { settings.mode = .verifyCA }
        if settings.mode == .disable, settings.rootCertificate != nil || settings.certificate != nil {
            throw ConfigurationError("state: sslmode=disable with certificates given: say which is meant")
        }
        return settings
    }

    /// The TLS context these settings ask for (nil with `disable`); its files are read now, so a
    /// missing or unreadable one stops start-up naming it.
    public func sslContext() throws(ConfigurationError) -> NIOSSLContext? {
        guard tls.mode != .disable else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch tls.mode {
        case .disable, .prefer, .require: configuration.certificateVerification = .none
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        case .verifyFull: configuration.certificateVerification = .fullVerification
        }
        func read<T>(_ what: String, _ path: String, _ load: () throws -> T) throws(ConfigurationError) -> T {
            do { return try load() } catch {
                throw ConfigurationError("state: \(what) \(path): \(error)")
            }
        }
        if let root = tls.rootCertificate {
            let certificates = try read("sslrootcert", root) { try NIOSSLCertificate.fromPEMFile(root) }
            configuration.trustRoots = .certificates(certificates)
        }
        if let certificate = tls.certificate, let key = tls.key {
            let chain = try read("sslcert", certificate) { try NIOSSLCertificate.fromPEMFile(certificate) }
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(
                try read("sslkey", key) { try NIOSSLPrivateKey(file: key, format: .pem) })
        }
        return try read("TLS", "settings") { try NIOSSLContext(configuration: configuration) }
    }
}
