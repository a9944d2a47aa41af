import Foundation
import Synchronization

/// Loads the Themis vector files: the fixture copy in this repository, or the folder named by
/// `HUSH_THEMIS_VECTORS` (same file names and schema), so another vector set runs unchanged.
enum Vectors {
    static var directory: URL {
        if let override = ProcessInfo.processInfo.environment["HUSH_THEMIS_VECTORS"], !override.isEmpty {
            return URL(fileURLWithPath: override, isDirectory: true)
        }
        return URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/themis-vectors", isDirectory: true)
    }

    static func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw VectorFileError(file: name)
        }
        return object
    }

    static func entries(_ name: String, _ key: String = "vectors") throws -> [[String: Any]] {
        guard let list = try load(name)[key] as? [[String: Any]] else { throw VectorFileError(file: name) }
        return list
    }
}

struct VectorFileError: Error, CustomStringConvertible {
    let file: String
    var description: String { "vector file \(file) does not have the expected shape" }
}

/// Counts every vector a suite checks, so a run can say how many it exercised.
final class VectorCounter: Sendable {
    static let shared = VectorCounter()
    private let counts = Mutex<[String: Int]>([:])

    func add(_ file: String, _ count: Int) {
        let total = counts.withLock { counts in
            counts[file, default: 0] += count
            return counts.values.reduce(0, +)
        }
        print("themis vectors checked: \(file) +\(count) (total so far \(total) from \(Vectors.directory.path))")
    }
}

extension Dictionary where Key == String, Value == Any {
    func string(_ key: String) -> String? { self[key] as? String }

    /// Hex field as bytes; nil when absent or JSON null.
    func bytes(_ key: String) -> [UInt8]? { (self[key] as? String).flatMap { [UInt8](hex: $0) } }

    func dict(_ key: String) -> [String: Any]? { self[key] as? [String: Any] }
}

extension Array where Element == UInt8 {
    init?(hex: String) {
        guard hex.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(hex.count / 2)
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self = bytes
    }

    var hex: String { map { String(format: "%02x", $0) }.joined() }
}
