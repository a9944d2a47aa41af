import Foundation

/// One decoder under fuzzing: `run` feeds it an input and checks what must hold for every
/// input (it traps, through `precondition`, only on a real bug: an invariant broken, never on
/// a refused input). libFuzzer drives it through `hush-fuzz` (scripts/fuzz); the test suite
/// runs every seed and every input kept in Tests/Fixtures/fuzz-regressions/<name>/ through it.
public struct FuzzTarget: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The decoder took the input (and the invariants held).
        case accepted
        /// The decoder refused the input with its own error.
        case refused
    }

    public let name: String
    public let about: String
    public let run: @Sendable ([UInt8]) -> Outcome
    /// A starting corpus from the repository's fixtures (and values made with the code).
    public let seeds: @Sendable (Fixtures) throws -> [[UInt8]]

    public static let all: [FuzzTarget] = ThemisTargets.all + HushTargets.all

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// Fuzz inputs that carry several values (a key, a context, a ciphertext): every field but
/// the last is a big-endian 16-bit length and its bytes; the last field is the rest. Any
/// input splits (missing fields are empty), so the fuzzer can reach every field.
public enum Fields {
    public static func split(_ input: [UInt8], count: Int) -> [[UInt8]] {
        var fields: [[UInt8]] = []
        var at = 0
        for _ in 0..<(count - 1) {
            guard at + 2 <= input.count else { fields.append([]); continue }
            let length = Int(input[at]) << 8 | Int(input[at + 1])
            let end = min(input.count, at + 2 + length)
            fields.append(Array(input[(at + 2)..<end]))
            at = end
        }
        fields.append(at < input.count ? Array(input[at...]) : [])
        return fields
    }

    public static func join(_ fields: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        for field in fields.dropLast() {
            let length = min(field.count, Int(UInt16.max))
            out += [UInt8(length >> 8), UInt8(length & 0xFF)] + field.prefix(length)
        }
        return out + (fields.last ?? [])
    }
}

/// The repository's test fixtures (Themis vectors, room scenarios), read as JSON.
public struct Fixtures: Sendable {
    public let folder: URL

    /// `Tests/Fixtures` of the checkout this file was built from.
    public static let repository = Fixtures(
        folder: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures"))

    public init(folder: URL) { self.folder = folder }

    func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: folder.appendingPathComponent(path))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CocoaError(.fileReadCorruptFile)
        }
        return object
    }

    /// The `vectors` (or another list) of one Themis vector file.
    func vectors(_ file: String, list: String = "vectors") throws -> [[String: Any]] {
        try json("themis-vectors/\(file)")[list] as? [[String: Any]] ?? []
    }
}

/// Lowercase hex as the Themis vector files write it; nil, absent or malformed gives [].
func hex(_ value: Any?) -> [UInt8] {
    guard let text = value as? String, text.count % 2 == 0 else { return [] }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.count / 2)
    var index = text.startIndex
    while index < text.endIndex {
        let next = text.index(index, offsetBy: 2)
        guard let byte = UInt8(text[index..<next], radix: 16) else { return [] }
        bytes.append(byte)
        index = next
    }
    return bytes
}

/// Soter containers (keys, handshake messages) carry a CRC-32C: nearly every mutation breaks
/// it, and the fuzzer would never get past that one check. The targets that read containers
/// run each input as it is and again with every container's checksum made right.
/// (The CRC is computed here, not borrowed from ThemisKit, so the harness uses only public API.)
public enum ContainerChecksums {
    static let tags: [[UInt8]] = ["UEC2", "REC2", "TSPM", "TSID", "TSSC"].map { Array($0.utf8) }

    /// `bytes` with the checksum of every container-shaped range set to match its contents,
    /// innermost first (a later container's bytes are part of an earlier one's).
    public static func repaired(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        guard out.count >= 12 else { return out }
        for start in stride(from: out.count - 12, through: 0, by: -1) where tags.contains(where: { out[start..<(start + 4)].elementsEqual($0) }) {
            let size = out[(start + 4)..<(start + 8)].reduce(0) { $0 << 8 | Int($1) }
            guard size >= 12, start + size <= out.count else { continue }
            let crc = checksum(out[(start + 12)..<(start + size)], initial: checksum(Array(out[start..<(start + 8)]) + [0, 0, 0, 0], initial: 0))
            for index in 0..<4 { out[start + 8 + index] = UInt8(truncatingIfNeeded: crc >> (8 * index)) }
        }
        return out
    }

    private static let table: [UInt32] = (0..<256).map { index in
        (0..<8).reduce(UInt32(index)) { crc, _ in crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }

    private static func checksum<Bytes: Sequence<UInt8>>(_ bytes: Bytes, initial: UInt32) -> UInt32 {
        ~bytes.reduce(~initial) { crc, byte in table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
    }
}

extension FuzzTarget.Outcome {
    /// Accepted if either run accepted.
    static func either(_ first: Self, _ second: Self) -> Self { first == .accepted || second == .accepted ? .accepted : .refused }
}
