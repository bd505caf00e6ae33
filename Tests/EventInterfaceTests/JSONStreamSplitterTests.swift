import EventInterface
import Testing

@Suite struct JSONStreamSplitterTests {
    @Test func splitsBackToBackValuesFedInAnyChunks() {
        let stream = Array(#"{"a":"}\"{"} [1,[2]]{"b":{"c":"]"}}"#.utf8)
        for chunkSize in 1...stream.count {
            var splitter = JSONStreamSplitter()
            var values: [String] = []
            var index = 0
            while index < stream.count {
                let end = min(index + chunkSize, stream.count)
                values += splitter.feed(stream[index..<end]).map { String(decoding: $0, as: UTF8.self) }
                index = end
            }
            #expect(values == [#"{"a":"}\"{"}"#, "[1,[2]]", #"{"b":{"c":"]"}}"#], "chunk \(chunkSize)")
        }
    }

    @Test func dropsAnOversizedValue() {
        var splitter = JSONStreamSplitter(maximumValueSize: 16)
        #expect(splitter.feed(Array(#"{"a":"0123456789012345"#.utf8)).isEmpty)
        #expect(splitter.feed(Array(#"{"b":1}"#.utf8)).map { String(decoding: $0, as: UTF8.self) } == [#"{"b":1}"#])
    }
}
