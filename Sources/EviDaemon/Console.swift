import EventInterface

#if canImport(Glibc)
    import Glibc
#endif

// What the command line, the daemon and the bench print and read, without Foundation.

/// Writes a line to standard error.
package func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Writes a line to standard output at once (unbuffered, for scripts waiting on it).
package func printLine(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

/// Raises the open-file soft limit to the hard limit: every subscriber may hold a socket or a
/// file and every MI connection one, and the soft limit (often 1,024) is the first to run out.
package func raiseDescriptorLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// The directory part of a path ("." for a bare file name).
package func directoryOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return currentDirectory() }
    let directory = String(path[..<slash])
    if directory.isEmpty { return "/" }
    return directory.hasPrefix("/") ? directory : currentDirectory() + "/" + directory
}

package func currentDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buffer, buffer.count) != nil else { return "." }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

package func readFile(_ path: String) throws -> String {
    guard let file = fopen(path, "r") else {
        throw ConfigurationError("cannot read: \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count <= 0 { break }
        bytes += buffer[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}
