import EventInterface
import Foundation
import Testing

/// What an ingress makes of a message, byte for byte as OpenSIPS sends them.
@Suite struct IngressDecoderTests {
    let decoder = IngressDecoder()

    @Test func theRecordedOpenSIPSDatagramIsTheEventItWasRaisedAs() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/opensips")
        for file in ["transport_udp.json", "transport_unix.json"] {
            let recorded =
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: fixtures.appendingPathComponent(file))) as? [String: Any]
            let data = try #require(((recorded?["receiver_log"] as? [[String: Any]])?.first?["data"]) as? String)
            let message = try decoder.decode(Array(data.utf8)).get()
            #expect(message.event == "E_MY_EVENT2")
            #expect(message.params == ["name": "alice", "count": 7])
            #expect(message.id == nil)
        }
    }

    @Test func allEmptyKeysArePositionalParameters() throws {
        // What OpenSIPS wrote for positional parameters (transport_udp_array_params.json).
        let message = try decoder.decode(Array(#"{"jsonrpc":"2.0","method":"E_X","params":{"":"alice","":"7"}}"#.utf8))
            .get()
        #expect(message.params == .positional(["alice", "7"]))
    }

    @Test func aRequestKeepsItsIdExactly() throws {
        let message = try decoder.decode(Array(#"{"id":17,"jsonrpc":"2.0","method":"E_X","params":[1,true]}"#.utf8))
            .get()
        #expect(message.id == .int(17))
        #expect(message.params == .positional([1, true]))
    }

    @Test func eventParamNamesTheEvent() throws {
        let named = IngressDecoder(eventParam: "event")
        let message = try named.decode(
            Array(#"{"jsonrpc":"2.0","method":"fixed","params":{"event":"E_CALL","n":1}}"#.utf8)
        ).get()
        #expect(message.event == "E_CALL")
        #expect(message.params == ["n": 1])
        #expect(named.decode(Array(#"{"jsonrpc":"2.0","method":"fixed","params":{"n":1}}"#.utf8)) == .failure(.noEvent))
    }

    @Test func malformedMessagesAreRefusedWithTheirReason() {
        let cases: [(String, IngressDecoder.Rejection)] = [
            ("{not json", .notJSON), ("[1,2]", .notAnObject), (#"{"jsonrpc":"2.0","params":{}}"#, .noEvent),
            (#"{"method":"E X"}"#, .noEvent), (#"{"method":7}"#, .noEvent),
            (#"{"method":"E_X","params":"s"}"#, .badParams),
        ]
        for (text, reason) in cases {
            #expect(decoder.decode(Array(text.utf8)) == .failure(reason), "\(text)")
        }
        #expect(
            decoder.decode([UInt8](repeating: 32, count: IngressDecoder.maximumMessageSize + 1)) == .failure(.tooLarge))
    }
}

/// Kamailio evapi's framing and plain objects.
@Suite struct NetstringAndPlainObjectTests {
    @Test func netstringsAreSplitAcrossChunksAndMalformedOnesCounted() {
        var splitter = NetstringSplitter(maximumLength: 20)
        #expect(splitter.feed(Array("5:hel".utf8)).isEmpty)
        #expect(splitter.hasPartialFrame)
        #expect(splitter.feed(Array("lo,\n3:abc,1".utf8)) == [Array("hello".utf8), Array("abc".utf8)])
        // The "1" left over begins "10:…": a length split across chunks.
        #expect(splitter.feed(Array("0:0123456789,".utf8)) == [Array("0123456789".utf8)])
        var bad = NetstringSplitter(maximumLength: 4)
        _ = bad.feed(Array("99:too long for the limit,2:ok,".utf8))
        #expect(bad.malformed > 0)
    }

    /// A prefix of only zeros never exceeded the length cap: it was buffered without bound and
    /// scanned again from its start at every read (26 MB cost ~7 s of CPU).
    @Test func aLengthPrefixLongerThanTheLargestLengthIsRefusedAtOnce() {
        var splitter = NetstringSplitter()
        #expect(splitter.maximumDigits == 7)
        let zeros = [UInt8](repeating: UInt8(ascii: "0"), count: 1 << 20)
        for _ in 0..<26 { #expect(splitter.feed(zeros).isEmpty) }
        #expect(!splitter.hasPartialFrame, "nothing of the zeros is kept")
        #expect(splitter.malformed >= 1)
        // Leading zeros count; seven digits are still a length, and the stream goes on after.
        #expect(splitter.feed(Array(":x,0000005:hello,".utf8)) == [Array("hello".utf8)])
        #expect(splitter.feed(Array("00000005:hello,".utf8)).isEmpty)
    }

    @Test func aPlainObjectIsRaisedAsTheEntrysEvent() throws {
        let decoder = IngressDecoder(plainObjectEvent: "E_KAMAILIO")
        let plain = try decoder.decode(Array(#"{"caller":"alice","duration":42}"#.utf8)).get()
        #expect(plain.event == "E_KAMAILIO")
        #expect(plain.params == ["caller": "alice", "duration": 42])
        let rpc = try decoder.decode(Array(#"{"jsonrpc":"2.0","method":"E_X","params":{"a":1}}"#.utf8)).get()
        #expect(rpc.event == "E_X")
        #expect(IngressDecoder().decode(Array(#"{"caller":"alice"}"#.utf8)) == .failure(.noEvent))
    }
}
