import Foundation
import FuzzTargets
import Testing
import ThemisKit

/// The fuzz targets outside libFuzzer: each target's seeds go through it (and some must be
/// accepted, or the fuzzer would only ever explore refusals), and every input kept in
/// Tests/Fixtures/fuzz-regressions/<target>/ (crashes found by `scripts/fuzz`, and inputs
/// that once hung) runs again, so a fixed crash stays fixed.
@Suite(.timeLimit(.minutes(5))) struct FuzzTargetTests {
    static let regressions = Fixtures.repository.folder.appendingPathComponent("fuzz-regressions")

    @Test(arguments: FuzzTarget.all.map(\.name))
    func seedsRunAndSomeAreAccepted(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let seeds = try target.seeds(.repository)
        #expect(seeds.count >= 2, "\(name): a seed corpus of \(seeds.count)")
        let outcomes = seeds.map(target.run)
        #expect(outcomes.contains(.accepted), "\(name): no seed is accepted, so the harness never gets past its first check")
    }

    @Test(arguments: FuzzTarget.all.map(\.name))
    func keptInputsStillPass(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let folder = Self.regressions.appendingPathComponent(name)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for file in files.sorted() where !file.hasPrefix(".") {
            _ = target.run(Array(try Data(contentsOf: folder.appendingPathComponent(file))))
        }
    }

    @Test func everyKeptInputBelongsToATarget() throws {
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: Self.regressions.path)) ?? []
        for folder in folders where !folder.hasPrefix(".") && folder != "README.md" {
            #expect(FuzzTarget.named(folder) != nil, "fuzz-regressions/\(folder) names no target")
        }
    }

    @Test func checksumRepairLetsADamagedContainerThrough() throws {
        let container = ThemisPrivateKey().publicKey.containerBytes
        var damaged = container
        damaged[8] ^= 0xFF
        #expect(throws: ThemisError.badChecksum) { try ThemisPublicKey(containerBytes: damaged) }
        #expect(ContainerChecksums.repaired(damaged) == container)
        #expect(ContainerChecksums.repaired(Array(container.prefix(11))) == Array(container.prefix(11)))
    }

    @Test func fieldsSplitWhatJoinWrote() {
        let fields: [[UInt8]] = [[1, 2], [], Array(repeating: 9, count: 300), [4]]
        #expect(Fields.split(Fields.join(fields), count: 4) == fields)
        // Short input: missing fields are empty, a length past the end takes what is there.
        #expect(Fields.split([0, 5, 1], count: 3) == [[1], [], []])
    }
}
