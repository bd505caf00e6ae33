import Crypto
import EventInterface

/// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL runs it: the client's side of the exchange,
/// pure (the nonce is passed in), so the tests check it against RFC 7677's example.
struct PostgresSCRAM {
    let password: String
    let clientNonce: String
    private(set) var clientFirstBare = ""
    private(set) var expectedServerSignature: [UInt8] = []

    init(password: String, clientNonce: String) {
        self.password = password
        self.clientNonce = clientNonce
        // PostgreSQL takes the user from the startup message; the SCRAM user name is empty.
        clientFirstBare = "n=,r=\(clientNonce)"
    }

    init(user: String, password: String, clientNonce: String) {
        self.init(password: password, clientNonce: clientNonce)
        clientFirstBare = "n=\(user),r=\(clientNonce)"
    }

    var clientFirst: [UInt8] { Array("n,,\(clientFirstBare)".utf8) }

    enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case badNonce
        case serverSignature
        var description: String {
            switch self {
            case .malformed(let what): "malformed SCRAM server message: \(what)"
            case .badNonce: "SCRAM server nonce does not extend the client's"
            case .serverSignature: "SCRAM server signature does not match (not the server we know)"
            }
        }
    }

    /// The client's final message for the server's first (`r=…,s=…,i=…`).
    mutating func clientFinal(serverFirst data: [UInt8]) throws(Failure) -> [UInt8] {
        let serverFirst = String(decoding: data, as: UTF8.self)
        var attributes: [Character: String] = [:]
        for part in serverFirst.split(separator: ",") {
            guard let key = part.first, part.dropFirst().first == "=" else { throw .malformed(serverFirst) }
            attributes[key] = String(part.dropFirst(2))
        }
        guard let nonce = attributes["r"], let saltText = attributes["s"], let salt = Base64.decode(saltText),
            let iterationsText = attributes["i"], let iterations = Int(iterationsText),
            (1...1_000_000).contains(iterations)
        else { throw .malformed(serverFirst) }
        guard nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count else { throw .badNonce }
        let salted = Self.pbkdf2(password: Array(password.utf8), salt: salt, iterations: iterations)
        let clientKey = Self.hmac(salted, "Client Key")
        let storedKey = Array(SHA256.hash(data: clientKey))
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let signature = Self.hmac(storedKey, authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        expectedServerSignature = Self.hmac(Self.hmac(salted, "Server Key"), authMessage)
        return Array("\(withoutProof),p=\(Base64.encode(proof))".utf8)
    }

    /// Checks the server's final message (`v=…`): the server proves it knows the password too.
    func verify(serverFinal data: [UInt8]) throws(Failure) {
        let text = String(decoding: data, as: UTF8.self)
        guard text.hasPrefix("v="), let signature = Base64.decode(String(text.dropFirst(2))) else {
            throw .malformed(text)
        }
        guard signature == expectedServerSignature else { throw .serverSignature }
    }

    static func hmac(_ key: [UInt8], _ text: String) -> [UInt8] { hmac(key, Array(text.utf8)) }

    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    /// PBKDF2-HMAC-SHA256, one block (32 bytes: SCRAM's key length).
    static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var block = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = block
        for _ in 1..<iterations {
            block = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
            for index in result.indices { result[index] ^= block[index] }
        }
        return result
    }

    /// `md5` + hex(md5(hex(md5(password + user)) + salt)): PostgreSQL's MD5 password message.
    static func md5Password(user: String, password: String, salt: [UInt8]) -> String {
        func hex(_ bytes: some Sequence<UInt8>) -> String {
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] }, as: UTF8.self)
        }
        let inner = hex(Insecure.MD5.hash(data: Array((password + user).utf8)))
        return "md5" + hex(Insecure.MD5.hash(data: Array(inner.utf8) + salt))
    }
}
