import EventInterface
import NIOSSL
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A TLS profile as the modules' options give it (`ca_file`, `cert_file`, `key_file`, `verify`:
/// event_stream's for `tls:`, event_rabbitmq's and its `tls_domains` for amqps), read once at
/// start: a file that cannot be read, or a key that group or others can read, stops start-up
/// naming the key.
public struct TLSOptions: Sendable, Hashable {
    /// Trusted CAs for the peers evi connects to (default: the system's).
    public var caFile: String?
    /// evi's certificate and key: presented to peers that ask, and required for a `tls:` ingress.
    public var certFile: String?
    public var keyFile: String?
    /// Check the peer's certificate chain and host name (the default).
    public var verify = true

    public init(caFile: String? = nil) { self.caFile = caFile }
}

/// The contexts made from ``TLSOptions``: the client side, and the server side of an ingress.
public struct TLSProfile: Sendable {
    public let client: NIOSSLContext
    /// Only when evi has a certificate and key.
    let certificate: (chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKeySource)?

    public init(options: TLSOptions, key prefix: String) throws(ConfigurationError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = options.verify ? .fullVerification : .none
        do {
            if let caFile = options.caFile {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            var certificate: (chain: [NIOSSLCertificateSource], key: NIOSSLPrivateKeySource)?
            switch (options.certFile, options.keyFile) {
            case (let certFile?, let keyFile?):
                try Self.checkPrivate(keyFile, key: "\(prefix).key_file")
                let chain = try NIOSSLCertificate.fromPEMFile(certFile).map { NIOSSLCertificateSource.certificate($0) }
                let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
                certificate = (chain, key)
                configuration.certificateChain = chain
                configuration.privateKey = key
            case (nil, nil): certificate = nil
            default: throw ConfigurationError("\(prefix): cert_file and key_file go together")
            }
            self.certificate = certificate
            client = try NIOSSLContext(configuration: configuration)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError("\(prefix): TLS files: \(error)")
        }
    }

    /// The server side of a `tls:` ingress, asking clients for a certificate signed by
    /// `clientCAFile` when given.
    public func server(clientCAFile: String?, socket: String) throws(SocketError) -> NIOSSLContext {
        guard let certificate else {
            throw SocketError("a TLS listener needs cert_file and key_file (modules.event_stream): \(socket)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: certificate.chain, privateKey: certificate.key)
        do {
            if let clientCAFile {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAFile))
                configuration.certificateVerification = .noHostnameVerification
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SocketError("tls ingress \(socket): \(error)")
        }
    }

    /// A private key file that group or others can read is refused.
    public static func checkPrivate(_ path: String, key: String) throws(ConfigurationError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ConfigurationError("\(key): cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw ConfigurationError("\(key): \(path) is readable by group or others (chmod 600 it)")
        }
    }
}

/// A TLS profile that SIGHUP reloads: its files are read again, and when they do not make a
/// profile (a missing file, a bad certificate, a key readable by others) the one in use stays and
/// the reason is returned for the log. Connections opened afterwards use what is current.
///
/// Without files (the system's trust roots) the profile is made at the first connection that
/// needs it: loaded, those roots hold 3 MB of heap (heaptrack), which an idle daemon — or one
/// that never opens TLS — should not pay. Files are read at once, so a bad one stops start-up.
/// Modules whose only TLS option is `ca_file` (sqs, webhooks) use it too.
public final class ReloadableTLS: Sendable {
    private struct State {
        var profile: TLSProfile?
        /// Server contexts made from the profile, by client CA file (made once per profile).
        var servers: [String: NIOSSLContext] = [:]
    }

    public let options: TLSOptions
    public let key: String
    private let state: Mutex<State>

    public init(options: TLSOptions, key: String) throws(ConfigurationError) {
        self.options = options
        self.key = key
        state = Mutex(State(profile: try Self.eagerProfile(options: options, key: key)))
    }

    private static func eagerProfile(options: TLSOptions, key: String) throws(ConfigurationError) -> TLSProfile? {
        let hasFiles = options.caFile != nil || options.certFile != nil || options.keyFile != nil
        return hasFiles ? try TLSProfile(options: options, key: key) : nil
    }

    /// The profile in use, made now if it was left for the first use.
    public func current() throws(ConfigurationError) -> TLSProfile {
        try state.withLock { state throws(ConfigurationError) -> TLSProfile in
            if let profile = state.profile { return profile }
            let profile = try TLSProfile(options: options, key: key)
            state.profile = profile
            return profile
        }
    }

    /// The client context of `tls` for a TLS `socket`, made now if it was left for the first use;
    /// refused naming the module's `option` when there is none or it cannot be made.
    public static func client(of tls: ReloadableTLS?, socket: String, option: String) throws(SocketError)
        -> NIOSSLContext
    {
        do throws(ConfigurationError) {
            guard let tls else { throw ConfigurationError("no TLS context") }
            return try tls.current().client
        } catch {
            throw SocketError("TLS is not available (see \(option)): \(socket)")
        }
    }

    /// The server context of a TLS listener asking for certificates from `clientCAFile`.
    public func server(clientCAFile: String?, socket: String) throws(SocketError) -> NIOSSLContext {
        let cacheKey = clientCAFile ?? ""
        if let made = state.withLock({ $0.servers[cacheKey] }) { return made }
        let profile: TLSProfile
        do throws(ConfigurationError) { profile = try current() } catch { throw SocketError("\(error): \(socket)") }
        let made = try profile.server(clientCAFile: clientCAFile, socket: socket)
        state.withLock { $0.servers[cacheKey] = made }
        return made
    }

    /// Reads the files again; nil when the new profile is in use, else why the old one stays.
    public func reload() -> String? {
        do throws(ConfigurationError) {
            let profile = try Self.eagerProfile(options: options, key: key)
            state.withLock { $0 = State(profile: profile) }
            return nil
        } catch {
            return error.description
        }
    }
}
