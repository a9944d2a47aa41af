// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Hush",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ThemisKit", targets: ["ThemisKit"]),
        .library(name: "HushProtocol", targets: ["HushProtocol"]),
        .library(name: "HushServer", targets: ["HushServer"]),
        .library(name: "HushClient", targets: ["HushClient"]),
        .executable(name: "hush", targets: ["hush"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    ],
    targets: [
        .target(
            name: "ThemisKit",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "ThemisKitTests",
            dependencies: ["ThemisKit"],
            exclude: []
        ),
        // JSON-over-stdio front end to ThemisKit for the JS cross-implementation tests.
        .executableTarget(name: "themis-interop", dependencies: ["ThemisKit"]),
        // Wire messages, validation, invite links, the end-to-end payload format and the pure
        // room/join state machines. No I/O.
        .target(
            name: "HushProtocol",
            dependencies: [
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "HushServer",
            dependencies: [
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "HushClient",
            dependencies: [
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The terminal client and the load generator: the key store's room sessions, line
        // commands, output formats and bench statistics (`hush chat`, `hush bench`).
        .target(
            name: "HushTerminal",
            dependencies: [
                "HushClient",
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "hush",
            dependencies: [
                "HushServer",
                "HushClient",
                "HushTerminal",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // What the server and CLI test suites share: an in-process server, the built binary.
        .target(
            name: "HushTestSupport",
            dependencies: [
                "HushServer",
                "HushClient",
                "HushProtocol",
                "ThemisKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/HushTestSupport"
        ),
        // The shared room scenario vectors (Tests/Fixtures/room-scenarios) against `RoomState`;
        // the web client runs the same files (tests/js/scenarios.test.mjs).
        .testTarget(name: "HushProtocolTests", dependencies: ["HushProtocol", "ThemisKit", "FuzzTargets",
                                                           .product(name: "Crypto", package: "swift-crypto")]),
        // The decoders under fuzzing and what must hold for every input (docs/FUZZING.md). The
        // test suite runs their seeds and kept crash inputs; scripts/fuzz drives them with libFuzzer.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "HushClient",
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Fuzz/Targets"
        ),
        .testTarget(
            name: "HushServerTests",
            dependencies: [
                "HushTestSupport",
                "HushServer",
                "HushClient",
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                // Tests look into the database file as another process would.
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .testTarget(
            name: "HushCLITests",
            dependencies: [
                "HushTestSupport",
                "HushTerminal",
                "HushServer",
                "HushClient",
                "HushProtocol",
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

// The libFuzzer driver: libFuzzer supplies `main`, so it builds only in scripts/fuzz
// (HUSH_FUZZ=1, with `--sanitize fuzzer`), never in an ordinary build.
if Context.environment["HUSH_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "hush-fuzz",
            dependencies: ["FuzzTargets"],
            path: "Fuzz/Driver",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ))
}
