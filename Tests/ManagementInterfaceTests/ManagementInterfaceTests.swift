import EventDatagram
import EventDatagramTestKit
import EventInterface
import EventInterfaceTestKit
import EventVirtual
import ManagementInterface
import Testing

/// Every command and error of Docs/mi.md, request body in, exact reply body out.
@Suite struct ManagementInterfaceTests {
    let clock = ManualClock()
    let hub: EventHub
    let mi = ManagementInterface()

    init() throws {
        hub = EventHub(transports: [UDPTransport(), UnixTransport(), VirtualTransport()], clock: clock)
        try hub.publish("E_MY_EVENT")
        try hub.publish("E_MY_EVENT2")
        mi.registerEventCommands(hub: hub, server: MIServerInfo(version: "test", processes: { ["main", "MI HTTP"] }))
    }

    func call(_ body: String, origin: ManagementInterface.Origin = .http) async -> String? {
        await mi.reply(to: Array(body.utf8), origin: origin).map { String(decoding: $0, as: UTF8.self) }
    }

    func expectReply(_ body: String, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        let reply = await call(body)
        #expect(reply == expected, "request: \(body)", sourceLocation: sourceLocation)
    }

    func ok(_ id: String = "1") -> String { #"{"jsonrpc":"2.0","result":"OK","id":\#(id)}"# }

    @Test func jsonRPCEnvelopeErrors() async {
        await expectReply("{nope", #"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#)
        await expectReply("42", #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"nope","id":3}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":3}"#)
        await expectReply(
            #"{"jsonrpc":"1.0","method":"which","id":3}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":3}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"which","params":5,"id":3}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":3}"#)
        await expectReply("[]", #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#)
    }

    @Test func idsAreEchoedWhateverTheirType() async {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:publish","params":["E_MY_EVENT"],"id":"abc"}"#,
            #"{"jsonrpc":"2.0","result":{"name":"E_MY_EVENT","id":2},"id":"abc"}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:publish","params":["E_MY_EVENT"],"id":null}"#,
            #"{"jsonrpc":"2.0","result":{"name":"E_MY_EVENT","id":2},"id":null}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:publish","params":["E_MY_EVENT"],"id":7}"#,
            #"{"jsonrpc":"2.0","result":{"name":"E_MY_EVENT","id":2},"id":7}"#)
    }

    @Test func notificationsAreRunButNotAnswered() async throws {
        #expect(await call(#"{"jsonrpc":"2.0","method":"evi:publish","params":["E_NEW"]}"#) == nil)
        #expect(hub.event(named: "E_NEW") != nil)
    }

    @Test func batchesAreAnsweredWithAnArray() async {
        await expectReply(
            #"[{"jsonrpc":"2.0","method":"evi:publish","params":["E_B"],"id":1},{"jsonrpc":"2.0","method":"evi:publish","params":["E_C"]},{"jsonrpc":"2.0","method":"nope","id":2}]"#,
            #"[{"jsonrpc":"2.0","result":{"name":"E_B","id":4},"id":1},{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":2}]"#
        )
    }

    @Test func subscribeAcceptsNamedPositionalAndNumericStringExpire() async throws {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9001"}}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9002","120"]}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9003",60]}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1,"params":{"event":"E_MY_EVENT"}}"#,
            #"{"jsonrpc":"2.0","result":{"Event":{"name":"E_MY_EVENT","id":2,"Subscribers":[{"socket":"udp:127.0.0.1:9003","expire":60,"ttl":60},{"socket":"udp:127.0.0.1:9002","expire":120,"ttl":120},{"socket":"udp:127.0.0.1:9001","expire":3600,"ttl":3600}]}},"id":1}"#
        )
        await hub.shutdown()
    }

    @Test func subscribeErrors() async throws {
        let bad = #"{"code":400,"message":"Bad parameter value""#
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1"}}"#,
            #"{"jsonrpc":"2.0","error":\#(bad),"data":"udp socket needs a port: udp:127.0.0.1"},"id":1}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_NO_SUCH_EVENT","socket":"udp:127.0.0.1:9001"}}"#,
            #"{"jsonrpc":"2.0","error":\#(bad),"data":"unknown event: E_NO_SUCH_EVENT"},"id":1}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9001","expire":-5}}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Negative expire value"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9001","expire":"soon"}}"#,
            #"{"jsonrpc":"2.0","error":\#(bad),"data":"expire must be an integer: soon"},"id":1}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":{"event":"E_MY_EVENT2","socket":"virtual:ROUND-ROBIN foo:1.2.3.4:5 udp:127.0.0.1"}}"#,
            #"{"jsonrpc":"2.0","error":\#(bad),"data":"member 1 of virtual:ROUND-ROBIN foo:1.2.3.4:5 udp:127.0.0.1: unknown transport 'foo' in socket foo:1.2.3.4:5 (known: udp, unix, virtual)"},"id":1}"#
        )
        #expect(try hub.subscribers(of: "E_MY_EVENT").isEmpty)
        #expect(try hub.subscribers(of: "E_MY_EVENT2").isEmpty)
    }

    @Test func expireZeroAlwaysAnswersOKAndUnsubscribeSaysWhenNothingMatched() async throws {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"event_subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001",0]}"#, ok()
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001"]}"#, ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:unsubscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001"]}"#, ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:unsubscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001"]}"#,
            #"{"jsonrpc":"2.0","error":{"code":404,"message":"Subscriber does not exist"},"id":1}"#)
        #expect(try hub.subscribers(of: "E_MY_EVENT").isEmpty)
    }

    @Test func listsEventsAndSubscribers() async throws {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"events_list","id":1}"#,
            #"{"jsonrpc":"2.0","result":{"Events":[{"name":"E_VIRTUAL_MEMBER_DOWN","id":0},{"name":"E_VIRTUAL_MEMBER_UP","id":1},{"name":"E_MY_EVENT","id":2},{"name":"E_MY_EVENT2","id":3}]},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1}"#,
            #"{"jsonrpc":"2.0","result":{"Events":[]},"id":1}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1,"params":["E_MY_EVENT"]}"#,
            #"{"jsonrpc":"2.0","result":{"Event":{}},"id":1}"#)
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1,"params":["E_NO_SUCH_EVENT"]}"#,
            #"{"jsonrpc":"2.0","error":{"code":404,"message":"Event not published","data":"unknown event: E_NO_SUCH_EVENT"},"id":1}"#
        )
        try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:9001", expiry: .never)
        try await hub.subscribe(
            event: "E_MY_EVENT2", socket: "virtual:PARALLEL \t udp:127.0.0.1:9001  udp:127.0.0.1:9002 ")
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribers","id":1}"#,
            #"{"jsonrpc":"2.0","result":{"Events":[{"name":"E_MY_EVENT","id":2,"Subscribers":[{"socket":"udp:127.0.0.1:9001","expire":"never"}]},{"name":"E_MY_EVENT2","id":3,"Subscribers":[{"socket":"virtual:PARALLEL udp:127.0.0.1:9001 udp:127.0.0.1:9002","expire":3600,"ttl":3600,"members":[{"socket":"udp:127.0.0.1:9001","state":"up","delivered":0,"failed":0},{"socket":"udp:127.0.0.1:9002","state":"up","delivered":0,"failed":0}]}]}]},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1,"params":{"event":"E_MY_EVENT2","socket":"virtual:PARALLEL udp:127.0.0.1:9002 udp:127.0.0.1:9001"}}"#,
            #"{"jsonrpc":"2.0","result":{"Event":{"name":"E_MY_EVENT2","id":3,"Subscriber":{"socket":"virtual:PARALLEL udp:127.0.0.1:9001 udp:127.0.0.1:9002","expire":3600,"ttl":3600,"members":[{"socket":"udp:127.0.0.1:9001","state":"up","delivered":0,"failed":0},{"socket":"udp:127.0.0.1:9002","state":"up","delivered":0,"failed":0}]}}},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"subscribers_list","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9999"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":404,"message":"Subscriber does not exist"},"id":1}"#)
        await hub.shutdown()
    }

    @Test func raiseTakesObjectsArraysAndJSONObjectStrings() async throws {
        let receiver = try DatagramReceiver()
        try await hub.subscribe(event: "E_MY_EVENT", socket: receiver.socket)
        let requests = [
            #"{"event":"E_MY_EVENT","params":{"name":"alice","count":7}}"#,
            #"{"event":"E_MY_EVENT","params":"{\"big\": 9999999999, \"fl\": 2.7, \"b\": true, \"n\": null}"}"#,
            #"{"event":"E_MY_EVENT","params":["alice",7,"x"]}"#,
            #"{"event":"E_MY_EVENT","params":[1,"two",{"three":3}]}"#,
            #"{"event":"E_MY_EVENT"}"#,
            #"{"event":"E_MY_EVENT","params":"{}"}"#,
            #"{"event":"E_MY_EVENT","params":{}}"#,
            #"["E_MY_EVENT",["a","b"]]"#,
        ]
        for params in requests {
            await expectReply(#"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":\#(params)}"#, ok())
        }
        let got = await receiver.waitFor(count: requests.count)
        #expect(
            got == [
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"name":"alice","count":7}}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"big":9999999999,"fl":2.7,"b":true,"n":null}}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":["alice",7,"x"]}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":[1,"two",{"three":3}]}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT"}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT"}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT"}"#,
                #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":["a","b"]}"#,
            ])
        await receiver.close()
        await hub.shutdown()
    }

    @Test func raiseErrors() async throws {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":{"event":"E_NO_SUCH"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":404,"message":"Event not registered","data":"unknown event: E_NO_SUCH"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":{"event":"E_MY_EVENT"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":480,"message":"Temporarily Unavailable","data":"no subscriber for E_MY_EVENT"},"id":1}"#
        )
        try await hub.subscribe(event: "E_MY_EVENT", socket: "udp:127.0.0.1:9001")
        await expectReply(
            #"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":{"event":"E_MY_EVENT","params":"{not json"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad Params","data":"params string is not valid JSON"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":{"event":"E_MY_EVENT","params":"[1,2]"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad Params","data":"params string must hold a JSON object"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"raise_event","id":1,"params":{"event":"E_MY_EVENT","params":5}}"#,
            #"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad Params","data":"params must be an object, an array or a JSON string"},"id":1}"#
        )
        await hub.shutdown()
    }

    @Test func whichListsEveryNameAndParameterSets() async {
        let names = await call(#"{"jsonrpc":"2.0","method":"which","id":1}"#) ?? ""
        for name in [
            "evi:subscribe", "event_subscribe", "evi:raise", "raise_event", "subscribers_list", "events_list",
            "core:which", "which",
        ] {
            #expect(names.contains("\"\(name)\""))
        }
        await expectReply(
            #"{"jsonrpc":"2.0","method":"core:which","id":1,"params":["event_subscribe"]}"#,
            #"{"jsonrpc":"2.0","result":[["event","socket"],["event","socket","expire"],["event","socket","expire","filter"],["event","socket","expire","filter","fields"]],"id":1}"#
        )
    }

    @Test func subscribeTakesFilterAndFieldsNamedInAnyCombinationOrPositionally() async throws {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":{"socket":"udp:127.0.0.1:9001","filter":"callid=abc*","event":"E_MY_EVENT"}}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9002","fields":"aor,callid","expire":60}}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9003","3600","","code"]}"#,
            ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9004","3600","aor!=*@example.org"]}"#,
            ok())
        // Unknown or repeated names are not a parameter set.
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9005","colour":"red"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":{"event":"E_MY_EVENT","filter":"a=b"}}"#,
            #"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"Too few or too many parameters"},"id":1}"#
        )
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribers","id":1,"params":["E_MY_EVENT"]}"#,
            #"{"jsonrpc":"2.0","result":{"Event":{"name":"E_MY_EVENT","id":2,"Subscribers":[{"socket":"udp:127.0.0.1:9004","expire":3600,"ttl":3600,"filter":"aor!=*@example.org"},{"socket":"udp:127.0.0.1:9003","expire":3600,"ttl":3600,"fields":["code"]},{"socket":"udp:127.0.0.1:9002","expire":60,"ttl":60,"fields":["aor","callid"]},{"socket":"udp:127.0.0.1:9001","expire":3600,"ttl":3600,"filter":"callid=abc*"}]}},"id":1}"#
        )
        // Subscribing again replaces them; without them it clears them.
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001"]}"#, ok())
        await expectReply(
            #"{"jsonrpc":"2.0","method":"evi:subscribers","id":1,"params":["E_MY_EVENT","udp:127.0.0.1:9001"]}"#,
            #"{"jsonrpc":"2.0","result":{"Event":{"name":"E_MY_EVENT","id":2,"Subscriber":{"socket":"udp:127.0.0.1:9001","expire":3600,"ttl":3600}}},"id":1}"#
        )
        await hub.shutdown()
    }

    @Test func badFiltersAndFieldsAreRefusedAndChangeNothing() async throws {
        let cases: [(String, String)] = [
            (
                #""filter":"callid""#,
                "filter: condition 1 ('callid'): no '=' or '!=' (conditions are NAME=GLOB or NAME!=GLOB)"
            ),
            (
                #""filter":"a=[x""#,
                "filter: condition 1 ('a=[x'): '[' without its ']' (write '\\\\[' for a literal one)"
            ),
            (#""fields":"a,,b""#, "fields: field 2 is empty"),
            (#""fields":[1]"#, "fields: fields must be strings"),
        ]
        for (param, data) in cases {
            await expectReply(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","id":1,"params":{"event":"E_MY_EVENT","socket":"udp:127.0.0.1:9001",\#(param)}}"#,
                #"{"jsonrpc":"2.0","error":{"code":400,"message":"Bad parameter value","data":"\#(data)"},"id":1}"#)
        }
        #expect(try hub.subscribers(of: "E_MY_EVENT").isEmpty)
    }

    @Test func coreCommands() async {
        await expectReply(
            #"{"jsonrpc":"2.0","method":"version","id":1}"#, #"{"jsonrpc":"2.0","result":{"Server":"evi test"},"id":1}"#
        )
        let uptime = await call(#"{"jsonrpc":"2.0","method":"core:uptime","id":1}"#) ?? ""
        #expect(uptime.contains(#""Up time":"0 [sec]""#))
        let ps = await call(#"{"jsonrpc":"2.0","method":"ps","id":1}"#) ?? ""
        #expect(ps.contains(#""Type":"MI HTTP""#))
    }

    @Test func aDatagramNeedsTheTokenWhenOneIsSet() async {
        let guarded = ManagementInterface(token: "s3cret")
        guarded.registerEventCommands(hub: hub, server: MIServerInfo(version: "test"))
        let without = await guarded.reply(
            to: Array(#"{"jsonrpc":"2.0","method":"which","id":1}"#.utf8), origin: .datagram)
        #expect(without == nil)  // not answered: see aDatagramIsAnsweredOnlyWhenItIsAValidAuthorisedRequest
        let with = await guarded.reply(
            to: Array(#"{"jsonrpc":"2.0","method":"version","id":1,"token":"s3cret"}"#.utf8), origin: .datagram)
        #expect(
            with.map { String(decoding: $0, as: UTF8.self) }
                == #"{"jsonrpc":"2.0","result":{"Server":"evi test"},"id":1}"#)
    }

    /// Hardening: over UDP only valid, authorised requests get a reply. Another server's reply,
    /// a parse error, a non-object, a bad batch or a wrong token get nothing (no reply loop, no
    /// amplification); over HTTP the same bodies keep their JSON-RPC errors.
    @Test func aDatagramIsAnsweredOnlyWhenItIsAValidAuthorisedRequest() async {
        let guarded = ManagementInterface(token: "s3cret")
        guarded.registerEventCommands(hub: hub, server: MIServerInfo(version: "test"))
        let unanswered = [
            #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
            #"{"jsonrpc":"2.0","result":"OK","id":1}"#,
            #"{bad"#, "42", #""text""#, "[]", "[1,2,3]",
            #"[{"jsonrpc":"2.0","method":"version","id":1,"token":"s3cret"},7]"#,
            #"{"jsonrpc":"2.0","method":"version","id":1}"#,
            #"{"jsonrpc":"2.0","method":"version","id":1,"token":"wrong"}"#,
            #"{"jsonrpc":"2.0","method":"version","id":1,"token":"s3cre"}"#,
            #"{"jsonrpc":"1.0","method":"version","id":1,"token":"s3cret"}"#,
            #"{"jsonrpc":"2.0","method":"version","id":{"x":1},"token":"s3cret"}"#,
            #"{"jsonrpc":"2.0","method":"version","params":"x","id":1,"token":"s3cret"}"#,
        ]
        for body in unanswered {
            #expect(await guarded.reply(to: Array(body.utf8), origin: .datagram) == nil, "answered: \(body)")
        }
        let batch =
            #"[{"jsonrpc":"2.0","method":"version","id":1,"token":"s3cret"},{"jsonrpc":"2.0","method":"nope","id":2,"token":"s3cret"}]"#
        #expect(
            await guarded.reply(to: Array(batch.utf8), origin: .datagram).map { String(decoding: $0, as: UTF8.self) }
                == #"[{"jsonrpc":"2.0","result":{"Server":"evi test"},"id":1},{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":2}]"#
        )
        // HTTP (whose token is the Authorization header) still answers bad bodies.
        #expect(
            await guarded.reply(to: Array("[1]".utf8), origin: .http).map { String(decoding: $0, as: UTF8.self) }
                == #"[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}]"#)
    }

    /// Hardening: at most 1,000 requests in a batch, and at most 16 MiB of replies.
    @Test func batchesAreBoundedInRequestsAndReplyBytes() async throws {
        let many =
            "[" + Array(repeating: #"{"jsonrpc":"2.0","method":"version","id":1}"#, count: 1001).joined(separator: ",")
            + "]"
        #expect(
            await mi.reply(to: Array(many.utf8), origin: .http).map { String(decoding: $0, as: UTF8.self) }
                == #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"batch of 1001 requests (max 1000)"},"id":null}"#
        )
        try hub.publish("E_WIDE")
        for index in 0..<400 {
            try await hub.subscribe(
                event: "E_WIDE", socket: "unix:/tmp/evi-wide-padding-padding-padding-padding-\(index).sock")
        }
        let lists =
            "["
            + Array(
                repeating: #"{"jsonrpc":"2.0","method":"subscribers_list","params":["E_WIDE"],"id":1}"#, count: 1000
            )
            .joined(separator: ",") + "]"
        let reply = await mi.reply(to: Array(lists.utf8), origin: .http) ?? []
        #expect(
            String(decoding: reply, as: UTF8.self)
                == #"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"the batch's replies exceed 16 MiB"},"id":null}"#
        )
    }
}
