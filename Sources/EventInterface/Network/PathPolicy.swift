#if canImport(Glibc)
    import Glibc
#endif

/// Where file-backed sockets (`flatstore:`, `unix:`) may point: absolute paths without `.`/`..`
/// components, not symbolic links, and — with `allowedDirs` — in a directory whose *real* path
/// (every link resolved) lies inside one of them. A string-prefix check on the path as given is
/// escaped by a link inside an allowed directory; this is not.
public struct PathPolicy: Sendable, Hashable {
    /// Absolute directories, or nil: anywhere.
    public var allowedDirs: [String]?

    public init(allowedDirs: [String]? = nil) {
        self.allowedDirs = allowedDirs
    }

    /// The path, normalised, after the checks that need no file system: absolute, no whitespace,
    /// no `.`/`..` components, not a directory name. `kind` names the socket in messages.
    public func normalise(_ address: String, kind: String, socket: String) throws(SocketError) -> String {
        guard !address.isEmpty else { throw SocketError("\(kind) socket needs a file path: \(socket)") }
        guard address.hasPrefix("/") else { throw SocketError("\(kind) path must be absolute: \(socket)") }
        guard !address.contains(where: { $0.isWhitespace || $0 == "\0" }) else {
            throw SocketError("\(kind) path contains whitespace: \(socket)")
        }
        let components = address.split(separator: "/", omittingEmptySubsequences: true)
        guard !components.contains(where: { $0 == ".." || $0 == "." }) else {
            throw SocketError("\(kind) path must not contain '.' or '..' components: \(socket)")
        }
        guard !address.hasSuffix("/") else { throw SocketError("\(kind) path is a directory: \(socket)") }
        return "/" + components.joined(separator: "/")
    }

    /// The real path of `path`'s directory, checked against `allowedDirs`; throws when the
    /// directory does not exist or lies outside them, or when `path` itself is a symbolic link.
    @discardableResult
    public func realDirectory(of path: String, kind: String, socket: String) throws(SocketError) -> String {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        // The path as given first: nothing outside the allowed directories is even looked at.
        if let allowedDirs {
            let inside = allowedDirs.contains { path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }
            guard inside else {
                throw SocketError(
                    "\(kind) path is outside allowed_dirs (\(allowedDirs.joined(separator: ", "))): \(socket)")
            }
        }
        guard let real = Self.realPath(directory.isEmpty ? "/" : directory) else {
            throw SocketError("\(kind) directory does not exist: \(directory.isEmpty ? "/" : directory) (\(socket))")
        }
        if let allowedDirs {  // then where it really is, every link resolved
            let inside = allowedDirs.contains { allowed in
                let resolved = Self.realPath(allowed) ?? allowed
                return real == resolved || real.hasPrefix(resolved.hasSuffix("/") ? resolved : resolved + "/")
            }
            guard inside else {
                throw SocketError(
                    "\(kind) path is outside allowed_dirs (\(allowedDirs.joined(separator: ", "))): \(socket)")
            }
        }
        var info = stat()
        if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw SocketError("\(kind) path is a symbolic link: \(socket)")
        }
        return real
    }

    /// `realpath(3)`: the absolute path with every link resolved, or nil when it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
