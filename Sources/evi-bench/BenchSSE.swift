import ArgumentParser
import EventInterface
import EviDaemon
import Foundation
import Logging
import Prometheus
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension Bench {
    /// sse: `--clients` raw SSE readers on `GET /events?event=E_BENCH` of an in-process daemon's
    /// MI listener, read by one thread with poll(2); events raised in-process (at `--rate`, 1,000/s
    /// unless given); deliveries/s across all clients, raise-to-arrival latency at the first
    /// client, peak RSS of the whole process (daemon and readers).
    func measureSSE() async throws -> (fields: [EventField], ratio: Double) {
        var logger = Logger(label: "evi-bench")
        logger.logLevel = .critical
        let directory = "/tmp/evi-bench-\(getpid())"
        _ = mkdir(directory, 0o700)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = try benchConfiguration(directory: directory)
        configuration.miHTTP = ListenAddress(host: "127.0.0.1", port: 0)
        configuration.miLimits.maxStreamClients = max(clients + 10, 2000)
        let daemon = await Daemon.startOrExit(
            configuration, registry: PrometheusCollectorRegistry(), logger: logger)
        guard let port = daemon.http?.localPort else { throw ValidationError("the MI listener did not start") }
        let hub = daemon.hub
        let event = try hub.publish("E_BENCH")
        let readers = try BenchSSEReaders(port: port, clients: clients, events: events)
        defer { readers.stop() }
        for _ in 0..<3000 where ((try? hub.subscribers(of: "E_BENCH").count) ?? 0) < clients {
            try await Task.sleep(for: .milliseconds(10))
        }
        let subscribed = (try? hub.subscribers(of: "E_BENCH").count) ?? 0
        guard subscribed == clients else {
            throw ValidationError("only \(subscribed) of \(clients) clients subscribed")
        }
        let raisedAt = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: events)
        defer { raisedAt.deallocate() }
        let stamps = MIHTTPLoad.UncheckedBuffer(raisedAt)
        let interval = UInt64(1_000_000_000 / max(1, rate ?? 1000))
        let started = monotonicNanoseconds()
        let (count, hubRef) = (events, hub)
        detachThread {
            Self.raiseFromThisThread(
                event, on: hubRef, count: count, interval: interval, started: started, stamps: stamps)
        }
        let expected = clients * events
        let deadline = ContinuousClock.now + .seconds(Double(events) / Double(rate ?? 1000) + 30)
        while readers.total < expected, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let ended = readers.lastArrival
        let received = readers.total
        let seconds = Double(ended - started) / 1e9
        var latencies: [UInt64] = []
        let arrivals = readers.firstClientArrivals
        for index in 0..<min(arrivals.count, events) where arrivals[index] >= raisedAt[index] {
            latencies.append(arrivals[index] - raisedAt[index])
        }
        latencies.sort()
        let rss = Self.peakRSS()
        await hub.shutdown(grace: .seconds(1))
        try? await daemon.http?.channel.close()
        let fields: [EventField] = [
            EventField("scenario", .string("sse")),
            EventField("clients", .int(Int64(clients))),
            EventField("events", .int(Int64(events))),
            EventField("rate", .int(Int64(rate ?? 1000))),
            EventField("seconds", .double((seconds * 1e6).rounded() / 1e6)),
            EventField("deliveries", .int(Int64(received))),
            EventField("lost", .int(Int64(expected - received))),
            EventField("deliveries_per_second", .double((Double(received) / seconds).rounded())),
            EventField("latency_p50_us", .double(Self.percentile(latencies, 0.5))),
            EventField("latency_p99_us", .double(Self.percentile(latencies, 0.99))),
            EventField("rss_bytes", .int(Int64(rss))),
        ]
        return (fields, 1)
    }
}

/// `clients` SSE connections read by one thread: counts every `data: {` and stamps the first
/// client's arrivals.
final class BenchSSEReaders: @unchecked Sendable {
    private let fds: [Int32]
    private let lock = NSLock()
    private var count = 0
    private var last: UInt64 = 0
    private var first: [UInt64] = []
    private let running = Atomic<Bool>(true)
    private let done = DispatchSemaphore(value: 0)

    init(port: Int, clients: Int, events: Int) throws {
        var opened: [Int32] = []
        for _ in 0..<clients {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0 else {
                for fd in opened { close(fd) }
                close(fd)
                throw ValidationError("cannot open SSE client \(opened.count + 1): \(String(cString: strerror(errno)))")
            }
            let request = "GET /events?event=E_BENCH HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n"
            _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            opened.append(fd)
        }
        fds = opened
        first.reserveCapacity(events)
        Thread.detachNewThread { [self] in self.read() }
    }

    private func read() {
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        // "data: {" split over two reads is counted by the carry of the previous read's tail.
        var carry = Array(repeating: (UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0)), count: fds.count)
        while running.load(ordering: .relaxed) {
            guard poll(&polls, nfds_t(polls.count), 100) > 0 else { continue }
            for index in polls.indices where polls[index].revents != 0 {
                let got = recv(polls[index].fd, &buffer, buffer.count, 0)
                if got <= 0 {
                    polls[index].fd = -1
                    continue
                }
                let now = monotonicNanoseconds()
                var found = 0
                var window = carry[index]
                for position in 0..<got {
                    let byte = buffer[position]
                    if byte == 0x7B, window == (0x64, 0x61, 0x74, 0x61, 0x3A, 0x20) { found += 1 }  // "data: {"
                    window = (window.1, window.2, window.3, window.4, window.5, byte)
                }
                carry[index] = window
                guard found > 0 else { continue }
                lock.withLock {
                    count += found
                    last = now
                    if index == 0 { for _ in 0..<found { first.append(now) } }
                }
            }
        }
        done.signal()
    }

    var total: Int { lock.withLock { count } }
    var lastArrival: UInt64 { lock.withLock { last } }
    var firstClientArrivals: [UInt64] { lock.withLock { first } }

    func stop() {
        running.store(false, ordering: .relaxed)
        done.wait()
        for fd in fds { close(fd) }
    }
}
