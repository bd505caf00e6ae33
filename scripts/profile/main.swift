// Raises `E_BENCH` N times to loopback UDP receivers through the library, the way `evi bench`
// does, with a synchronous main so that `valgrind --tool=callgrind` can run it:
//   evi-profile udp|parallel3|roundrobin3|failover-dead|mi-http EVENTS
// mi-http raises over MI HTTP (the daemon's NIOHTTP1 server) from 8 keep-alive client threads.
import Dispatch
import EventDatagram
import EventInterface
import EventVirtual
import ManagementInterface
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func load(ordering: AtomicLoadOrdering) -> Int { value.load(ordering: .relaxed) }
    func add(_ amount: Int, ordering: AtomicUpdateOrdering) { value.add(amount, ordering: .relaxed) }
}

/// A loopback UDP receiver counting what arrives (the library's own listener, on its own thread).
final class Receiver: Sendable {
    let count = Counter()
    private let listener: DatagramListener
    var port: Int { listener.port }

    init() throws {
        let count = self.count
        listener = try DatagramListener(socket: "udp:127.0.0.1:0") { _ in count.add(1, ordering: .relaxed) }
    }
}

/// `clients` threads, each with one keep-alive connection, sending `raise_event` requests and
/// reading each reply (to the end of its Content-Length body) before the next.
func raiseOverHTTP(port: Int, requests: Int, clients: Int) {
    let body = #"{"jsonrpc":"2.0","method":"raise_event","params":{"event":"E_BENCH","params":{"str":"hello","num":42}},"id":1}"#
    let request = Array(
        "POST /mi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    let next = Counter()
    let done = DispatchSemaphore(value: 0)
    for _ in 0..<clients {
        detachThread {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            var buffer = [UInt8](repeating: 0, count: 4096)
            while next.value.add(1, ordering: .relaxed).oldValue < requests {
                _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                // The replies here are one small segment each: headers and a 40-byte body.
                _ = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            }
            close(fd)
            done.signal()
        }
    }
    for _ in 0..<clients { done.wait() }
}

func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let semaphore = DispatchSemaphore(value: 0)
    let result = Mutex<Result<T, any Error>?>(nil)
    Task {
        do {
            let value = try await body()
            result.withLock { $0 = .success(value) }
        } catch {
            result.withLock { $0 = .failure(error) }
        }
        semaphore.signal()
    }
    semaphore.wait()
    return try result.withLock { $0 }!.get()
}

let arguments = CommandLine.arguments
let scenario = arguments.count > 1 ? arguments[1] : "udp"
let events = arguments.count > 2 ? Int(arguments[2]) ?? 20_000 : 20_000
let receivers = try (0..<(["parallel3", "roundrobin3"].contains(scenario) ? 3 : 1)).map { _ in try Receiver() }
let sockets = receivers.map { "udp:127.0.0.1:\($0.port)" }
let target: String =
    switch scenario {
    case "parallel3": "virtual:PARALLEL " + sockets.joined(separator: " ")
    case "roundrobin3": "virtual:ROUND-ROBIN " + sockets.joined(separator: " ")
    case "failover-dead": "virtual:FAILOVER unix:/tmp/evi-profile-dead.sock \(sockets[0])"
    default: sockets[0]
    }
let hub = EventHub(
    transports: [UDPTransport(), UnixTransport(), VirtualTransport()],
    configuration: .init(queueSize: max(10_000, events)))
let event = try hub.publish("E_BENCH")
try blocking { try await hub.subscribe(event: "E_BENCH", socket: target) }
let expected = events * (scenario == "parallel3" ? 3 : 1)
let started = monotonicNanoseconds()
if scenario == "mi-http" {
    let mi = ManagementInterface()
    mi.registerEventCommands(hub: hub, server: MIServerInfo(version: "profile"))
    let server = try blocking {
        try await MIHTTPServer.bind(
            host: "127.0.0.1", port: 0, group: MultiThreadedEventLoopGroup.singleton, mi: mi, metrics: { [] },
            logger: hub.logger)
    }
    raiseOverHTTP(port: server.localPort, requests: events, clients: 8)
} else {
    for _ in 0..<events { try hub.raise(event, ["str": "hello", "num": 42]) }
}
let raised = monotonicNanoseconds()
var waited = 0
while receivers.reduce(0, { $0 + $1.count.load(ordering: .relaxed) }) < expected, waited < 20_000 {
    usleep(1000)
    waited += 1
}
let ended = monotonicNanoseconds()
let received = receivers.reduce(0) { $0 + $1.count.load(ordering: .relaxed) }
print("\(scenario): \(events) events, \(received)/\(expected) datagrams, raise loop \((raised - started) / UInt64(events)) ns/event, all \(Double(ended - started) / 1e9) s")
exit(0)
