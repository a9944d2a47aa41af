// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Hush",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "ThemisKit", targets: ["ThemisKit"]),
        .library(name: "HushProtocol", targets: ["HushProtocol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
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
        // Wire messages, validation, invite links, the end-to-end payload format and the pure
        // room/join state machines. No I/O.
        .target(
            name: "HushProtocol",
            dependencies: [
                "ThemisKit",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
    ]
)
