import ArgumentParser
import EventInterface
import EventWebhook
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
        let receiver = try WebhookBenchReceiver(certificate: directory + "/cert.pem", key: directory + "/key.pem")
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
        if let floor = Self.wrkFloor(url: url, directory: directory) {
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

    /// Requests/s wrk gets POSTing the bench's notification to `url` for 3 s, or nil without wrk.
    static func wrkFloor(url: String, directory: String) -> Double? {
        guard
            let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { return nil }
        let script = directory + "/post.lua"
        let body = String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "'", with: "\\'")
        try? """
        wrk.method = "POST"
        wrk.body = '\(body)'
        wrk.headers["Content-Type"] = "application/json"
        """.write(toFile: script, atomically: true, encoding: .utf8)
        let run = Process()
        run.executableURL = URL(fileURLWithPath: wrk)
        run.arguments = ["-t1", "-c8", "-d3s", "-s", script, url]
        let pipe = Pipe()
        run.standardOutput = pipe
        run.standardError = FileHandle.nullDevice
        guard (try? run.run()) != nil else { return nil }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        run.waitUntilExit()
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") }) else {
            return nil
        }
        return Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces))
    }
}

/// A keep-alive HTTPS server that answers every request 200 with an empty body (HTTP/1.1,
/// pipelining as NIO's server pipeline allows), counting requests.
final class WebhookBenchReceiver: @unchecked Sendable {
    let port: Int
    private let channel: any Channel
    private let count = ManagedAtomicCounter()

    var answered: Int { count.value }

    init(certificate: String, key: String) throws {
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        let context = try NIOSSLContext(configuration: configuration)
        let count = self.count
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Answerer(count: count))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = channel.localAddress?.port ?? 0
    }

    final class Answerer: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let count: ManagedAtomicCounter
        init(count: ManagedAtomicCounter) { self.count = count }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            count.increment()
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "0"])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
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
