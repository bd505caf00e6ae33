import EventInterface

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
