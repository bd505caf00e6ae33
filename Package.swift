// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "evi",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "EventInterface", targets: ["EventInterface"]),
        .library(name: "EventVirtual", targets: ["EventVirtual"]),
        .library(name: "EventDatagram", targets: ["EventDatagram"]),
        .library(name: "EventInterfaceTestKit", targets: ["EventInterfaceTestKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0")
    ],
    targets: [
        .target(
            name: "EventInterface",
            dependencies: [.product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "EventVirtual", dependencies: ["EventInterface"]),
        .target(name: "EventDatagram", dependencies: ["EventInterface"]),
        .target(name: "EventInterfaceTestKit", dependencies: ["EventInterface"]),
        .testTarget(
            name: "EventInterfaceTests",
            dependencies: ["EventInterface", "EventInterfaceTestKit", "EventDatagram", "EventVirtual"]
        ),
        .testTarget(
            name: "EventVirtualTests",
            dependencies: ["EventVirtual", "EventInterface", "EventInterfaceTestKit", "EventDatagram"]
        ),
        .testTarget(
            name: "EventDatagramTests",
            dependencies: ["EventDatagram", "EventInterface", "EventInterfaceTestKit"]
        ),
    ]
)
