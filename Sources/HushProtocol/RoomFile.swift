import Crypto
import Foundation
import ThemisKit

/// Why a file description was refused, or a file's chunks did not make the file it describes
/// (docs/PROTOCOL.md §6.8). Reading errors refuse the whole file: nothing of it is kept.
public enum FileError: Error, Sendable, Equatable, CustomStringConvertible {
    case badID, badKey, badSize, badChunkCount, badHash, badName, badType, badPreview
    /// Fewer chunks than the description's count: the first one missing.
    case missingChunk(index: Int)
    /// More chunks than the description's count, or a server that states another count.
    case chunkCountMismatch
    /// A chunk that does not open under the file key and the context of its position.
    case chunkDoesNotOpen(index: Int)
    /// A chunk that opened but is not exactly `RoomFile.chunkSize` bytes.
    case wrongChunkLength(index: Int)
    /// Bytes after the file's end in its last chunk that are not zero.
    case badPadding(index: Int)
    case hashMismatch
    /// The file is above `RoomFile.maxSize`.
    case tooLarge

    public var description: String {
        switch self {
        case .badID: "the file id is not 16 bytes"
        case .badKey: "the file key is not 32 bytes"
        case .badSize: "the file size is out of range"
        case .badChunkCount: "the chunk count does not match the size"
        case .badHash: "the file hash is not 32 bytes"
        case .badName: "the file name is not allowed"
        case .badType: "the media type is not allowed"
        case .badPreview: "the preview is too large"
        case .missingChunk(let index): "chunk \(index) is missing"
        case .chunkCountMismatch: "the server states another chunk count"
        case .chunkDoesNotOpen(let index): "chunk \(index) does not open (tampered, moved, or from another file)"
        case .wrongChunkLength(let index): "chunk \(index) has the wrong length"
        case .badPadding(let index): "chunk \(index) has bytes after the end of the file"
        case .hashMismatch: "the file's SHA-256 does not match"
        case .tooLarge: "the file is larger than 25 MiB"
        }
    }
}

/// A file as its file message describes it (docs/PROTOCOL.md §6.8): valid by construction, so a
/// value of this type always passes every rule a reader checks. No I/O.
public struct RoomFile: Sendable, Equatable {
    public static let chunkSize = 65536
    public static let maxSize = 26_214_400
    public static let maxChunks = 400
    /// A sealed chunk: the chunk and Secure Cell Seal's 44-byte header.
    public static let sealedChunkSize = chunkSize + 44
    public static let idBytes = 16
    public static let keyBytes = 32
    public static let maxPreviewBytes = 32768
    public static let maxNameScalars = 255
    public static let unknownType = "application/octet-stream"

    public let id: [UInt8]
    public let key: SymmetricKey
    public let size: Int
    public let sha256: [UInt8]
    public let name: String
    public let type: String
    public let preview: [UInt8]?

    /// The chunk count of `size` bytes: never 0, so an empty file is one chunk of zeros.
    public static func chunkCount(size: Int) -> Int { max(1, (size + chunkSize - 1) / chunkSize) }

    public var chunks: Int { Self.chunkCount(size: size) }

    public init(id: [UInt8], key: SymmetricKey, size: Int, sha256: [UInt8], name: String, type: String,
                preview: [UInt8]? = nil) throws(FileError) {
        guard id.count == Self.idBytes else { throw .badID }
        guard key.byteCount == Self.keyBytes else { throw .badKey }
        guard (0...Self.maxSize).contains(size) else { throw .badSize }
        guard sha256.count == SHA256.byteCount else { throw .badHash }
        guard Self.isValidName(name) else { throw .badName }
        guard Self.isValidMediaType(type) else { throw .badType }
        guard (preview?.count ?? 0) <= Self.maxPreviewBytes else { throw .badPreview }
        self.id = id
        self.key = key
        self.size = size
        self.sha256 = sha256
        self.name = name
        self.type = type
        self.preview = preview
    }

    // MARK: the file name rule

    /// Characters no file name holds: those refused in display names (controls, bidi and
    /// invisible characters, §6.7) and both path separators.
    static func isRefusedInName(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "/" || scalar == "\\" || RoomState.isRefusedInName(scalar)
    }

    /// Whether a name read from a file message is a file name: 1…255 scalars, not `.` or `..`,
    /// nothing refused.
    public static func isValidName(_ name: String) -> Bool {
        (1...maxNameScalars).contains(name.unicodeScalars.count) && name != "." && name != ".."
            && !name.unicodeScalars.contains(where: isRefusedInName)
    }

    /// The sender's side: a local file name made into a file name. Refused characters become
    /// `_`, the name is cut to 255 scalars, and a name with nothing left (empty, `.` or `..`)
    /// becomes `file`.
    public static func sanitizedName(_ local: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in local.unicodeScalars.prefix(maxNameScalars) {
            scalars.append(isRefusedInName(scalar) ? "_" : scalar)
        }
        let name = String(scalars)
        return name.isEmpty || name == "." || name == ".." ? "file" : name
    }

    // MARK: the media type rule

    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: Array("!#$&^_.+-".utf8).contains(byte)
        }
    }

    /// `type/subtype`, 3…127 characters, lower case, no parameters.
    public static func isValidMediaType(_ type: String) -> Bool {
        let bytes = Array(type.utf8)
        guard (3...127).contains(bytes.count) else { return false }
        let parts = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(isTokenCharacter) }
    }

    /// The media type a sender states for a local file name, by its extension: the common
    /// types, else `application/octet-stream`.
    public static func mediaType(forName name: String) -> String {
        guard let dot = name.lastIndex(of: ".") else { return unknownType }
        switch name[name.index(after: dot)...].lowercased() {
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "pdf": return "application/pdf"
        case "txt": return "text/plain"
        default: return unknownType
        }
    }

    // MARK: chunks

    /// The context chunk `index` is sealed under: it binds the room, the file, the position and
    /// the count, so a chunk moved, borrowed or counted otherwise does not open.
    public static func chunkContext(room: String, id: [UInt8], index: Int, count: Int) -> [UInt8] {
        Array("hush-file:\(room):\(Base64.encode(id)):\(index):\(count)".utf8)
    }

    /// Seals one chunk's plaintext as it is (exactly `chunkSize` bytes in a well-formed file).
    public static func sealChunk(_ plaintext: [UInt8], key: SymmetricKey, context: [UInt8]) throws(ThemisError) -> [UInt8] {
        try RoomPayload.cell(key).encrypt(plaintext, context: context)
    }

    /// Chunk `index` of `bytes`, padded with zeros to `chunkSize`.
    static func chunk(_ index: Int, of bytes: [UInt8]) -> [UInt8] {
        let start = min(index * chunkSize, bytes.count)
        let end = min(start + chunkSize, bytes.count)
        return Array(bytes[start..<end]) + [UInt8](repeating: 0, count: chunkSize - (end - start))
    }

    /// A new file: fresh id and key, `bytes` sealed into its chunks (in order). `name` must be a
    /// file name already (`sanitizedName`), `type` a media type.
    public static func seal(_ bytes: [UInt8], room: String, name: String, type: String,
                            preview: [UInt8]? = nil) throws -> (file: RoomFile, chunks: [[UInt8]]) {
        guard bytes.count <= maxSize else { throw FileError.tooLarge }
        let file = try RoomFile(id: RoomPayload.randomBytes(idBytes), key: SymmetricKey(size: SymmetricKeySize(bitCount: keyBytes * 8)), size: bytes.count,
                                sha256: SHA256Digest.of(bytes), name: name, type: type, preview: preview)
        let chunks = try (0..<file.chunks).map { index in
            try sealChunk(chunk(index, of: bytes), key: file.key, context: chunkContext(room: room, id: file.id, index: index, count: file.chunks))
        }
        return (file, chunks)
    }

    /// Opens chunk `index` and checks its length and, in the last chunk, that every byte after
    /// the file's end is zero. Returns the file's bytes it holds.
    public func openChunk(_ sealed: [UInt8], index: Int, room: String) throws(FileError) -> ArraySlice<UInt8> {
        guard (0..<chunks).contains(index) else { throw .chunkCountMismatch }
        let context = Self.chunkContext(room: room, id: id, index: index, count: chunks)
        guard let plain = try? RoomPayload.cell(key).decrypt(sealed, context: context) else { throw .chunkDoesNotOpen(index: index) }
        guard plain.count == Self.chunkSize else { throw .wrongChunkLength(index: index) }
        let held = min(Self.chunkSize, size - index * Self.chunkSize)
        guard plain[held...].allSatisfy({ $0 == 0 }) else { throw .badPadding(index: index) }
        return plain[..<held]
    }

    /// The file from its sealed chunks, in order: every chunk opens at its position, the count is
    /// the description's, and the bytes hash to `sha256`. Any failure refuses the whole file.
    public func open(_ sealedChunks: [[UInt8]], room: String) throws(FileError) -> [UInt8] {
        guard sealedChunks.count <= chunks else { throw .chunkCountMismatch }
        guard sealedChunks.count == chunks else { throw .missingChunk(index: sealedChunks.count) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        for (index, sealed) in sealedChunks.enumerated() {
            bytes += try openChunk(sealed, index: index, room: room)
        }
        guard constantTimeEquals(SHA256Digest.of(bytes), sha256) else { throw .hashMismatch }
        return bytes
    }
}

extension RoomFile: Codable {
    enum CodingKeys: String, CodingKey { case id, key, chunks, size, sha256, name, type, preview }

    /// Strict: every field of §6.8 with its type, then every rule; `chunks` must be the count
    /// `size` makes. Unknown fields are ignored.
    public init(from decoder: any Decoder) throws {
        let fields = try decoder.container(keyedBy: CodingKeys.self)
        let size = try fields.decode(Int.self, forKey: .size)
        let chunks = try fields.decode(Int.self, forKey: .chunks)
        guard (0...Self.maxSize).contains(size) else { throw FileError.badSize }
        guard chunks == Self.chunkCount(size: size) else { throw FileError.badChunkCount }
        // Present means a string of base64: `null` is not absent, as in the web client.
        let preview = fields.contains(.preview) ? try fields.decode(Base64Bytes.self, forKey: .preview).bytes : nil
        try self.init(id: try fields.decode(Base64Bytes.self, forKey: .id).bytes, key: try fields.decode(Base64Key.self, forKey: .key).symmetricKey,
                      size: size, sha256: try fields.decode(Base64Bytes.self, forKey: .sha256).bytes,
                      name: try fields.decode(String.self, forKey: .name), type: try fields.decode(String.self, forKey: .type),
                      preview: preview)
    }

    public func encode(to encoder: any Encoder) throws {
        var fields = encoder.container(keyedBy: CodingKeys.self)
        try fields.encode(Base64Bytes(id), forKey: .id)
        try fields.encode(Base64Key(key), forKey: .key)
        try fields.encode(chunks, forKey: .chunks)
        try fields.encode(size, forKey: .size)
        try fields.encode(Base64Bytes(sha256), forKey: .sha256)
        try fields.encode(name, forKey: .name)
        try fields.encode(type, forKey: .type)
        try fields.encodeIfPresent(preview.map(Base64Bytes.init), forKey: .preview)
    }
}

/// Printed (a log, a failed test) without its key: the key opens the file.
extension RoomFile: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        "RoomFile(id: \(Base64.encode(id)), size: \(size), chunks: \(chunks), name: \(name.debugDescription), type: \(type))"
    }
    public var debugDescription: String { description }
}
