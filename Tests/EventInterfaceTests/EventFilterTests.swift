import EventInterface
import EventInterfaceTestKit
import Testing

/// The pure filter matcher (Docs/filters.md): parsing, fnmatch globs, escapes, `!=`, absent and
/// typed values.
@Suite struct EventFilterTests {
    static let call: EventParams = [
        "callid": "abc-123@example.org", "aor": "sip:alice@opensips.org", "code": 200, "ratio": 1.5,
        "ok": true, "none": nil, "name": "Zoë;=!\\", "empty": "", "nested": ["a": 1], "list": [1, 2],
        "with space": "x y",
    ]

    /// (filter, params, matches?)
    static let table: [(String, EventParams, Bool)] = [
        ("callid=abc-123@example.org", call, true),
        ("callid=abc-123@example.or", call, false),
        ("callid=abc*", call, true),
        ("callid=*@example.org", call, true),
        ("callid=*@EXAMPLE.org", call, false),
        ("callid=abc-???@*", call, true),
        ("callid=abc-??@*", call, false),
        ("callid=[a-c]bc*", call, true),
        ("callid=[!a]bc*", call, false),
        ("callid=[^b-z]bc*", call, true),
        ("aor=*@opensips.org", call, true),
        ("aor!=*@opensips.org", call, false),
        ("aor!=*@example.org", call, true),
        ("aor=*@opensips.org;callid=abc*", call, true),
        ("aor=*@opensips.org;callid=xyz*", call, false),
        ("code=200", call, true),
        ("code=2*", call, true),
        ("code=\"200\"", call, false),
        ("ratio=1.5", call, true),
        ("ok=true", call, true),
        ("ok=false", call, false),
        ("none=null", call, true),
        ("missing=*", call, false),
        ("missing!=anything", call, true),
        ("missing!=*", call, true),
        ("empty=", call, true),
        ("empty=*", call, true),
        ("empty=?", call, false),
        ("name=Zoë\\;\\=\\!\\\\", call, true),
        ("name=Zo?", call, false),
        ("name=Zo?\\;*", call, true),
        ("name=[Z]o[ë]*", call, true),
        ("nested=*", call, true),
        ("nested={\"a\":1}", call, false),
        ("nested!=*", call, false),
        ("list=*", call, true),
        ("list=[1,2]", call, false),
        ("with space=x y", call, true),
        ("with space =x y", call, false),
        ("callid= abc*", call, false),
        ("0=first", ["first", "second"], true),
        ("1=sec*", ["first", "second"], true),
        ("2=*", ["first", "second"], false),
        ("2!=*", ["first", "second"], true),
        ("0=first", ["0": "first"], true),
        ("callid=*", .none, false),
        ("star=a\\*", ["star": "a*"], true),
        ("star=a\\*", ["star": "ab"], false),
        ("q=\\?", ["q": "?"], true),
        ("br=\\[x]", ["br": "[x]"], true),
        ("range=[]a]", ["range": "]"], true),
        ("dash=[a-]", ["dash": "-"], true),
        ("multi=*b*b*", ["multi": "abab"], true),
        ("multi=*b*b*", ["multi": "ab"], false),
        ("big=-9223372036854775808", ["big": .int(Int64.min)], true),
    ]

    @Test func theTableHolds() throws {
        #expect(Self.table.count >= 30)
        for (text, params, expected) in Self.table {
            let filter = try EventFilter(parsing: text)
            #expect(filter.matches(params) == expected, "\(text)")
            #expect(filter.description == text)
        }
    }

    static let refused: [(String, String)] = [
        ("", "empty filter"),
        ("callid", "condition 1 ('callid'): no '=' or '!=' (conditions are NAME=GLOB or NAME!=GLOB)"),
        ("=abc", "condition 1 ('=abc'): empty NAME before '='"),
        ("!=abc", "condition 1 ('!=abc'): empty NAME before '!='"),
        ("a=1;", "condition 2 (''): empty condition (two ';' in a row, or one at an end)"),
        ("a=1;;b=2", "condition 2 (''): empty condition (two ';' in a row, or one at an end)"),
        ("a!b=1", "condition 1 ('a!b=1'): '!' in NAME must be escaped ('\\!'), or be followed by '=' ('NAME!=GLOB')"),
        ("a=1\\", "condition 1 ('a=1\\'): a '\\' ends the GLOB"),
        ("a\\", "condition 1 ('a\\'): a '\\' ends the condition"),
        ("a=[abc", "condition 1 ('a=[abc'): '[' without its ']' (write '\\[' for a literal one)"),
        ("a=[z-a]", "condition 1 ('a=[z-a]'): range out of order in '[…]' (z-…)"),
    ]

    @Test func badFiltersSayWhatIsWrong() {
        for (text, message) in Self.refused {
            #expect(throws: FilterError(message), "\(text)") { try EventFilter(parsing: text) }
        }
        let long = String(repeating: "a=b;", count: 1100)
        #expect(throws: FilterError("filter longer than 4096 bytes (4400)")) { try EventFilter(parsing: long) }
        let many = (0..<65).map { "p\($0)=x" }.joined(separator: ";")
        #expect(throws: FilterError("more than 64 conditions")) { try EventFilter(parsing: many) }
        #expect(throws: Never.self) { try EventFilter(parsing: (0..<64).map { "p\($0)=x" }.joined(separator: ";")) }
    }

    @Test func escapesInNamesAndTheIndexKey() throws {
        let filter = try EventFilter(parsing: "a\\=b\\;c\\!=v;x!=y")
        #expect(filter.conditions.map(\.name) == ["a=b;c!", "x"])
        #expect(filter.conditions.map(\.negated) == [false, true])
        #expect(filter.matches(["a=b;c!": "v"]))
        func key(_ text: String) throws -> String? {
            try EventFilter(parsing: text).indexKey.map { "\($0.name)=\($0.value)" }
        }
        #expect(try key("callid=abc;aor=*") == "callid=abc")
        #expect(try key("aor=*;callid=ab\\*c") == "callid=ab*c")
        #expect(try key("callid!=abc;aor=x*") == nil)
    }

    /// 100,000 generated filters: each is refused with a message or parsed and evaluated, and none
    /// crashes or hangs (a pattern of many stars over a long value stays polynomial).
    @Test func fuzzedFiltersFailClearlyOrMatch() {
        var random = SplitMix(seed: 0x5eed)
        func next() -> UInt64 { random.next() }
        let alphabet = Array("ab=!;\\*?[]^-é0 ")
        let params: EventParams = ["a": "ab*?[é", "b": 7, "ab": ["x": 1]]
        var parsed = 0
        for _ in 0..<100_000 {
            let length = Int(next() % 16)
            let text = String((0..<length).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] })
            do {
                let filter = try EventFilter(parsing: text)
                parsed += 1
                _ = filter.matches(params)
                _ = filter.indexKey
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
        #expect(parsed > 1000)
        let stars = try? EventFilter(parsing: "a=" + String(repeating: "*a", count: 100) + "b")
        #expect(stars?.matches(["a": .string(String(repeating: "a", count: 4000))]) == false)
    }

    @Test func fieldListsAndStoredAttributes() throws {
        #expect(try SubscriptionAttributes.fields(parsing: "callid,aor") == ["callid", "aor"])
        #expect(try SubscriptionAttributes.fields(parsing: "") == nil)
        #expect(throws: FilterError("field 2 is empty")) { try SubscriptionAttributes.fields(parsing: "a,,b") }
        #expect(throws: FilterError("field 'a' is listed twice")) { try SubscriptionAttributes.fields(parsing: "a,a") }
        let attributes = SubscriptionAttributes(filter: try EventFilter(parsing: "callid=a\\;b*"), fields: ["x", "y"])
        let stored = try #require(attributes.storedJSON)
        #expect(stored == #"{"filter":"callid=a\\;b*","fields":["x","y"]}"#)
        #expect(try SubscriptionAttributes(storedJSON: stored) == attributes)
        #expect(SubscriptionAttributes.none.storedJSON == nil)
        #expect(throws: FilterError("stored attribute 'colour' is not known to this version")) {
            try SubscriptionAttributes(storedJSON: #"{"colour":"red"}"#)
        }
        let params: EventParams = ["a": 1, "b": 2, "c": 3]
        #expect(params.selecting(["c", "a", "z"]) == ["c": 3, "a": 1])
        #expect(params.selecting(["z"]) == .none)
        #expect(EventParams.positional(["x", "y"]).selecting(["1"]) == ["y"])
    }
}
