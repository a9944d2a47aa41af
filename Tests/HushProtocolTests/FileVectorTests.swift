import Crypto
import Foundation
@testable import HushProtocol
import Testing

/// The shared file vector, Tests/Fixtures/files.json (docs/PROTOCOL.md §6.8): a sealed file and its
/// broken variants, file descriptions to accept or refuse, and the sender's file-name rule. The
/// web client runs the same file; Tests/Fixtures/files.md describes its shape.
@Suite(.timeLimit(.minutes(2))) struct FileVectorTests {
    static var file: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/files.json")
    }

    static func load() throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: file))
    }

    @Test func sealedCases() throws {
        let vector = try Self.load()
        let room = try #require(vector["room"]?.string)
        let described = try #require(vector["file"])
        let sealed = try #require(vector["sealed"]?.object).compactMapValues { $0.string.flatMap(Base64.decode) }
        let cases = try #require(vector["cases"]?.array)
        #expect(cases.count >= 9)
        for entry in cases {
            let name = entry["name"]?.string ?? "?"
            let size = entry["size"]?.int ?? described["size"]?.int ?? -1
            let hash = try #require((entry["sha256"] ?? described["sha256"])?.string.flatMap(Base64.decode))
            let file = try RoomFile(id: try #require(described["id"]?.string.flatMap(Base64.decode)),
                                    key: SymmetricKey(data: try #require(described["key"]?.string.flatMap(Base64.decode))),
                                    size: size, sha256: hash, name: "vector.bin", type: RoomFile.unknownType)
            let chunks = try (entry["chunks"]?.array ?? []).map { chunk -> [UInt8] in
                if let label = chunk.string { return try #require(sealed[label], "\(name): no sealed \(label)") }
                var bytes = try #require(chunk["of"]?.string.flatMap { sealed[$0] }, "\(name): bad chunk reference")
                let flip = try #require(chunk["flip"]?.int)
                bytes[flip] ^= 1
                return bytes
            }
            switch entry["expect"]?.string {
            case "ok":
                let bytes = try file.open(chunks, room: room)
                #expect(bytes.count == size, "\(name)")
                #expect(bytes.enumerated().allSatisfy { $0.element == UInt8($0.offset % 251) }, "\(name): content is byte i = i % 251")
            case "refused":
                #expect(throws: FileError.self, "\(name)") { try file.open(chunks, room: room) }
            default:
                Issue.record("\(name): expect is neither ok nor refused")
            }
        }
        print("file vector cases checked: \(cases.count)")
    }

    @Test func fileDescriptions() throws {
        let messages = try #require(try Self.load()["messages"]?.array)
        #expect(messages.count >= 20)
        for entry in messages {
            let name = entry["name"]?.string ?? "?"
            let valid = try #require(entry["valid"]) == .bool(true)
            let object = try #require(entry["file"])
            let decoded = try? object.decode(RoomFile.self)
            #expect((decoded != nil) == valid, "\(name)")
        }
        print("file description cases checked: \(messages.count)")
    }

    @Test func senderFileNames() throws {
        let names = try #require(try Self.load()["fileNames"]?.array)
        #expect(names.count >= 8)
        for entry in names {
            let input = try #require(entry["input"]?.string)
            let output = try #require(entry["output"]?.string)
            let made = RoomFile.sanitizedName(input)
            #expect(Array(made.unicodeScalars) == Array(output.unicodeScalars), "\(input.debugDescription)")
            #expect(RoomFile.isValidName(made), "\(input.debugDescription): the result is a file name")
        }
        print("file name cases checked: \(names.count)")
    }
}

/// Writes Tests/Fixtures/files.json once, from our own sealing code, with every expectation written
/// out by hand. Run with `HUSH_WRITE_FILE_VECTORS=1 swift test --filter FileVectorWriter`; writing
/// again replaces every byte (a fresh key, id and IVs).
@Suite(.timeLimit(.minutes(1))) struct FileVectorWriter {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["HUSH_WRITE_FILE_VECTORS"] == "1"))
    func writeVector() throws {
        let C = RoomFile.chunkSize
        let room = Base64.encodeURL(RoomPayload.randomBytes(16))
        let content = (0..<70000).map { UInt8($0 % 251) }
        let (file, chunks) = try RoomFile.seal(content, room: room, name: "vector.bin", type: RoomFile.unknownType)
        #expect(chunks.count == 2)
        let context = { (id: [UInt8], index: Int) in RoomFile.chunkContext(room: room, id: id, index: index, count: 2) }
        var padded = RoomFile.chunk(1, of: content)
        padded[70000 - C + 10] = 1
        let sealed: [String: [UInt8]] = [
            "good0": chunks[0], "good1": chunks[1],
            "foreign": try RoomFile.sealChunk(RoomFile.chunk(0, of: content), key: file.key, context: context(RoomPayload.randomBytes(16), 0)),
            "badPadding": try RoomFile.sealChunk(padded, key: file.key, context: context(file.id, 1)),
            "longer": try RoomFile.sealChunk(RoomFile.chunk(1, of: content) + [0], key: file.key, context: context(file.id, 1)),
        ]
        let b64 = { (bytes: [UInt8]) in JSONValue.string(Base64.encode(bytes)) }
        let cases: [JSONValue] = [
            ["name": "opens", "chunks": ["good0", "good1"], "expect": "ok"],
            ["name": "tampered byte", "chunks": ["good0", ["of": "good1", "flip": 100]], "expect": "refused"],
            ["name": "chunks swapped", "chunks": ["good1", "good0"], "expect": "refused"],
            ["name": "chunk of another file", "chunks": ["foreign", "good1"], "expect": "refused"],
            ["name": "missing chunk", "chunks": ["good0"], "expect": "refused"],
            ["name": "no chunks", "chunks": [], "expect": "refused"],
            ["name": "a chunk too many", "chunks": ["good0", "good1", "good1"], "expect": "refused"],
            ["name": "count cut short", "size": .int(C), "chunks": ["good0"], "expect": "refused"],
            ["name": "bad padding", "chunks": ["good0", "badPadding"], "expect": "refused"],
            ["name": "chunk too long", "chunks": ["good0", "longer"], "expect": "refused"],
            ["name": "wrong hash", "sha256": b64(Array(SHA256.hash(data: Array("other".utf8)))), "chunks": ["good0", "good1"], "expect": "refused"],
        ]
        try write([
            "description": .string(Self.description),
            "room": .string(room),
            "file": ["id": b64(file.id), "key": b64(file.key.bytes), "size": .int(file.size), "sha256": b64(file.sha256)],
            "sealed": .object(sealed.mapValues(b64)),
            "cases": .array(cases),
            "messages": .array(try descriptions()),
            "fileNames": .array(fileNames()),
        ])
    }

    static let description = """
        Files (docs/PROTOCOL.md §6.8); shape in Tests/Fixtures/files.md. "file" describes a sealed file of 70000 bytes, \
        byte i being i % 251, in room "room": open each case's "chunks" (labels of "sealed"; {"of", "flip"} is that chunk \
        with the byte at index "flip" XORed with 1) with the file's key and id; a case's "size" or "sha256" replaces the \
        file's (the count follows the size). "messages": the inner "file" object of a file message, valid or refused as \
        malformed. "fileNames": a local name and the file name a sender makes of it.
        """

    /// File descriptions around every rule of §6.8, each written with the outcome it must have.
    func descriptions() throws -> [JSONValue] {
        let good: [String: JSONValue] = [
            "id": .string(Base64.encode(RoomPayload.randomBytes(16))), "key": .string(Base64.encode(RoomPayload.randomBytes(32))),
            "chunks": 2, "size": 70000, "sha256": .string(Base64.encode(RoomPayload.randomBytes(32))),
            "name": "photo.png", "type": "image/png",
        ]
        func with(_ changes: [String: JSONValue?]) -> JSONValue {
            var object = good
            for (key, value) in changes { object[key] = value }
            return .object(object)
        }
        let b64 = { (count: Int) in JSONValue.string(Base64.encode(RoomPayload.randomBytes(count))) }
        let entry = { (name: String, file: JSONValue, valid: Bool) -> JSONValue in ["name": .string(name), "file": file, "valid": .bool(valid)] }
        return [
            entry("good, without preview", .object(good), true),
            entry("good, with preview", with(["preview": b64(600)]), true),
            entry("preview of 32768 bytes", with(["preview": b64(32768)]), true),
            entry("preview of 32769 bytes", with(["preview": b64(32769)]), false),
            entry("preview null", with(["preview": .some(.null)]), false),
            entry("preview not base64", with(["preview": "not base64!"]), false),
            entry("unknown field ignored", with(["caption": "hello"]), true),
            entry("id of 15 bytes", with(["id": b64(15)]), false),
            entry("id of 17 bytes", with(["id": b64(17)]), false),
            entry("id not base64", with(["id": "AAAA-AAAAAAAAAAAAAAAAA=="]), false),
            entry("key of 31 bytes", with(["key": b64(31)]), false),
            entry("key of 33 bytes", with(["key": b64(33)]), false),
            entry("sha256 of 31 bytes", with(["sha256": b64(31)]), false),
            entry("chunks 3 for 70000 bytes", with(["chunks": 3]), false),
            entry("chunks 1 for 70000 bytes", with(["chunks": 1]), false),
            entry("empty file, one chunk", with(["size": 0, "chunks": 1]), true),
            entry("empty file, no chunk", with(["size": 0, "chunks": 0]), false),
            entry("exactly one chunk", with(["size": 65536, "chunks": 1]), true),
            entry("one byte more", with(["size": 65537, "chunks": 2]), true),
            entry("25 MiB", with(["size": 26_214_400, "chunks": 400]), true),
            entry("size too big", with(["size": 26_214_401, "chunks": 401]), false),
            entry("size negative", with(["size": -1, "chunks": 1]), false),
            entry("size not an integer", with(["size": 69999.5]), false),
            entry("size as a string", with(["size": "70000"]), false),
            entry("chunks missing", with(["chunks": nil]), false),
            entry("name missing", with(["name": nil]), false),
            entry("name not a string", with(["name": 7]), false),
            entry("name empty", with(["name": ""]), false),
            entry("name with /", with(["name": "a/b.png"]), false),
            entry("name with \\", with(["name": "a\\b.png"]), false),
            entry("name .", with(["name": "."]), false),
            entry("name ..", with(["name": ".."]), false),
            entry("name ...", with(["name": "..."]), true),
            entry("name with a bidi override", with(["name": "\u{202E}gnp.exe"]), false),
            entry("name with a zero-width space", with(["name": "a\u{200B}b.png"]), false),
            entry("name with a newline", with(["name": "a\nb.png"]), false),
            entry("name with DEL", with(["name": "a\u{7F}.png"]), false),
            entry("name of 255 scalars (astral: 510 UTF-16 units)", with(["name": .string(String(repeating: "😀", count: 255))]), true),
            entry("name of 256 scalars", with(["name": .string(String(repeating: "a", count: 256))]), false),
            entry("name with spaces and accents", with(["name": " été 2026 .png"]), true),
            entry("type upper case", with(["type": "Image/png"]), false),
            entry("type with parameters", with(["type": "text/plain; charset=utf-8"]), false),
            entry("type without slash", with(["type": "imagepng"]), false),
            entry("type with two slashes", with(["type": "a/b/c"]), false),
            entry("type with empty subtype", with(["type": "image/"]), false),
            entry("type image/svg+xml", with(["type": "image/svg+xml"]), true),
            entry("type of 127 characters", with(["type": .string("a/" + String(repeating: "b", count: 125))]), true),
            entry("type of 128 characters", with(["type": .string("a/" + String(repeating: "b", count: 126))]), false),
            entry("type missing", with(["type": nil]), false),
        ]
    }

    /// The sender's rule: refused characters become `_`, cut to 255 scalars, empty (or `.`, `..`) becomes `file`.
    func fileNames() -> [JSONValue] {
        let pairs: [(String, String)] = [
            ("photo.png", "photo.png"),
            ("a/b.txt", "a_b.txt"),
            ("a\\b.txt", "a_b.txt"),
            ("", "file"),
            (".", "file"),
            ("..", "file"),
            ("...", "..."),
            ("line\nbreak\t.txt", "line_break_.txt"),
            ("\u{202E}gnp.exe", "_gnp.exe"),
            ("zero\u{200B}width\u{FEFF}.txt", "zero_width_.txt"),
            ("é 2026.png", "é 2026.png"),
            (String(repeating: "a", count: 300), String(repeating: "a", count: 255)),
            (String(repeating: "😀", count: 256), String(repeating: "😀", count: 255)),
        ]
        return pairs.map { ["input": .string($0.0), "output": .string($0.1)] }
    }

    func write(_ vector: JSONValue) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(vector).write(to: FileVectorTests.file)
        print("file vector written to \(FileVectorTests.file.path)")
    }
}
