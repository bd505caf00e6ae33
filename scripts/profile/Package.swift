// swift-tools-version: 6.0
// A profiling harness for the raise path, kept out of the main package so CI does not build it.
// Its `main` is synchronous: valgrind (3.19 and 3.24) crashes on the thread start of an `async`
// main (libdispatch's dispatch_main), so `evi bench` itself cannot run under callgrind here.
import PackageDescription

let package = Package(
    name: "evi-profile",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: "evi")],
    targets: [
        .executableTarget(
            name: "evi-profile",
            dependencies: [
                .product(name: "EventInterface", package: "evi"),
                .product(name: "EventDatagram", package: "evi"),
                .product(name: "EventVirtual", package: "evi"),
            ]
        )
    ]
)
