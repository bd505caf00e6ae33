/// What `evi`'s command line does before ArgumentParser sees it: the MI options may come before
/// the subcommand (`evi --mi udp://127.0.0.1:8080 events`), and a mistyped subcommand gets a
/// suggestion instead of the top-level usage.
enum EviCommandLine {
    /// Options every MI client subcommand takes, which may also stand before the subcommand.
    static let globalOptions: Set<String> = ["--mi", "--token"]

    /// Moves `--mi URL`, `--mi=URL`, `--token T` and `--token=T` found before the subcommand to
    /// just after it, where the subcommand's own option group reads them.
    static func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
        var hoisted: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = String(argument.prefix { $0 != "=" })
            guard globalOptions.contains(name) else { break }
            hoisted.append(argument)
            if !argument.contains("="), index + 1 < arguments.count {
                hoisted.append(arguments[index + 1])
                index += 1
            }
            index += 1
        }
        guard !hoisted.isEmpty, index < arguments.count else { return arguments }
        return [arguments[index]] + hoisted + arguments[(index + 1)...]
    }

    /// "unknown command 'subscibe' (did you mean 'subscribe'?)" for a first argument that is not a
    /// subcommand, or nil when it is one (or an option, or absent).
    static func unknownSubcommand(_ arguments: [String], known: [String]) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-"), !known.contains(first), first != "help" else {
            return nil
        }
        var message = "unknown command '\(first)'"
        if let suggestion = closest(to: first, among: known) { message += " (did you mean '\(suggestion)'?)" }
        return message + "; 'evi --help' lists the commands"
    }
}

/// The candidate nearest to `word` when it is near enough to be what was meant: at most a third
/// of its letters wrong (edits, Levenshtein), or a prefix of the candidate.
func closest(to word: String, among candidates: [String]) -> String? {
    let word = Array(word.lowercased())
    var best: (candidate: String, distance: Int)?
    for candidate in candidates {
        let letters = Array(candidate.lowercased())
        let distance = letters.starts(with: word) && !word.isEmpty ? 0 : editDistance(word, letters)
        if distance <= max(1, letters.count / 3), distance < (best?.distance ?? .max) {
            best = (candidate, distance)
        }
    }
    return best?.candidate
}

private func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    guard !a.isEmpty else { return b.count }
    guard !b.isEmpty else { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
            current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
