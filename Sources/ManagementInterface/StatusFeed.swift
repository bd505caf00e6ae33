import NIOCore
import NIOHTTP1
import Synchronization

/// The status page's stream (`GET /status/stream`) for every page open at once: one snapshot is
/// rendered per tick and the same bytes written to each page, so the cost does not grow with the
/// number of pages (rendering per page, 20 pages over 10,000 subscriptions took half a core). A
/// page that has not taken the last snapshot yet is skipped for this one: a page that does not
/// read holds one snapshot, not one a tick.
final class StatusFeed: Sendable {
    private struct Page {
        let channel: any Channel
        var writing = false
    }

    private struct State {
        var pages: [ObjectIdentifier: Page] = [:]
        var running = false
        /// The last snapshot, for a page that opens between two ticks.
        var last: ByteBuffer?
    }

    let interval: Duration
    private let render: @Sendable () async -> [UInt8]
    private let state = Mutex(State())

    init(interval: Duration = .milliseconds(500), render: @escaping @Sendable () async -> [UInt8]) {
        self.interval = interval
        self.render = render
    }

    /// Pages open now.
    var count: Int { state.withLock { $0.pages.count } }

    /// Adds a page (its SSE head already sent): it gets the last snapshot at once, and every
    /// following one.
    func add(_ channel: any Channel) {
        let (start, last) = state.withLock { state -> (Bool, ByteBuffer?) in
            state.pages[ObjectIdentifier(channel)] = Page(channel: channel)
            defer { state.running = true }
            return (!state.running, state.last)
        }
        if let last { send(last, to: [channel]) }
        if start { Task { await self.run() } }
    }

    func remove(_ channel: any Channel) {
        _ = state.withLock { $0.pages.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    private func run() async {
        while true {
            let open = state.withLock { state -> Bool in
                if state.pages.isEmpty {
                    state.running = false
                    state.last = nil
                }
                return state.running
            }
            guard open else { return }
            let snapshot = await render()
            var buffer = ByteBufferAllocator().buffer(capacity: snapshot.count + 8)
            buffer.writeString("data: ")
            buffer.writeBytes(snapshot)
            buffer.writeString("\n\n")
            let ready = state.withLock { state -> [any Channel] in
                state.last = buffer
                var ready: [any Channel] = []
                for (key, page) in state.pages where !page.writing {
                    state.pages[key]?.writing = true
                    ready.append(page.channel)
                }
                return ready
            }
            send(buffer, to: ready, marked: true)
            try? await Task.sleep(for: interval)
        }
    }

    /// Writes the snapshot to each channel on its event loop; with `marked`, the page is ready
    /// for the next one once the kernel has taken this.
    private func send(_ buffer: ByteBuffer, to channels: [any Channel], marked: Bool = false) {
        for channel in channels {
            let written = channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)))
            guard marked else { continue }
            written.whenComplete { _ in
                self.state.withLock { $0.pages[ObjectIdentifier(channel)]?.writing = false }
            }
        }
    }
}
