import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// Where credentials come from, in the order AWS tools look: the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then the shared credentials
/// file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or
/// `default`), then the module's options.
public struct AWSCredentialChain: Sendable {
    public var environment: [String: String]
    public var configured: AWSCredentials?

    public init(environment: [String: String] = ProcessEnvironment.current(), configured: AWSCredentials?) {
        self.environment = environment
        self.configured = configured
    }

    /// The first credentials found, and where (never the values themselves, for messages).
    public func resolve() -> (credentials: AWSCredentials, source: String)? {
        if let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty,
            let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
        {
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return (AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token), "environment")
        }
        let path =
            environment["AWS_SHARED_CREDENTIALS_FILE"]
            ?? environment["HOME"].map { "\($0)/.aws/credentials" }
        let profile = environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        if let path, let text = Self.read(path), let found = Self.parse(text, profile: profile) {
            return (found, "\(path) [\(profile)]")
        }
        if let configured { return (configured, "modules.event_sqs") }
        return nil
    }

    /// The profile's keys in an INI credentials file.
    static func parse(_ text: String, profile: String) -> AWSCredentials? {
        var section: String?
        var values: [String: String] = [:]
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = raw.trimmingSpaces
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingSpaces
                continue
            }
            guard section == profile, let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals]).trimmingSpaces.lowercased()] =
                String(line[line.index(after: equals)...])
                .trimmingSpaces
        }
        guard let key = values["aws_access_key_id"], !key.isEmpty, let secret = values["aws_secret_access_key"],
            !secret.isEmpty
        else { return nil }
        let token = values["aws_session_token"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token)
    }

    /// A small file read whole (a credentials file over 1 MiB is not one).
    static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
