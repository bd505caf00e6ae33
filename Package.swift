// swift-tools-version: 6.0
import Foundation
import PackageDescription

// The package in three parts: the core and its support libraries, the transport modules (one
// list: each entry makes its target, its library product, its place in `EviModules`, and its test
// target when `Tests/NAMETests` exists), and the daemon with its two executables.

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
]
let log: Target.Dependency = .product(name: "Logging", package: "swift-log")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let http1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let ssl: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")

/// A transport module: `Sources/NAME`, what it needs beyond `EventInterface`, and what its tests
/// need beyond the shared test kit.
struct TransportModule {
    var name: String
    var dependencies: [Target.Dependency]
    var testDependencies: [Target.Dependency] = []
}

/// Every transport module, in the order `BuiltInModules.swift` lists them. Adding one is a folder
/// under `Sources/` (and `Tests/`), one entry here and one line in `BuiltInModules.swift`.
let transportModules: [TransportModule] = [
    TransportModule(name: "EventVirtual", dependencies: []),
    TransportModule(name: "EventDatagram", dependencies: ["CDatagramBatch"]),
    TransportModule(name: "EventFlatstore", dependencies: ["EventNIOSupport"] + nio),
    TransportModule(
        name: "EventStream",
        dependencies: ["EventNIOSupport", ssl, .product(name: "NIOTLS", package: "swift-nio")] + nio),
    TransportModule(name: "EventXMLRPC", dependencies: ["EventNIOSupport", log, http1] + nio),
    TransportModule(
        name: "EventRabbitMQ", dependencies: ["EventNIOSupport", ssl, log] + nio,
        testDependencies: ["EventFlatstore", .product(name: "NIOEmbedded", package: "swift-nio")]),
    TransportModule(name: "EventKafka", dependencies: ["CKafka", log]),
    TransportModule(name: "EventSQS", dependencies: ["EventNIOSupport", crypto, log, http1, ssl] + nio),
    TransportModule(name: "EventWebhook", dependencies: ["EventNIOSupport", crypto, log, http1, ssl] + nio),
]

let packageDirectory = Context.packageDirectory
func hasTests(_ name: String) -> Bool {
    FileManager.default.fileExists(atPath: "\(packageDirectory)/Tests/\(name)Tests")
}

/// What every module's tests link: the core, its test kit, and udp receivers to deliver to.
let testKit: [Target.Dependency] = [
    "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram", "EventVirtual",
    "EventNIOSupport", log,
]
func testTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    // A module's own name may also be in the kit (EventDatagram, EventVirtual): listed once.
    let own = Set(
        dependencies.compactMap { dependency -> String? in
            if case .byNameItem(let name, _) = dependency { return name }
            return nil
        })
    let kit = testKit.filter { dependency in
        if case .byNameItem(let name, _) = dependency { return !own.contains(name) }
        return true
    }
    return .testTarget(name: "\(name)Tests", dependencies: dependencies + kit)
}

let package = Package(
    name: "evi",
    products: [
        .executable(name: "evi", targets: ["evi"]),
        .executable(name: "evi-bench", targets: ["evi-bench"]),
        .library(name: "EventInterface", targets: ["EventInterface"]),
        .library(name: "EventCluster", targets: ["EventCluster"]),
        .library(name: "EventState", targets: ["EventState"]),
        .library(name: "EventSpool", targets: ["EventSpool"]),
        .library(name: "ManagementInterface", targets: ["ManagementInterface"]),
        .library(name: "EviModules", targets: ["EviModules"]),
        .library(name: "EviDaemon", targets: ["EviDaemon"]),
        .library(name: "EventInterfaceTestKit", targets: ["EventInterfaceTestKit"]),
        .library(name: "EventDatagramTestKit", targets: ["EventDatagramTestKit"]),
    ] + transportModules.map { .library(name: $0.name, targets: [$0.name]) },
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
    ],
    targets: [
        // The core and what transports share.
        .target(name: "EventInterface", dependencies: [log, metrics]),
        .target(name: "CDatagramBatch"),
        .target(name: "CKafka", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "EventNIOSupport",
            dependencies: [
                "EventInterface", http1, ssl, log, metrics,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ] + nio
        ),
        .target(name: "EventSpool", dependencies: ["EventInterface", log, metrics]),
        .target(
            name: "EventState",
            dependencies: ["EventInterface", "EventNIOSupport", .product(name: "GRDB", package: "GRDB.swift")]),
        .target(
            name: "EventCluster",
            dependencies: [
                "EventInterface", "EventNIOSupport", ssl, log, .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
                + nio),
        .target(
            name: "ManagementInterface",
            dependencies: [
                "EventInterface", "EventNIOSupport", metrics, http1, log,
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ] + nio
        ),
        // The daemon: the built-in modules, the library that composes them, the command line.
        .target(
            name: "EviModules",
            dependencies: ["EventInterface"] + transportModules.map { .byName(name: $0.name) }
        ),
        .target(
            name: "EviDaemon",
            dependencies: [
                "EventInterface", "EviModules", "EventNIOSupport", "EventSpool", "EventState", "EventCluster",
                "ManagementInterface", log, metrics,
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ] + nio
        ),
        .executableTarget(
            name: "evi",
            dependencies: [
                "EventInterface", "EviDaemon", "EviModules", "EventNIOSupport", log, metrics,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // `evi bench`, kept out of the daemon's binary (`evi bench` runs it from beside `evi`).
        .executableTarget(
            name: "evi-bench",
            dependencies: [
                "EventInterface", "EviDaemon", "EviModules", "EventNIOSupport", "EventCluster", log, ssl, http1,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ] + nio + transportModules.map { .byName(name: $0.name) }
        ),
        .target(name: "EventInterfaceTestKit", dependencies: ["EventInterface", "EventNIOSupport"]),
        .target(
            name: "EventDatagramTestKit", dependencies: ["EventDatagram", "EventInterface", "EventInterfaceTestKit"]),
        testTarget("EventInterface", []),
        testTarget(
            "EventNIOSupport",
            [.product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")]),
        testTarget("EventSpool", ["EventSpool"]),
        testTarget("EventState", ["EventState"]),
        testTarget("EventCluster", ["EventCluster"]),
        testTarget(
            "ManagementInterface",
            [
                "ManagementInterface", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), http1,
            ]),
        testTarget("EviDaemon", ["EviDaemon", "EviModules", "ManagementInterface"]),
        testTarget(
            "EviIntegration",
            ["EventStream", "EventFlatstore", "EventXMLRPC", "EventRabbitMQ", "EventKafka", "EviModules"]),
    ]
        + transportModules.map { .target(name: $0.name, dependencies: ["EventInterface"] + $0.dependencies) }
        + transportModules.filter { hasTests($0.name) }.map {
            testTarget($0.name, [.byName(name: $0.name)] + $0.testDependencies)
        }
)
