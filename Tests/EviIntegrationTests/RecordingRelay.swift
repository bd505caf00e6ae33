import EventInterface
import EventInterfaceTestKit
import Foundation
import Synchronization

/// A loopback TCP relay that records every byte it carries, both ways: what a peer on the path
/// between evi and its server would see (the capture the TLS tests read). Bounded: at most
/// 16 MiB recorded, 64 connections; closed by the test that made it.
final class RecordingRelay: Sendable {
    let port: Int
    private let target: Int
    private let listener: Int32
    private let state = Mutex<(bytes: [UInt8], descriptors: [Int32], closed: Bool)>(([], [], false))

    init(to target: Int) throws {
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard withLoopbackAddress(port: 0, { bind(fd, $0, $1) }) == 0, listen(fd, 16) == 0,
            let port = localPort(of: fd)
        else {
            Glibc.close(fd)
            throw ReceiverError("relay: cannot listen")
        }
        listener = fd
        self.port = port
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// What crossed the relay so far, as text (bytes that are not UTF-8 replaced).
    var captured: String { String(decoding: state.withLock { $0.bytes }, as: UTF8.self) }
    var capturedBytes: [UInt8] { state.withLock { $0.bytes } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let connected = withLoopbackAddress(port: target) { connect(server, $0, $1) } == 0
            let admitted = state.withLock { state -> Bool in
                guard connected, !state.closed, state.descriptors.count < 128 else { return false }
                state.descriptors += [client, server]
                return true
            }
            guard admitted else {
                Glibc.close(client)
                Glibc.close(server)
                continue
            }
            Thread.detachNewThread { [self] in pump(from: client, to: server) }
            Thread.detachNewThread { [self] in pump(from: server, to: client) }
        }
    }

    private func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            state.withLock { state in
                if state.bytes.count < 16 << 20 { state.bytes += buffer[0..<count] }
            }
            var sent = 0
            while sent < count {
                let written = buffer[sent..<count].withUnsafeBytes { write(destination, $0.baseAddress, $0.count) }
                guard written > 0 else { break }
                sent += written
            }
            guard sent == count else { break }
        }
        shutdown(destination, Int32(SHUT_WR))
    }

    func close() {
        let descriptors = state.withLock { state -> [Int32] in
            state.closed = true
            return state.descriptors
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        for fd in descriptors { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// The connections' descriptors go with the relay (the pumps have returned on shutdown).
    deinit {
        for fd in state.withLock({ $0.descriptors }) { Glibc.close(fd) }
    }
}
