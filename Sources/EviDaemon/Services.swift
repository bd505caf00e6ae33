import EventInterface
import EventSpool
import Logging
import ManagementInterface
import ServiceLifecycle
import UnixSignals

/// Serves MI until graceful shutdown, which closes the listeners (no new requests).
package struct MIService: Service {
    package let http: MIHTTPServer?
    package let datagram: MIDatagramServer?

    package var running: @Sendable () -> Void = {}

    package func run() async throws {
        running()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                if let http { group.addTask { try await http.run() } }
                if let datagram { group.addTask { try await datagram.run() } }
            }
        } onGracefulShutdown: {
            http?.channel.close(promise: nil)
            datagram?.channel.close(promise: nil)
        }
    }
}

/// Holds the hub; on graceful shutdown delivers what is queued for the grace period, then closes.
package struct HubService: Service {
    package let hub: EventHub
    /// Closed first on shutdown: no event comes in while the queues drain.
    package let ingresses: [any EventIngress]
    /// Synced a last time once the subscribers are closed.
    package let spool: Spool?
    /// Disconnected last.
    package let state: (any DaemonStateStore)?
    /// Told that the daemon drains (`/ready` and `/mi` answer 503 until the listeners close).
    package let mi: ManagementInterface
    package let grace: Double

    package let logger: Logger

    package func run() async throws {
        // Expired subscriptions of events nobody raises are closed within a second.
        let sweeper = Task { [hub] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                hub.sweepExpired()
            }
        }
        try? await gracefulShutdown()
        mi.markReadiness(.draining)
        sweeper.cancel()
        for ingress in ingresses { await ingress.close() }
        logger.info("stopping: delivering what is queued", metadata: ["grace_seconds": "\(grace)"])
        let before = hub.statistics.snapshot().transports.values
        await hub.shutdown(grace: .milliseconds(Int(grace * 1000)))
        spool?.stop()
        await state?.stop()
        let after = hub.statistics.snapshot().transports.values
        func total(
            _ counts: some Sequence<StatisticsSnapshot.Transport>, _ field: (StatisticsSnapshot.Transport) -> Int
        )
            -> Int
        { counts.reduce(0) { $0 + field($1) } }
        logger.info(
            "stopped",
            metadata: [
                "delivered_during_drain": "\(total(after, \.delivered) - total(before, \.delivered))",
                "abandoned": "\(total(after, \.abandoned))",
            ])
    }
}

/// SIGHUP: every module's `hangup()` (flatstore reopens its files: logrotate's "move, then
/// signal").
package struct HangupService: Service {
    package let modules: [any EventModule]
    package let logger: Logger

    package func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withGracefulShutdownHandler {
            for await _ in hangups.cancelOnGracefulShutdown() {
                logger.info("SIGHUP: modules reopen what they hold")
                for module in modules { await module.hangup() }
            }
        } onGracefulShutdown: {
        }
    }
}
