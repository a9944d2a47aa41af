import Crypto
import Foundation
@testable import HushProtocol
import Testing
import ThemisKit

/// Files (docs/PROTOCOL.md §6.8) in the pure format: sealing and opening at the chunk edges,
/// each broken variant refused with its own error, the rules of a description, and a file
/// message through `RoomState` like any room message.
@Suite(.timeLimit(.minutes(2))) struct RoomFileTests {
    static let C = RoomFile.chunkSize
    let room = Base64.encodeURL(RoomPayload.randomBytes(16))

    static func content(_ size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) } }

    @Test(arguments: [0, 1, C - 1, C, C + 1, 3 * C + 5])
    func roundTrip(size: Int) throws {
        let bytes = Self.content(size)
        let (file, chunks) = try RoomFile.seal(bytes, room: room, name: "a.bin", type: RoomFile.unknownType)
        #expect(file.chunks == max(1, (size + Self.C - 1) / Self.C))
        #expect(chunks.count == file.chunks)
        #expect(chunks.allSatisfy { $0.count == RoomFile.sealedChunkSize }, "every sealed chunk has one length")
        #expect(try file.open(chunks, room: room) == bytes)
    }

    @Test func everyBrokenVariantIsRefusedWithItsError() throws {
        let bytes = Self.content(2 * Self.C + 100)
        let (file, chunks) = try RoomFile.seal(bytes, room: room, name: "a.bin", type: RoomFile.unknownType)
        let context = { (index: Int) in RoomFile.chunkContext(room: room, id: file.id, index: index, count: 3) }
        var tampered = chunks
        tampered[1][200] ^= 1
        #expect(throws: FileError.chunkDoesNotOpen(index: 1)) { try file.open(tampered, room: room) }
        #expect(throws: FileError.chunkDoesNotOpen(index: 0)) { try file.open([chunks[1], chunks[0], chunks[2]], room: room) }
        #expect(throws: FileError.chunkDoesNotOpen(index: 0)) { try file.open(chunks, room: "another-room-id-000000") }
        #expect(throws: FileError.missingChunk(index: 2)) { try file.open(Array(chunks.prefix(2)), room: room) }
        #expect(throws: FileError.chunkCountMismatch) { try file.open(chunks + [chunks[2]], room: room) }
        var padded = RoomFile.chunk(2, of: bytes)
        padded[150] = 9
        #expect(throws: FileError.badPadding(index: 2)) {
            try file.open([chunks[0], chunks[1], try RoomFile.sealChunk(padded, key: file.key, context: context(2))], room: room)
        }
        let short = try RoomFile.sealChunk(Array(RoomFile.chunk(2, of: bytes).prefix(Self.C - 1)), key: file.key, context: context(2))
        #expect(throws: FileError.wrongChunkLength(index: 2)) { try file.open([chunks[0], chunks[1], short], room: room) }
        let other = try RoomFile(id: file.id, key: file.key, size: file.size, sha256: Array(SHA256.hash(data: [1])), name: file.name, type: file.type)
        #expect(throws: FileError.hashMismatch) { try other.open(chunks, room: room) }
        // Same content, same key, but described as fewer chunks: the contexts differ.
        let cut = try RoomFile(id: file.id, key: file.key, size: 2 * Self.C, sha256: file.sha256, name: file.name, type: file.type)
        #expect(throws: FileError.chunkDoesNotOpen(index: 0)) { try cut.open(Array(chunks.prefix(2)), room: room) }
    }

    @Test func theDescriptionRules() throws {
        let id = RoomPayload.randomBytes(16), key = SymmetricKey(size: .bits256), hash = RoomPayload.randomBytes(32)
        func make(id: [UInt8] = id, key: SymmetricKey = key, size: Int = 10, sha256: [UInt8] = hash, name: String = "a.txt",
                  type: String = "text/plain", preview: [UInt8]? = nil) throws(FileError) -> RoomFile {
            try RoomFile(id: id, key: key, size: size, sha256: sha256, name: name, type: type, preview: preview)
        }
        #expect(throws: FileError.badID) { try make(id: Array(id.prefix(15))) }
        #expect(throws: FileError.badKey) { try make(key: SymmetricKey(data: key.bytes + [0])) }
        #expect(throws: FileError.badSize) { try make(size: -1) }
        #expect(throws: FileError.badSize) { try make(size: RoomFile.maxSize + 1) }
        #expect(throws: FileError.badHash) { try make(sha256: []) }
        #expect(throws: FileError.badName) { try make(name: "../x") }
        #expect(throws: FileError.badType) { try make(type: "text/Plain") }
        #expect(throws: FileError.badPreview) { try make(preview: [UInt8](repeating: 0, count: RoomFile.maxPreviewBytes + 1)) }
        #expect(try make(size: RoomFile.maxSize).chunks == RoomFile.maxChunks)
        #expect(throws: FileError.tooLarge) { try RoomFile.seal([UInt8](repeating: 0, count: RoomFile.maxSize + 1), room: room, name: "a", type: "a/b") }
    }

    @Test func aPrintedFileNeverShowsItsKey() throws {
        let (file, _) = try RoomFile.seal([1, 2, 3], room: room, name: "a.txt", type: "text/plain")
        for printed in [String(describing: file), String(reflecting: file), "\([file])"] {
            #expect(!printed.contains(Base64.encode(file.key.bytes)) && printed.contains("a.txt"))
        }
    }

    @Test func mediaTypesByExtension() {
        #expect(RoomFile.mediaType(forName: "Photo.PNG") == "image/png")
        #expect(RoomFile.mediaType(forName: "a.jpeg") == "image/jpeg")
        #expect(RoomFile.mediaType(forName: "a.jpg") == "image/jpeg")
        #expect(RoomFile.mediaType(forName: "doc.pdf") == "application/pdf")
        #expect(RoomFile.mediaType(forName: "notes.txt") == "text/plain")
        #expect(RoomFile.mediaType(forName: "archive.tar.gz") == RoomFile.unknownType)
        #expect(RoomFile.mediaType(forName: "README") == RoomFile.unknownType)
    }

    /// A file message is a room message: it takes the sender's next counter, reads as a file, is a
    /// duplicate read again at its seq and a replay at another; from a stranger it is `notMember`.
    @Test func aFileMessageThroughRoomState() throws {
        let owner = ThemisPrivateKey(), stranger = ThemisPrivateKey()
        let roomKey = RoomPayload.newRoomKey()
        var sender = RoomState(room: room, owner: owner.publicKey, me: owner, epoch: 0, roomKey: roomKey)
        var reader = RoomState(room: room, owner: owner.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        let (file, _) = try RoomFile.seal(Array("hello".utf8), room: room, name: "hello.txt", type: "text/plain", preview: [1, 2, 3])
        _ = try sender.compose(text: "first", now: 1)
        let payload = try sender.composeFile(file, now: 2)
        #expect(sender.sentCounter == 2, "a file message takes the next counter")
        let envelope = Envelope(room: room, seq: 5, kind: "message", from: KeyID.json(owner.publicKey), epoch: 0, at: 2,
                                payload: payload, wrap: nil)
        let expected = RoomState.SharedFile(seq: 5, from: KeyID.json(owner.publicKey), counter: 2, ts: 2, file: file, duplicate: false)
        #expect(reader.read(envelope) == .file(expected))
        #expect(reader.read(envelope) == .file(RoomState.SharedFile(seq: 5, from: expected.from, counter: 2, ts: 2, file: file, duplicate: true)))
        var replayed = envelope
        replayed.seq = 6
        #expect(reader.read(replayed) == .event(.rejected(seq: 6, reason: .replay)))
        var foreign = RoomState(room: room, owner: owner.publicKey, me: stranger, epoch: 0, roomKey: roomKey)
        let strangers = Envelope(room: room, seq: 7, kind: "message", from: KeyID.json(stranger.publicKey), epoch: 0, at: 3,
                                 payload: try foreign.composeFile(file, now: 3), wrap: nil)
        #expect(reader.read(strangers) == .event(.rejected(seq: 7, reason: .notMember)))
    }

    /// A file message whose description breaks a rule is `malformed` and counts nothing.
    @Test func aBadDescriptionIsMalformed() throws {
        let owner = ThemisPrivateKey()
        let roomKey = RoomPayload.newRoomKey()
        var reader = RoomState(room: room, owner: owner.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        let (file, _) = try RoomFile.seal([1], room: room, name: "a.txt", type: "text/plain")
        var object = try JSONDecoder().decode(JSONValue.self, from: Data(RoomPayload.json(FileMessage(room: room, epoch: 0, counter: 1, ts: 1, file: file))))
        guard case .object(var fields) = object, case .object(var described) = fields["file"] else { Issue.record("not an object"); return }
        described["type"] = "Text/Plain"
        fields["file"] = .object(described)
        object = .object(fields)
        let signed = try SecureMessage.sign(Array(JSONEncoder().encode(object)), with: owner)
        let payload = try RoomPayload.cell(roomKey).encrypt(signed, context: Statement.roomContext(room: room, epoch: 0))
        let envelope = Envelope(room: room, seq: 1, kind: "message", from: KeyID.json(owner.publicKey), epoch: 0, at: 1, payload: payload, wrap: nil)
        #expect(reader.read(envelope) == .event(.rejected(seq: 1, reason: .malformed)))
        #expect(reader.acceptedCounters.isEmpty, "a refused message counts nothing")
    }
}
