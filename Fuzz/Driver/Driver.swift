import FuzzTargets
import Foundation

// libFuzzer's entry points for `hush-fuzz` (built by scripts/fuzz with
// `--sanitize fuzzer --sanitize address`; libFuzzer supplies `main`). One binary serves every
// target: HUSH_FUZZ_TARGET names it. HUSH_FUZZ_SEEDS=<folder>: first write the target's seed
// corpus there (from this process, since some seeds are genuine only for the handshake it made),
// then fuzz; name the folder as a corpus on the command line too.

/// Set once in `LLVMFuzzerInitialize`, before libFuzzer runs any input, and only read after.
nonisolated(unsafe) private var selected: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> CInt {
    let environment = ProcessInfo.processInfo.environment
    guard let name = environment["HUSH_FUZZ_TARGET"], let target = FuzzTarget.named(name) else {
        let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
        FileHandle.standardError.write(Data("hush-fuzz: set HUSH_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    if let folder = environment["HUSH_FUZZ_SEEDS"] {
        do {
            let seeds = try target.seeds(.repository)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (index, seed) in seeds.enumerated() {
                try Data(seed).write(to: URL(fileURLWithPath: folder).appendingPathComponent("seed-\(index)"))
            }
        } catch {
            FileHandle.standardError.write(Data("hush-fuzz: seeds of \(name): \(error)\n".utf8))
            exit(1)
        }
    }
    selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    _ = selected?.run(input)
    return 0
}
