import EventInterface
import EventNIOSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// The `event_sqs` module options.
public struct SQSOptions: Sendable, Hashable {
    /// The region of a queue whose host names none (a local SQS-protocol server).
    public var region: String?
    /// Credentials used when neither the environment nor the shared credentials file has any.
    public var credentials: AWSCredentials?
    /// Trusted CAs for https queue URLs (default: the system's).
    public var caFile: String?
    /// Connect, and request-to-reply time of one batch.
    public var timeout: Duration = .milliseconds(5000)
    /// How many times a throttled or 5xx request (or an entry the service failed on its side) is
    /// sent again before its events fail.
    public var retries = 2

    public init() {}
}

/// `sqs:QUEUE_URL`: SendMessageBatch over the SQS JSON protocol, signed with Signature Version 4,
/// on one keep-alive connection per subscriber (``HTTPConnection``: SwiftNIO, which evi already
/// uses, rather than async-http-client, whose pool and dependencies a single-origin connection
/// does not need).
public final class SQSTransport: EventTransport {
    public let options: SQSOptions
    let tls: ReloadableTLS?
    let environment: [String: String]
    let group: any EventLoopGroup

    public init(
        options: SQSOptions = SQSOptions(), tls: ReloadableTLS? = nil,
        environment: [String: String] = ProcessEnvironment.current(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.options = options
        self.tls = tls
        self.environment = environment
        self.group = group
    }

    public var scheme: String { "sqs" }

    public func parseSocket(_ address: String, context: SocketParsingContext) async throws(SocketError)
        -> any EventSocket
    {
        let parsed = try SQSAddress.parse(address)
        let socket = parsed.description
        // OpenSIPS dereferences a missing region; evi refuses the socket.
        guard
            let region = parsed.regionInHost ?? options.region
                ?? environment["AWS_REGION"].flatMap({
                    $0.isEmpty ? nil : $0
                })
        else {
            throw SocketError(
                "no region for \(parsed.url.hostPort.host): set modules.event_sqs.region or AWS_REGION: \(socket)")
        }
        guard let found = AWSCredentialChain(environment: environment, configured: options.credentials).resolve()
        else {
            throw SocketError(
                "no AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or modules.event_sqs.access_key_id): \(socket)"
            )
        }
        if parsed.url.isTLS {
            _ = try ReloadableTLS.client(of: tls, socket: socket, option: "modules.event_sqs.ca_file")
        }
        let resolved = try await context.resolve(
            parsed.url.hostPort, socketType: Int32(SOCK_STREAM.rawValue), socket: socket)
        return SQSSocket(
            address: parsed, signer: SigV4(credentials: found.credentials, region: region, service: "sqs"),
            resolved: resolved, transport: self)
    }
}

public struct SQSSocket: DeliverySocket {
    public let address: SQSAddress
    let signer: SigV4
    let resolved: ResolvedAddress
    let transport: SQSTransport

    public var scheme: String { "sqs" }
    public var description: String { address.description }
    public var region: String { signer.region }

    public func matches(_ other: any EventSocket) -> Bool {
        (other as? SQSSocket)?.address == address
    }

    public func makeDeliverer(context: DelivererContext) -> any EventDeliverer {
        SQSDeliverer(
            socket: self,
            connection: HTTPConnection(
                url: address.url, address: resolved,
                tls: address.url.isTLS ? try? transport.tls?.current().client : nil,
                timeout: transport.options.timeout, userAgent: "evi SQS notifier", group: transport.group,
                logger: context.logger),
            retries: transport.options.retries, logger: context.logger)
    }
}

/// A per-event `MessageDeduplicationId`: a random UUID made on first use and kept with the event
/// (the event's encodings cache), so every retry of the event, and every FAILOVER return to
/// this queue, sends the same one.
struct SQSDeduplicationID: PayloadFormat {
    func encode(_ event: RaisedEvent) -> [UInt8] {
        // Two draws of 64 bits (one system call each), not one per byte.
        var generator = SystemRandomNumberGenerator()
        let words = [generator.next() as UInt64, generator.next() as UInt64]
        var bytes = words.flatMap { word in (0..<8).map { UInt8(truncatingIfNeeded: word >> ($0 * 8)) } }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        var text = Array(SigV4.hex(bytes).utf8)
        // 8-4-4-4-12, dashes inserted from the end so earlier offsets stay put.
        for offset in [20, 16, 12, 8] { text.insert(UInt8(ascii: "-"), at: offset) }
        return text
    }
}

final class SQSDeliverer: BatchDeliverer {
    let socket: SQSSocket
    let connection: HTTPConnection
    let retries: Int
    let logger: Logger

    /// SendMessageBatch takes at most 10 entries and 256 KiB of message bodies.
    static let entriesPerBatch = 10
    static let maximumBatchBytes = 256 * 1024

    init(socket: SQSSocket, connection: HTTPConnection, retries: Int, logger: Logger) {
        self.socket = socket
        self.connection = connection
        self.retries = retries
        self.logger = logger
    }

    func prepare(_ event: RaisedEvent) {
        _ = event.payload(.jsonRPC)
    }

    func deliver(batch events: [RaisedEvent]) async -> [DeliveryOutcome] {
        var outcomes = [DeliveryOutcome?](repeating: nil, count: events.count)
        var entries: [SQSBatch.Entry] = []
        for (index, event) in events.enumerated() {
            switch entry(index, event) {
            case .success(let entry): entries.append(entry)
            case .failure(let failure): outcomes[index] = .failed(failure)
            }
        }
        var attempt = 0
        while !entries.isEmpty {
            let batches = SQSBatch.split(entries, count: Self.entriesPerBatch, bytes: Self.maximumBatchBytes)
            let replies = await connection.send(batches.map { request(for: $0) })
            var again: [SQSBatch.Entry] = []
            for (batch, reply) in zip(batches, replies) {
                let verdicts = SQSBatch.verdicts(for: batch, reply: reply)
                for (entry, verdict) in zip(batch, verdicts) {
                    switch verdict {
                    case .delivered: outcomes[entry.index] = .delivered
                    case .failed(let reason):
                        outcomes[entry.index] = .failed(DeliveryFailure(.subscriberFailed, reason))
                    case .retry(let reason):
                        if attempt < retries {
                            again.append(entry)
                        } else {
                            outcomes[entry.index] = .failed(DeliveryFailure(.subscriberFailed, reason))
                        }
                    }
                }
            }
            entries = again
            attempt += 1
            if !entries.isEmpty {
                // 100 ms, 200 ms, 400 ms… (AWS's advice for throttling: back off, then again).
                try? await Task.sleep(for: .milliseconds(100 << min(attempt - 1, 5)))
            }
        }
        return outcomes.map { $0 ?? .failed(DeliveryFailure(.subscriberFailed, "not sent")) }
    }

    private func entry(_ index: Int, _ event: RaisedEvent) -> Result<SQSBatch.Entry, DeliveryFailure> {
        let body = event.payload(.jsonRPC)
        guard body.count <= Self.maximumBatchBytes else {
            return .failure(DeliveryFailure(.subscriberFailed, "message larger than 256 KiB (SQS's limit)"))
        }
        var groupID: String?
        switch socket.address.group {
        case nil: break
        case .constant(let value)?: groupID = value
        case .parameter(let name)?:
            guard case .named(let fields) = event.params, let value = fields.first(where: { $0.name == name })?.value
            else {
                return .failure(DeliveryFailure(.subscriberFailed, "no parameter '\(name)' for the MessageGroupId"))
            }
            if case .string(let text) = value {
                groupID = text
            } else {
                var writer = JSONWriter()
                writer.append(value)
                groupID = String(decoding: writer.bytes, as: UTF8.self)
            }
        }
        let deduplicationID =
            socket.address.isFIFO ? String(decoding: event.payload(SQSDeduplicationID()), as: UTF8.self) : nil
        return .success(SQSBatch.Entry(index: index, body: body, groupID: groupID, deduplicationID: deduplicationID))
    }

    private func request(for batch: [SQSBatch.Entry]) -> HTTPRequest {
        let body = SQSBatch.body(batch, queueURL: socket.address.queueURL)
        let headers: [(name: String, value: String)] = [
            ("Content-Type", "application/x-amz-json-1.0"), ("X-Amz-Target", "AmazonSQS.SendMessageBatch"),
        ]
        let signed = socket.signer.sign(
            method: "POST", authority: socket.address.url.authority, path: "/", headers: headers, body: body,
            amzDate: SigV4.timestamp(time(nil)))
        var httpHeaders = HTTPHeaders(headers)
        httpHeaders.add(contentsOf: signed.headers)
        return HTTPRequest(target: "/", headers: httpHeaders, body: body)
    }

    func close() async {
        await connection.close()
    }
}
