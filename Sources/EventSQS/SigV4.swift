import Crypto
import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

/// AWS credentials. Printed redacted: they never reach a log, a metric or an MI reply.
public struct AWSCredentials: Sendable, Hashable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String { "AWSCredentials(\(accessKeyID.prefix(4))…, secret redacted)" }
}

/// AWS Signature Version 4 (the `Authorization` header form), pure: the time is passed in, so the
/// tests compare canonical requests and signatures with botocore's for the same inputs.
public struct SigV4: Sendable {
    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// Everything a signature is made of, kept for the known-answer tests.
    public struct Signed: Sendable, Equatable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        /// The headers to add to the request: `X-Amz-Date`, `Authorization`, and
        /// `X-Amz-Security-Token` with temporary credentials.
        public var headers: [(name: String, value: String)]

        public static func == (lhs: Signed, rhs: Signed) -> Bool {
            lhs.canonicalRequest == rhs.canonicalRequest && lhs.stringToSign == rhs.stringToSign
                && lhs.signature == rhs.signature
        }
    }

    /// Signs a request. `headers` are those sent besides `Host` (given as `authority`), all of
    /// which are signed; `amzDate` is `YYYYMMDD'T'HHMMSS'Z'` (``SigV4/timestamp(_:)``).
    public func sign(
        method: String, authority: String, path: String, query: String = "", headers: [(name: String, value: String)],
        body: [UInt8], amzDate: String
    ) -> Signed {
        var signedHeaders = headers.map { (name: $0.name.lowercased(), value: Self.trim($0.value)) }
        signedHeaders.append((name: "host", value: authority))
        signedHeaders.append((name: "x-amz-date", value: amzDate))
        if let token = credentials.sessionToken { signedHeaders.append((name: "x-amz-security-token", value: token)) }
        signedHeaders.sort { $0.name < $1.name }
        let names = signedHeaders.map(\.name).joined(separator: ";")
        let canonicalRequest = [
            method,
            Self.canonicalPath(path),
            Self.canonicalQuery(query),
            signedHeaders.map { "\($0.name):\($0.value)\n" }.joined(),
            names,
            Self.hex(SHA256.hash(data: body)),
        ].joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        var key = SymmetricKey(data: Array("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
        var added: [(name: String, value: String)] = [("X-Amz-Date", amzDate)]
        if let token = credentials.sessionToken { added.append(("X-Amz-Security-Token", token)) }
        added.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(names), Signature=\(signature)"
            ))
        return Signed(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature, headers: added)
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` for a time in seconds since 1970 (UTC).
    public static func timestamp(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ digest: SHA256.Digest) -> String { hex(Array(digest)) }
    static func hex(_ code: HMAC<SHA256>.MAC) -> String { hex(Array(code)) }

    /// Header values as AWS canonicalizes them: trimmed, inner runs of spaces made one.
    static func trim(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    /// Each path segment percent-encoded (unreserved characters kept), as botocore does.
    static func canonicalPath(_ path: String) -> String {
        let path = path.isEmpty ? "/" : path
        return path.split(separator: "/", omittingEmptySubsequences: false).map { encode(String($0)) }
            .joined(separator: "/")
    }

    /// `a=1&b=2`, sorted by name then value, each side percent-encoded.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { pair -> (String, String) in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = encode(PercentEncoding.decode(String(parts[0])))
            let value = parts.count > 1 ? encode(PercentEncoding.decode(String(parts[1]))) : ""
            return (name, value)
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(
            separator: "&")
    }

    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let digits = Array("0123456789ABCDEF")
                out += "%\(digits[Int(byte >> 4)])\(digits[Int(byte & 0x0F)])"
            }
        }
        return out
    }

}
