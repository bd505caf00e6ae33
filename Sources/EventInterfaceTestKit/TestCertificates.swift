#if canImport(Glibc)
    import Glibc
#endif

/// A test CA with a server certificate for 127.0.0.1 and a client certificate, made with openssl,
/// and a second CA nobody trusts.
public struct TestCertificates: Sendable {
    public let directory = TemporaryDirectory(prefix: "evi-tls")
    public var ca: String { directory.file("ca.pem") }
    public var otherCA: String { directory.file("other-ca.pem") }
    public var serverCert: String { directory.file("server.pem") }
    public var serverKey: String { directory.file("server.key") }
    public var clientCert: String { directory.file("client.pem") }
    public var clientKey: String { directory.file("client.key") }

    public init() async throws {
        let d = directory.path
        let script = """
            set -e
            cd \(d)
            for name in ca other-ca; do
              openssl req -x509 -newkey rsa:2048 -nodes -keyout $name.key -out $name.pem -days 2 -subj "/CN=evi test $name" 2>/dev/null
            done
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=evi test client" 2>/dev/null
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>/dev/null
            chmod 600 *.key
            """
        let child = try ChildProcess(
            executable: "/bin/bash", arguments: ["-c", script], directory: d, outputPath: directory.file("out"),
            errorPath: directory.file("err"))
        guard await child.waitForExit(timeout: .seconds(60)) == 0 else {
            throw ReceiverError("openssl failed: \(child.errors)")
        }
    }
}
