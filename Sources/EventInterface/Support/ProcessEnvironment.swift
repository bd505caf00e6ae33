#if canImport(Glibc)
    import Glibc
#endif

/// The process's environment, read once per call (the `PG*` variables a postgres URL falls back
/// on, AWS credentials and region).
public enum ProcessEnvironment {
    /// One variable.
    public static func value(_ name: String) -> String? {
        guard let pointer = getenv(name) else { return nil }
        return String(cString: pointer)
    }

    public static func current() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
