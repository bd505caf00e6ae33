import EventInterfaceTestKit
import Foundation
import Testing

/// The README is the front door and `Docs/` the reference: every link between them resolves, and
/// every key `--print-config` prints is documented in Docs/configuration.md.
@Suite struct DocsTests {
    static let pages: [URL] = {
        let docs = repositoryRoot.appendingPathComponent("Docs")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: docs.path)) ?? []
        return [repositoryRoot.appendingPathComponent("README.md")]
            + names.filter { $0.hasSuffix(".md") }.sorted().map { docs.appendingPathComponent($0) }
    }()

    /// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
    static func anchor(_ heading: String) -> String {
        String(
            heading.lowercased().compactMap { character -> Character? in
                if character == " " { return "-" }
                return character.isLetter || character.isNumber || character == "-" || character == "_"
                    ? character : nil
            })
    }

    static func anchors(in file: URL) -> Set<String> {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return Set(
            text.split(separator: "\n").filter { $0.hasPrefix("#") }.map {
                anchor(String($0.drop { $0 == "#" }).trimmingCharacters(in: .whitespaces))
            })
    }

    @Test func everyLinkResolves() throws {
        #expect(Self.pages.count > 10)
        var checked = 0
        for page in Self.pages {
            let text = try String(contentsOf: page, encoding: .utf8)
            var rest = text[...]
            while let open = rest.range(of: "](") {
                let after = rest[open.upperBound...]
                guard let close = after.firstIndex(of: ")") else { break }
                let target = String(after[..<close])
                rest = after[close...]
                guard !target.hasPrefix("http"), !target.contains(" ") else { continue }
                let parts = target.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)
                let file =
                    parts[0].isEmpty ? page : page.deletingLastPathComponent().appendingPathComponent(String(parts[0]))
                #expect(
                    FileManager.default.fileExists(atPath: file.path), "\(page.lastPathComponent): \(target) is missing"
                )
                if parts.count == 2, file.pathExtension == "md" {
                    #expect(
                        Self.anchors(in: file).contains(String(parts[1])),
                        "\(page.lastPathComponent): \(target) names no heading")
                }
                checked += 1
            }
        }
        #expect(checked > 30)
        let index = try String(contentsOf: repositoryRoot.appendingPathComponent("Docs/README.md"), encoding: .utf8)
        for page in Self.pages.dropFirst() where page.lastPathComponent != "README.md" {
            #expect(
                index.contains("](\(page.lastPathComponent))"), "Docs/README.md does not link \(page.lastPathComponent)"
            )
        }
    }

    @Test func theReadmeIsAFrontDoor() throws {
        let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.split(separator: "\n", omittingEmptySubsequences: false).count <= 300)
        #expect(readme.contains("\n```\nswift run -c release evi serve\n```\n"))
        #expect(readme.contains("\n```\nscripts/test.sh\n```\n"))
    }

    /// Every key of the built-in configuration, as a dotted path (`mi.allowed_hosts`,
    /// `modules.event_stream.timeout`), appears in Docs/configuration.md.
    @Test func everyConfigurationKeyIsDocumented() async throws {
        let printed = try await run(eviBinary.path, ["serve", "--print-config"])
        #expect(printed.status == 0)
        let reference = try String(
            contentsOf: repositoryRoot.appendingPathComponent("Docs/configuration.md"), encoding: .utf8)
        var path: [String] = []
        var keys: [String] = []
        for line in printed.output.split(separator: "\n")
        where !line.trimmingCharacters(in: .whitespaces).hasPrefix("#") {
            let indent = line.prefix { $0 == " " }.count / 2
            let text = line.drop { $0 == " " }
            guard let colon = text.firstIndex(of: ":"),
                text[..<colon].allSatisfy({ $0.isLowercase || $0 == "_" || $0.isNumber }), !text[..<colon].isEmpty
            else { continue }
            path = Array(path.prefix(indent)) + [String(text[..<colon])]
            let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if value.isEmpty || value.hasPrefix("#") { continue }  // a section: its keys follow
            keys.append(path.joined(separator: "."))
        }
        #expect(keys.count > 50)
        for key in keys {
            #expect(reference.contains("`\(key)`"), "\(key) is not in Docs/configuration.md")
        }
    }
}
