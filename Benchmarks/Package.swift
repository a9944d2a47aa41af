// swift-tools-version:6.1
// The benchmarks live in their own package so that `swift build` and `swift test` of Hush do
// not build the benchmark tooling. Run them with `scripts/bench` (or `swift package benchmark`
// from this folder).
import PackageDescription

let package = Package(
    name: "HushBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: "hush"),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ThemisBenchmarks",
            dependencies: [
                .product(name: "ThemisKit", package: "hush"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/ThemisBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
