// Raises `E_BENCH` N times to loopback UDP receivers through the library, the way `evi bench`
// does, with a synchronous main so that `valgrind --tool=callgrind` can run it:
//   evi-profile udp|parallel3|roundrobin3|failover-dead EVENTS
import Dispatch
import EventDatagram
import EventInterface
import EventVirtual
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func load(ordering: AtomicLoadOrdering) -> Int { value.load(ordering: .relaxed) }
    func add(_ amount: Int, ordering: AtomicUpdateOrdering) { value.add(amount, ordering: .relaxed) }
}

final class Receiver: @unchecked Sendable {
    let port: Int
    let descriptor: Int32
    let count = Counter()

    init() {
        let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var size: Int32 = 16 << 20
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let count = self.count
        detachThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 2048)
            while true {
                let got = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
                if got > 0 { count.add(1, ordering: .relaxed) }
            }
        }
    }
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
let receivers = (0..<(["parallel3", "roundrobin3"].contains(scenario) ? 3 : 1)).map { _ in Receiver() }
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
for _ in 0..<events { try hub.raise(event, ["str": "hello", "num": 42]) }
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
