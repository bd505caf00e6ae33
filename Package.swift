// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "evi",
    products: [
        .executable(name: "evi", targets: ["evi"]),
        .library(name: "EventInterface", targets: ["EventInterface"]),
        .library(name: "EventVirtual", targets: ["EventVirtual"]),
        .library(name: "EventDatagram", targets: ["EventDatagram"]),
        .library(name: "EventFlatstore", targets: ["EventFlatstore"]),
        .library(name: "EventStream", targets: ["EventStream"]),
        .library(name: "EventXMLRPC", targets: ["EventXMLRPC"]),
        .library(name: "EventRabbitMQ", targets: ["EventRabbitMQ"]),
        .library(name: "EventKafka", targets: ["EventKafka"]),
        .library(name: "EventSQS", targets: ["EventSQS"]),
        .library(name: "EventWebhook", targets: ["EventWebhook"]),
        .library(name: "EventCluster", targets: ["EventCluster"]),
        .library(name: "EventState", targets: ["EventState"]),
        .library(name: "EventSpool", targets: ["EventSpool"]),
        .library(name: "ManagementInterface", targets: ["ManagementInterface"]),
        .library(name: "EventInterfaceTestKit", targets: ["EventInterfaceTestKit"]),
        .library(name: "EventDatagramTestKit", targets: ["EventDatagramTestKit"]),
    ],
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
    ],
    targets: [
        .target(
            name: "EventInterface",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(name: "EventVirtual", dependencies: ["EventInterface"]),
        .target(name: "CDatagramBatch"),
        .target(name: "EventDatagram", dependencies: ["EventInterface", "CDatagramBatch"]),
        .target(name: "EventFlatstore", dependencies: ["EventInterface"]),
        .target(
            name: "EventNIOSupport",
            dependencies: [
                "EventInterface",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "EventSpool",
            dependencies: [
                "EventInterface",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "EventState",
            dependencies: ["EventInterface", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "EventRabbitMQ",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "CKafka", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "EventKafka",
            dependencies: ["EventInterface", "CKafka", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "EventSQS",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "EventCluster",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "EventWebhook",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "EventXMLRPC",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "EventStream",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ManagementInterface",
            dependencies: [
                "EventInterface", "EventNIOSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "evi",
            dependencies: [
                "EventInterface", "EventVirtual", "EventDatagram", "EventFlatstore", "EventStream", "EventXMLRPC",
                "EventRabbitMQ", "EventState", "EventSpool", "EventKafka", "EventSQS", "EventWebhook",
                "EventCluster", "EventNIOSupport", "ManagementInterface",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(name: "EventInterfaceTestKit", dependencies: ["EventInterface"]),
        .target(
            name: "EventDatagramTestKit", dependencies: ["EventDatagram", "EventInterface", "EventInterfaceTestKit"]),
        .testTarget(
            name: "EventInterfaceTests",
            dependencies: [
                "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram", "EventVirtual",
            ]
        ),
        .testTarget(
            name: "EventVirtualTests",
            dependencies: [
                "EventVirtual", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram",
            ]
        ),
        .testTarget(
            name: "EventDatagramTests",
            dependencies: ["EventDatagram", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit"]
        ),
        .testTarget(
            name: "EventStateTests",
            dependencies: [
                "EventState", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram",
                "EventVirtual",
            ]
        ),
        .testTarget(
            name: "EventRabbitMQTests",
            dependencies: [
                "EventRabbitMQ", "EventFlatstore", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit",
                "EventVirtual",
                "EventDatagram",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "EventNIOSupportTests",
            dependencies: [
                "EventNIOSupport", "EventInterface", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "EventSpoolTests",
            dependencies: [
                "EventSpool", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram",
                "EventVirtual",
            ]
        ),
        .testTarget(
            name: "EventXMLRPCTests",
            dependencies: [
                "EventXMLRPC", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventVirtual",
                "EventDatagram",
            ]
        ),
        .testTarget(
            name: "EventStreamTests",
            dependencies: [
                "EventStream", "EventNIOSupport", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventVirtual",
                "EventDatagram",
            ]
        ),
        .testTarget(
            name: "EventFlatstoreTests",
            dependencies: [
                "EventFlatstore", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventVirtual",
                "EventDatagram",
            ]
        ),
        .testTarget(
            name: "ManagementInterfaceTests",
            dependencies: [
                "ManagementInterface", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit",
                "EventDatagram", "EventVirtual", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "EviIntegrationTests",
            dependencies: [
                "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram", "EventVirtual",
                "EventStream",
                "EventFlatstore",
                "EventXMLRPC", "EventRabbitMQ", "EventKafka", "EventNIOSupport",
            ]
        ),
        .testTarget(
            name: "EventSQSTests",
            dependencies: [
                "EventSQS", "EventNIOSupport", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit",
                "EventDatagram", "EventVirtual",
            ]
        ),
        .testTarget(
            name: "EventWebhookTests",
            dependencies: [
                "EventWebhook", "EventNIOSupport", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit",
                "EventDatagram", "EventVirtual",
            ]
        ),
        .testTarget(
            name: "EventClusterTests",
            dependencies: ["EventCluster", "EventInterface", "EventInterfaceTestKit"]
        ),
        .testTarget(
            name: "EventKafkaTests",
            dependencies: [
                "EventKafka", "EventInterface", "EventInterfaceTestKit", "EventDatagramTestKit", "EventDatagram",
                "EventVirtual",
            ]
        ),
    ]
)
