import EventInterface
import Foundation
import Testing

/// The notification bytes of Docs/sockets.md, checked byte for byte and against Foundation's
/// JSON decoder (a real, independent implementation).
@Suite struct JSONEncodingTests {
    func notification(_ method: String, _ params: EventParams) -> String {
        String(decoding: JSONRPCNotification.encode(method: method, params: params), as: UTF8.self)
    }

    /// Decodes with Foundation and returns the `params` member.
    func decodedParams(_ text: String) throws -> Any? {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        return (object as? [String: Any])?["params"]
    }

    @Test func specExamples() {
        #expect(
            notification("E_MY_EVENT", ["name": "alice", "count": 7])
                == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"name":"alice","count":7}}"#)
        #expect(
            notification("E_MY_EVENT", ["alice", 7]) == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":["alice",7]}"#
        )
        #expect(notification("E_MY_EVENT", .none) == #"{"jsonrpc":"2.0","method":"E_MY_EVENT"}"#)
    }

    @Test func reliableModeIdComesFirst() {
        let bytes = JSONRPCNotification.encode(method: "M", params: ["a": 1], id: 17)
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"id":17,"jsonrpc":"2.0","method":"M","params":{"a":1}}"#)
    }

    @Test func eventParamGoesFirst() {
        let named = JSONRPCNotification.encode(
            method: "M", params: ["a": 1], eventParam: (name: "event", eventName: "E_X"))
        #expect(
            String(decoding: named, as: UTF8.self) == #"{"jsonrpc":"2.0","method":"M","params":{"event":"E_X","a":1}}"#)
        let positional = JSONRPCNotification.encode(
            method: "M", params: [1], eventParam: (name: "event", eventName: "E_X"))
        #expect(String(decoding: positional, as: UTF8.self) == #"{"jsonrpc":"2.0","method":"M","params":["E_X",1]}"#)
    }

    static let valueCases: [(EventValue, String)] = [
        (EventValue.int(0), "0"), (.int(7), "7"), (.int(-3), "-3"), (.int(10), "10"),
        (.int(9_999_999_999), "9999999999"),
        (.int(Int64.max), "9223372036854775807"), (.int(Int64.min), "-9223372036854775808"),
        (.double(2.7), "2.7"), (.double(1.5), "1.5"), (.double(-0.25), "-0.25"), (.double(1e300), "1e+300"),
        (.double(5e-324), "5e-324"), (.double(.nan), "null"), (.double(.infinity), "null"),
        (.bool(true), "true"), (.bool(false), "false"), (.null, "null"),
        (.array([]), "[]"), (.object([]), "{}"),
        (["x": [1, 2]], #"{"x":[1,2]}"#), ([1, "a", nil, true, 2.5], #"[1,"a",null,true,2.5]"#),
        (.string(""), #""""#), (.string("a\"b\\c\nd"), #""a\"b\\c\nd""#),
        (.string("\r\t\u{08}\u{0C}\u{01}\u{1F}"), #""\r\t\b\f\u0001\u001f""#),
        (.string("é/€😀,;|"), "\"é/€😀,;|\""), (.string("\u{7F}"), "\"\u{7F}\""),
    ]

    @Test func valueBytes() {
        for (value, expected) in Self.valueCases {
            #expect(value.jsonText == expected, "\(value)")
        }
    }

    @Test func everyTypeSurvivesARealDecoder() throws {
        let params: EventParams = [
            "str": "héllo \"w\"\n", "big": .int(9_999_999_999), "neg": -3, "min": .int(Int64.min), "fl": 2.7,
            "t": true, "f": false, "n": nil, "o": ["x": [1, 2], "y": ["z": "é"]], "a": [1, "two", 3.5],
        ]
        let text = notification("E_TYPES", params)
        let decoded = try #require(try decodedParams(text) as? [String: Any])
        #expect(decoded["str"] as? String == "héllo \"w\"\n")
        #expect((decoded["big"] as? NSNumber)?.int64Value == 9_999_999_999)
        #expect((decoded["min"] as? NSNumber)?.int64Value == Int64.min)
        #expect((decoded["neg"] as? NSNumber)?.intValue == -3)
        #expect((decoded["fl"] as? NSNumber)?.doubleValue == 2.7)
        #expect(decoded["n"] is NSNull)
        let nested = try #require(decoded["o"] as? [String: Any])
        #expect((nested["x"] as? [NSNumber])?.map(\.intValue) == [1, 2])
        #expect((nested["y"] as? [String: String])?["z"] == "é")
        #expect((decoded["a"] as? [Any])?.count == 3)
        // Booleans must be JSON booleans, not numbers or "null" (OpenSIPS writes "null").
        #expect(text.contains(#""t":true,"f":false,"n":null"#))
        // Our own reader gives back exactly what was raised, order included.
        let reread = try EventValue(json: text)
        guard case .object(let fields) = reread, case .object(let reparams)? = fields.last?.value else {
            Issue.record("not an object: \(reread)")
            return
        }
        #expect(EventParams.named(reparams) == params)
    }

    @Test func manyRandomStringsRoundTripThroughFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Character] = Array("aZ09 \"\\/\n\r\t\u{01}\u{1F}\u{7F}é€😀中,;|")
        for _ in 0..<500 {
            let string = String((0..<Int.random(in: 0...20, using: &generator)).map { _ in alphabet.randomElement()! })
            let text = EventValue.array([.string(string)]).jsonText
            let decoded = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String]
            #expect(decoded == [string])
            #expect(try EventValue(json: text) == .array([.string(string)]))
        }
    }
}

/// What OpenSIPS corrupted (recorded in Tests/Fixtures/opensips), sent through evi: the bytes decode to
/// exactly the values raised.
@Suite struct ReferenceVectorTests {
    static let vectors = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/opensips")

    /// The `params` string of a recorded `raise_event` request, parsed by evi.
    func recordedParams(_ file: String) throws -> (event: String, params: EventParams) {
        let request = try EventValue(
            json: String(contentsOf: Self.vectors.appendingPathComponent("mi/\(file)"), encoding: .utf8))
        guard case .object(let top) = request,
            case .object(let arguments)? = top.first(where: { $0.name == "params" })?.value,
            case .string(let event)? = arguments.first(where: { $0.name == "event" })?.value,
            let raw = arguments.first(where: { $0.name == "params" })?.value
        else { throw VectorError() }
        let value: EventValue
        if case .string(let text) = raw { value = try EventValue(json: text) } else { value = raw }
        return (event, try #require(EventParams(json: value)))
    }

    struct VectorError: Error {}

    @Test func udpVectorBytesAreKept() throws {
        let recorded = try EventValue(
            json: String(contentsOf: Self.vectors.appendingPathComponent("transport_udp.json"), encoding: .utf8))
        guard case .object(let fields) = recorded,
            case .array(let log)? = fields.first(where: { $0.name == "receiver_log" })?.value,
            case .object(let entry)? = log.first,
            case .string(let data)? = entry.first(where: { $0.name == "data" })?.value
        else { throw VectorError() }
        #expect(
            String(
                decoding: JSONRPCNotification.encode(method: "E_MY_EVENT2", params: ["name": "alice", "count": 7]),
                as: UTF8.self)
                == data)
    }

    @Test func largeIntegersAndFloatsAreNotClamped() throws {
        let (event, params) = try recordedParams("54_raise_event_params_json_string_numbers.req.json")
        let text = String(decoding: JSONRPCNotification.encode(method: event, params: params), as: UTF8.self)
        #expect(text == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"big":9999999999,"neg":-3,"fl":2.7}}"#)
    }

    @Test func escapesAndNonASCIIAreNotDoubleEncoded() throws {
        let (event, params) = try recordedParams("55_raise_event_params_json_string_escapes.req.json")
        let text = String(decoding: JSONRPCNotification.encode(method: event, params: params), as: UTF8.self)
        #expect(text == "{\"jsonrpc\":\"2.0\",\"method\":\"E_MY_EVENT\",\"params\":{\"s\":\"a\\\"b\\\\c\\né,;|/\"}}")
        let decoded = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect((decoded?["params"] as? [String: String])?["s"] == "a\"b\\c\né,;|/")
    }

    @Test func booleansAndNullKeepTheirType() throws {
        let (event, params) = try recordedParams("56_raise_event_params_json_string_bool_null.req.json")
        let text = String(decoding: JSONRPCNotification.encode(method: event, params: params), as: UTF8.self)
        #expect(text == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"t":true,"f":false,"n":null}}"#)
    }

    @Test func nestedObjectsAreNotStringified() throws {
        let (event, params) = try recordedParams("36_raise_event_params_json_string.req.json")
        let text = String(decoding: JSONRPCNotification.encode(method: event, params: params), as: UTF8.self)
        #expect(
            text
                == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":{"name":"alice","count":7,"f":1.5,"b":true,"n":null,"o":{"x":[1,2]}}}"#
        )
    }

    @Test func positionalParamsStayAnArrayWithTheirTypes() throws {
        let (event, params) = try recordedParams("37_raise_event_params_array.req.json")
        let text = String(decoding: JSONRPCNotification.encode(method: event, params: params), as: UTF8.self)
        // OpenSIPS sent ["alice","7","x"] (and {"":"alice",...} elsewhere): the 7 stays a number.
        #expect(text == #"{"jsonrpc":"2.0","method":"E_MY_EVENT","params":["alice",7,"x"]}"#)
    }
}
