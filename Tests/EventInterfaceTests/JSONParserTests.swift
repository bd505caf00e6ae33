import EventInterface
import Testing

@Suite struct JSONParserTests {
    @Test func keepsOrderAndTypes() throws {
        let value = try EventValue(
            json: #" {"z":1,"a":1.0,"m":true,"n":null,"big":9223372036854775807,"s":"\u00e9\ud83d\ude00"} "#)
        #expect(
            value
                == .object([
                    EventField("z", .int(1)), EventField("a", .double(1.0)), EventField("m", .bool(true)),
                    EventField("n", .null), EventField("big", .int(Int64.max)), EventField("s", .string("é😀")),
                ]))
    }

    /// Strings are taken as they are when ASCII, validated as UTF-8 otherwise: raw multi-byte
    /// characters come through, invalid bytes are refused with the offset after the string.
    @Test func rawUTF8IsKeptAndInvalidUTF8Refused() throws {
        #expect(try EventValue(jsonBytes: Array(#"["plain","é中😀","a\"é"]"#.utf8)) == ["plain", "é中😀", "a\"é"])
        for bad: [UInt8] in [
            [0x22, 0xFF, 0x22], [0x22, 0x61, 0xC3, 0x22], [0x22, 0xE0, 0x80, 0x80, 0x22],
            [0x22, 0xED, 0xA0, 0x80, 0x22],
        ] {
            let error = #expect(throws: JSONParseError.self) { try EventValue(jsonBytes: bad) }
            #expect(error?.message == "invalid UTF-8 in string")
            #expect(error?.offset == bad.count)
        }
    }

    @Test func integersBeyond64BitsBecomeDoubles() throws {
        #expect(try EventValue(json: "18446744073709551616") == .double(18_446_744_073_709_551_616))
        #expect(try EventValue(json: "-9223372036854775808") == .int(Int64.min))
    }

    @Test(arguments: [
        "", " ", "{", "[1,]", "{\"a\":}", "01", "1.", ".5", "-", "1e", "tru", "nul", "\"abc", "\"\\x\"",
        "\"\\ud800\"", "{\"a\" 1}", "[1 2]", "1 2", "\"a\u{01}\"", "{'a':1}", "NaN", "1e999",
    ])
    func rejectsMalformedInput(text: String) {
        #expect(throws: JSONParseError.self) { try EventValue(json: text) }
    }

    @Test func rejectsHostileNesting() throws {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try EventValue(json: deep) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        _ = try EventValue(json: fine)
    }

    @Test func paramsFromJSON() throws {
        #expect(EventParams(json: try EventValue(json: "{}")) == EventParams.none)
        #expect(EventParams(json: try EventValue(json: "[]")) == EventParams.none)
        #expect(EventParams(json: try EventValue(json: "[1,\"a\"]")) == .positional([1, "a"]))
        #expect(EventParams(json: try EventValue(json: "5")) == nil)
        #expect(EventParams(json: try EventValue(json: "\"{}\"")) == nil)
    }
}
