import ArgumentParser
import EventInterface
import EventWebhook
import EviDaemon
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

extension Bench {
    /// webhook: events raised in-process to one `https://` subscriber, signed (Standard Webhooks),
    /// answered by an in-process keep-alive HTTPS receiver with a certificate made at start by
    /// openssl; counted once answered 200. The floor, in the same run and when `wrk` is
    /// installed: wrk's POSTs of the same body to the same receiver (8 connections).
    func measureWebhook() async throws -> (fields: [EventField], ratio: Double) {
        let directory = "/tmp/evi-bench-hook-\(getpid())"
        _ = mkdir(directory, 0o700)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.makeCertificate(directory: directory)
        let receiver = try HTTPBenchReceiver(tls: (directory + "/cert.pem", directory + "/key.pem"))
        defer { receiver.close() }
        var options = WebhookOptions()
        options.caFile = directory + "/cert.pem"
        options.secret = try WebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key: "bench")
        let url = "https://127.0.0.1:\(receiver.port)/hook"
        let fields = try await measureOneSubscriber(
            socket: url, transport: "https", modules: [WebhookModule(options: options)])
        var result: [EventField] = [EventField("scenario", .string("webhook"))] + fields
        result.append(EventField("requests_answered", .int(Int64(receiver.answered))))
        var ratio = 1.0
        if let floor = Self.wrk(url: url, body: Self.payload, connections: 8, threads: 1, directory: directory)?
            .requestsPerSecond
        {
            result.append(EventField("floor_wrk_requests_per_second", .double(floor.rounded())))
            if let rate = fields.first(where: { $0.name == "events_per_second" }), case .double(let value) = rate.value
            {
                ratio = value / floor
                result.append(EventField("vs_floor_percent", .double((ratio * 100).rounded())))
            }
        } else {
            result.append(EventField("floor_wrk", .string("not measured (apt-get install wrk)")))
        }
        return (result, ratio)
    }

    /// A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in `directory`).
    static func makeCertificate(directory: String) throws {
        let made = Process()
        made.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        made.arguments = [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/key.pem", "-out",
            directory + "/cert.pem", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ]
        made.standardError = FileHandle.nullDevice
        try made.run()
        made.waitUntilExit()
        guard made.terminationStatus == 0 else { throw ValidationError("openssl could not make a certificate") }
    }

    /// What wrk (an independent client) gets POSTing `body` as JSON to `url` for `seconds`:
    /// requests/s and the p99 latency in µs; nil without wrk (`apt-get install wrk`).
    static func wrk(
        url: String, body bytes: [UInt8], connections: Int, threads: Int, seconds: Int = 3, directory: String
    ) -> (requestsPerSecond: Double, p99Microseconds: Double?)? {
        guard
            let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { return nil }
        let script = directory + "/post.lua"
        // A Lua single-quoted string: backslashes and quotes escaped.
        let body = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "'", with: "\\'")
        try? """
        wrk.method = "POST"
        wrk.body = '\(body)'
        wrk.headers["Content-Type"] = "application/json"
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let run = Process()
        run.executableURL = URL(fileURLWithPath: wrk)
        run.arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, url]
        let pipe = Pipe()
        run.standardOutput = pipe
        run.standardError = FileHandle.nullDevice
        guard (try? run.run()) != nil else { return nil }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.waitUntilExit()
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let line = lines.first(where: { $0.hasPrefix("Requests/sec:") }),
            let rate = Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces))
        else { return nil }
        // "99%    2.22ms" (wrk prints us, ms or s).
        let p99 = lines.first(where: { $0.hasPrefix("99%") }).flatMap { line -> Double? in
            let value = line.dropFirst(3).trimmingCharacters(in: .whitespaces)
            for (unit, scale) in [("us", 1.0), ("ms", 1000.0), ("s", 1_000_000.0)] where value.hasSuffix(unit) {
                return Double(value.dropLast(unit.count)).map { $0 * scale }
            }
            return nil
        }
        return (rate, p99)
    }
}

/// A keep-alive HTTP server (HTTPS with `tls`) that answers every request 200 with `reply`
/// (HTTP/1.1, pipelining as NIO's server pipeline allows), counting requests: the webhook
/// scenario's receiver, and the bare NIOHTTP1 server the mi-http scenario compares evi's MI with.
final class HTTPBenchReceiver: @unchecked Sendable {
    let port: Int
    private let channel: any Channel
    private let count = ManagedAtomicCounter()

    var answered: Int { count.value }

    init(tls: (certificate: String, key: String)?, reply: [UInt8] = []) throws {
        var context: NIOSSLContext?
        if let tls {
            let configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(tls.certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem)))
            context = try NIOSSLContext(configuration: configuration)
        }
        let count = self.count
        let tlsContext = context
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Answerer(count: count, reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = channel.localAddress?.port ?? 0
    }

    final class Answerer: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let count: ManagedAtomicCounter
        let reply: [UInt8]
        init(count: ManagedAtomicCounter, reply: [UInt8]) {
            self.count = count
            self.reply = reply
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            count.increment()
            var headers: HTTPHeaders = ["Content-Length": String(reply.count)]
            if !reply.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if !reply.isEmpty {
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: reply)))), promise: nil)
            }
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }
    }

    func close() { channel.close(promise: nil) }
}

/// A counter several event loops add to.
final class ManagedAtomicCounter: Sendable {
    private let storage = Atomic<Int>(0)
    func increment() { storage.add(1, ordering: .relaxed) }
    var value: Int { storage.load(ordering: .relaxed) }
}
