import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import Foundation
import Testing

/// Filters, field lists and HASH through the real daemon (Docs/filters.md, Docs/virtual.md):
/// over udp, SSE, after a restart from the state directory, from the configuration file, on a
/// second cluster node and with opensips-cli.
@Suite(.serialized) struct RoutingTests {
    static func call(_ daemon: Daemon, _ method: String, _ params: String) throws -> String {
        try daemon.mi(#"{"jsonrpc":"2.0","method":"\#(method)","params":\#(params),"id":1}"#)
    }

    @Test func aFilteredSubscriptionSurvivesARestartAndSSEFiltersToo() async throws {
        try await withTeardown { teardown in
            let state = TemporaryDirectory(prefix: "evi-routing-state")
            teardown.add { state.remove() }
            let config = "state: \(state.path)\nevents: [E_R]\n"
            let first = try await Daemon.start(extra: config, state: state.path)
            teardown.add { await first.stop() }
            var daemon = first
            let receiver = try DatagramReceiver()
            teardown.add { await receiver.close() }
            let subscribed = try Self.call(
                daemon, "evi:subscribe",
                #"{"event":"E_R","socket":"\#(receiver.socket)","filter":"callid=keep*","fields":"n,callid"}"#)
            #expect(subscribed.contains(#""result":"OK""#), "\(subscribed)")
            let stream = try SSEReaders(port: daemon.httpPort, query: "event=E_R&filter=callid%3Ddrop%2A", clients: 1)
            #expect(
                await eventually {
                    (try? Self.call(daemon, "evi:subscribers", #"["E_R"]"#))?.contains("sse:") == true
                })
            _ = try Self.call(daemon, "evi:raise", #"["E_R",{"callid":"keep-1","n":1,"aor":"a"}]"#)
            _ = try Self.call(daemon, "evi:raise", #"["E_R",{"callid":"drop-1","n":2,"aor":"b"}]"#)
            #expect(
                await receiver.waitFor(count: 1) == [
                    #"{"jsonrpc":"2.0","method":"E_R","params":{"n":1,"callid":"keep-1"}}"#
                ])
            #expect(await eventually { stream.received == [1] })
            #expect(stream.firstText.contains(#""callid":"drop-1""#))
            #expect(!stream.firstText.contains("keep-1"))
            stream.close()
            // Restarted on the same state directory: the filter and fields came back.
            await daemon.stop()
            daemon = try await Daemon.start(extra: config, state: state.path)
            let second = daemon
            teardown.add { await second.stop() }
            let listing = try Self.call(daemon, "evi:subscribers", #"["E_R","\#(receiver.socket)"]"#)
            #expect(listing.contains(#""filter":"callid=keep*","fields":["n","callid"]"#), "\(listing)")
            _ = try Self.call(daemon, "evi:raise", #"["E_R",{"callid":"drop-2","n":3}]"#)
            _ = try Self.call(daemon, "evi:raise", #"["E_R",{"callid":"keep-2","n":4}]"#)
            #expect(numbered(await receiver.waitFor(count: 2)) == [1, 4])
        }
    }

    @Test func theConfigurationFileTakesFiltersFieldsAndHash() async throws {
        try await withTeardown { teardown in
            let receivers = try (0..<3).map { _ in try DatagramReceiver() }
            teardown.add { for receiver in receivers { await receiver.close() } }
            let hash = "virtual:HASH(callid) " + receivers.map(\.socket).joined(separator: " ")
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_R]
                    subscriptions:
                      - event: E_R
                        socket: "\(hash)"
                        filter: "n!=0"
                        fields: [callid, n]
                    """)
            teardown.add { await daemon.stop() }
            let listing = try Self.call(daemon, "evi:subscribers", #"["E_R"]"#)
            #expect(listing.contains(#""filter":"n!=0","fields":["callid","n"]"#), "\(listing)")
            #expect(listing.contains(hash))
            for number in 0..<60 {
                _ = try Self.call(
                    daemon, "evi:raise", #"["E_R",{"n":\#(number),"callid":"c\#(number % 6)","x":true}]"#)
            }
            #expect(await eventually { receivers.map(\.count).reduce(0, +) == 59 })
            // Each call's events on one member, in raise order, with only the fields asked for.
            var owner: [String: Int] = [:]
            for (index, receiver) in receivers.enumerated() {
                for message in receiver.messages {
                    #expect(!message.contains(#""x""#))
                    let call = String(message.split(separator: "\"")[13])
                    #expect(owner[call, default: index] == index, "\(call) on two members")
                    owner[call] = index
                }
                let numbers = numbered(receiver.messages)
                #expect(numbers == numbers.sorted())
            }
            #expect(owner.count == 6)
            // A bad filter in the file stops the start with the key and the reason.
            let bad = try EviProcess(
                ["serve"],
                config:
                    "mi: { http: 127.0.0.1:0, datagram: off }\nstate: memory\nevents: [E_R]\nsubscriptions: [{event: E_R, socket: \"udp:127.0.0.1:9\", filter: \"callid\"}]\n"
            )
            teardown.add { await bad.stop() }
            #expect(await bad.waitForExit() != 0)
            #expect(
                bad.standardError.contains(
                    "subscriptions[0].filter: condition 1 ('callid'): no '=' or '!=' (conditions are NAME=GLOB or NAME!=GLOB)"
                ), "\(bad.standardError)")
        }
    }

    @Test func aFilterMadeOnOneClusterNodeHoldsOnAnother() async throws {
        try await withTeardown { teardown in
            let url = try await ClusterTests.database("evi_routing_filter")
            let a = try await ClusterTests.node("A", url: url)
            teardown.add { await a.stop() }
            let b = try await ClusterTests.node("B", url: url)
            teardown.add { await b.stop() }
            let receiver = try DatagramReceiver()
            teardown.add { await receiver.close() }
            let subscribed = try Self.call(
                a, "evi:subscribe", #"["E_CL","\#(receiver.socket)",3600,"n=[24]","n"]"#)
            #expect(subscribed.contains(#""result":"OK""#), "\(subscribed)")
            #expect(
                await eventually {
                    (try? Self.call(b, "evi:subscribers", #"["E_CL"]"#))?.contains(#""filter":"n=[24]""#) == true
                })
            for number in 1...4 { _ = try Self.call(b, "evi:raise", #"["E_CL",{"n":\#(number),"y":1}]"#) }
            #expect(
                await receiver.waitFor(count: 2) == [
                    #"{"jsonrpc":"2.0","method":"E_CL","params":{"n":2}}"#,
                    #"{"jsonrpc":"2.0","method":"E_CL","params":{"n":4}}"#,
                ])
            // Too large for a notification: refused before anything changes.
            // 4,000 escaped backslashes: 4,002 bytes of filter, each backslash escaped twice over
            // in the notification (once in the attributes' JSON, once in the payload's).
            let backslashes = String(repeating: "\\", count: 8000)
            let refused = try Self.call(a, "evi:subscribe", #"["E_CL","udp:127.0.0.1:9",3600,"z=\#(backslashes)"]"#)
            #expect(refused.contains(#""code":400"#) && refused.contains("too large"), "\(refused.prefix(300))")
            #expect(!(try Self.call(a, "evi:subscribers", #"["E_CL"]"#)).contains("udp:127.0.0.1:9\""))
        }
    }
}
