import Foundation
import HushProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing a received file where the person asked (docs/PROTOCOL.md §6.8): whole or not at all,
/// never over an existing file, and the sender's name only ever as a name inside that folder.
public enum SavedFile {
    /// The candidates for `name`: itself, then `stem (1).ext`, `stem (2).ext`, …
    static func candidate(_ name: String, _ attempt: Int) -> String {
        guard attempt > 0 else { return name }
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return "\(name[..<dot]) (\(attempt))\(name[dot...])"
        }
        return "\(name) (\(attempt))"
    }

    /// Writes `bytes` as `name` in `directory` and returns where: first to a temporary file in
    /// that folder, then linked to the first free name (`link` fails when the name exists, so no
    /// file is ever replaced, even one created meanwhile), then the temporary file is removed.
    /// A name that is not a file name is refused: it never becomes a path.
    public static func write(_ bytes: [UInt8], name: String, in directory: URL) throws -> URL {
        guard RoomFile.isValidName(name) else { throw ChatError("the file name is not allowed; nothing was saved") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ChatError("\(directory.path) is not a folder")
        }
        let temporary = directory.appendingPathComponent(".hush-\(UUID().uuidString).part")
        guard FileManager.default.createFile(atPath: temporary.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw ChatError("cannot write in \(directory.path)")
        }
        defer { unlink(temporary.path) }
        for attempt in 0..<1000 {
            let target = directory.appendingPathComponent(candidate(name, attempt), isDirectory: false)
            // The name was checked, but the path must still be exactly one entry of this folder.
            guard target.deletingLastPathComponent().standardizedFileURL.path == directory.standardizedFileURL.path else {
                throw ChatError("the file name is not allowed; nothing was saved")
            }
            if link(temporary.path, target.path) == 0 { return target }
            guard errno == EEXIST else {
                throw ChatError("cannot save \(target.lastPathComponent) in \(directory.path): \(String(cString: strerror(errno)))")
            }
        }
        throw ChatError("too many files named like \(name) in \(directory.path)")
    }
}
