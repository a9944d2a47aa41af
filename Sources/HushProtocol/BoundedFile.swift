import Foundation

/// Reads a file whole only when it is at most `maxBytes`: every file is input from outside,
/// and one that is larger than what it should hold is refused before it is read.
public enum BoundedFile {
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case missing(String)
        case unreadable(String)
        case tooLarge(String, maxBytes: Int)

        public var description: String {
            switch self {
            case .missing(let path): "\(path) does not exist"
            case .unreadable(let path): "cannot read \(path)"
            case .tooLarge(let path, let maxBytes): "\(path) is larger than \(maxBytes) bytes"
            }
        }
    }

    public static func read(_ path: String, maxBytes: Int) throws(Failure) -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw FileManager.default.fileExists(atPath: path) ? .unreadable(path) : .missing(path)
        }
        defer { try? handle.close() }
        // One byte more than allowed tells a file that is too large from one that fits exactly.
        guard let data = try? handle.read(upToCount: maxBytes + 1) else { return [] }
        guard data.count <= maxBytes else { throw .tooLarge(path, maxBytes: maxBytes) }
        return Array(data)
    }
}
