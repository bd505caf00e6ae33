import EventInterface
import Testing

/// Expects subscribing each socket of `cases` (socket, reason) to `event` to be refused with
/// exactly its reason, as every transport's tests check their socket syntax.
public func expectRefused(
    _ cases: [(String, String)], event: String, by hub: EventHub,
    sourceLocation: SourceLocation = #_sourceLocation
) async {
    for (socket, reason) in cases {
        await #expect(
            throws: EventInterfaceError.badSocket(SocketError(reason)), "\(socket)", sourceLocation: sourceLocation
        ) {
            try await hub.subscribe(event: event, socket: socket)
        }
    }
}
