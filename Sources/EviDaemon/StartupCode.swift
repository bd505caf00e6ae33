#if canImport(Glibc)
    import Glibc
#endif

/// Unmaps the code pages start-up touched, once the daemon listens.
///
/// Start-up runs code that never runs again — the YAML parser and the regular expressions it
/// resolves scalars with, Foundation and ICU behind them, SQLite's schema work, the Swift
/// runtime's scans of every protocol conformance — and the kernel maps 64 KiB around each page
/// it faults in: measured here, an idle daemon kept 25 MB of code mapped that it did not use
/// again (PSS 33.8 MB; after paging out, 8.4 MB idle and 15 MB once it had answered an MI raise).
/// `MADV_DONTNEED` on the read-only executable mappings of files drops them from this process
/// only: the pages stay in the page cache (shared, clean, reclaimable) and what runs next faults
/// back in. Only `r-xp` file mappings: nothing in them was ever written (no text relocations), so
/// nothing is lost; the writable and the relocated read-only (RELRO) pages are left alone.
package func releaseStartupCode() {
    guard let maps = try? readFile("/proc/self/maps") else { return }
    for line in maps.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 6, fields[1] == "r-xp", fields[5].hasPrefix("/") else { continue }
        let bounds = fields[0].split(separator: "-")
        guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16),
            end > start, let address = UnsafeMutableRawPointer(bitPattern: start)
        else { continue }
        _ = madvise(address, Int(end - start), MADV_DONTNEED)
    }
}
