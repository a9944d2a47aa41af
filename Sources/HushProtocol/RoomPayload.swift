import Crypto
import Foundation
import ThemisKit

/// Inner content of a chat message (docs/PROTOCOL.md §6.1).
public struct ChatMessage: Codable, Sendable, Equatable {
    public var v = 1
    public var room: String
    public var epoch: Int
    public var counter: Int
    public var ts: Int64
    public var text: String

    public init(room: String, epoch: Int, counter: Int, ts: Int64, text: String) {
        self.room = room
        self.epoch = epoch
        self.counter = counter
        self.ts = ts
        self.text = text
    }

    /// The longest text a client sends (§6.1), in UTF-16 code units as a browser counts them
    /// (`maxlength`, `String.length`), so a person meets the same limit in both clients. A
    /// reader takes any text its payload holds.
    public static let maxTextLength = 4000

    public static func isSendable(_ text: String) -> Bool { text.utf16.count <= maxTextLength }
}

/// Inner content of a name message (docs/PROTOCOL.md §6.7): a chat message's fields with
/// `kind` "name" and the sender's display name instead of `text`.
public struct NameMessage: Codable, Sendable, Equatable {
    public var v = 1
    public var kind = "name"
    public var room: String
    public var epoch: Int
    public var counter: Int
    public var ts: Int64
    public var name: String

    public init(room: String, epoch: Int, counter: Int, ts: Int64, name: String) {
        self.room = room
        self.epoch = epoch
        self.counter = counter
        self.ts = ts
        self.name = name
    }
}

/// Inner content of a file message (docs/PROTOCOL.md §6.8): a chat message's fields with
/// `kind` "file" and the file's description (its key included) instead of `text`.
public struct FileMessage: Codable, Sendable, Equatable {
    public var v = 1
    public var kind = "file"
    public var room: String
    public var epoch: Int
    public var counter: Int
    public var ts: Int64
    public var file: RoomFile

    public init(room: String, epoch: Int, counter: Int, ts: Int64, file: RoomFile) {
        self.room = room
        self.epoch = epoch
        self.counter = counter
        self.ts = ts
        self.file = file
    }
}

/// What a sealed room message holds: a chat line (no `kind`, as in version 1), a name or a file.
public enum RoomContent: Sendable, Equatable {
    case chat(ChatMessage)
    case name(NameMessage)
    case file(FileMessage)

    public var counter: Int {
        switch self {
        case .chat(let message): message.counter
        case .name(let message): message.counter
        case .file(let message): message.counter
        }
    }
}

/// Inner content of a rotation (docs/PROTOCOL.md §6.3) and of a join grant (§6.2).
public struct RoomKeyGrant: Codable, Sendable, Equatable {
    public var v: Int? = 1
    public var type: String?
    public var room: String
    public var epoch: Int
    public var key: Base64Key

    public init(type: String?, room: String, epoch: Int, key: SymmetricKey) {
        self.type = type
        self.room = room
        self.epoch = epoch
        self.key = Base64Key(key)
    }
}

/// Why an end-to-end blob was refused by a member.
public enum PayloadError: Error, Sendable, Equatable {
    case undecryptable
    case badSignature
    case malformed
    case wrongRoomOrEpoch
}

/// The end-to-end formats: signed, then sealed (docs/PROTOCOL.md §6).
public enum RoomPayload {
    public static func json<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try! encoder.encode(value))
    }

    static func parse<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(PayloadError) -> T {
        guard let value = try? JSONDecoder().decode(type, from: Data(bytes)) else { throw .malformed }
        return value
    }

    /// A Secure Cell under `key`; a key that Secure Cell refuses (empty, say) is an error,
    /// never a trap, whoever sent it.
    static func cell(_ key: SymmetricKey) throws(ThemisError) -> SecureCell.Seal {
        try SecureCell.Seal(key: key)
    }

    /// Every room key is 32 random bytes (§6): a grant or rotation carrying another length is
    /// refused before the key is installed or saved.
    public static let roomKeyBytes = 32

    public static func newRoomKey() -> SymmetricKey { SymmetricKey(size: SymmetricKeySize(bitCount: roomKeyBytes * 8)) }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    // MARK: chat messages

    /// Seals a chat, name or file message: its inner JSON padded to a bucket (`Padding`, §6.1),
    /// signed by the sender, sealed under the epoch's key.
    static func sealRoomMessage(_ inner: [UInt8], room: String, epoch: Int, roomKey: SymmetricKey, signer: ThemisPrivateKey) throws -> [UInt8] {
        let signed = try SecureMessage.sign(try Padding.pad(inner), with: signer)
        return try cell(roomKey).encrypt(signed, context: Statement.roomContext(room: room, epoch: epoch))
    }

    public static func seal(_ message: ChatMessage, roomKey: SymmetricKey, signer: ThemisPrivateKey) throws -> [UInt8] {
        try sealRoomMessage(json(message), room: message.room, epoch: message.epoch, roomKey: roomKey, signer: signer)
    }

    public static func seal(_ message: NameMessage, roomKey: SymmetricKey, signer: ThemisPrivateKey) throws -> [UInt8] {
        try sealRoomMessage(json(message), room: message.room, epoch: message.epoch, roomKey: roomKey, signer: signer)
    }

    public static func seal(_ message: FileMessage, roomKey: SymmetricKey, signer: ThemisPrivateKey) throws -> [UInt8] {
        try sealRoomMessage(json(message), room: message.room, epoch: message.epoch, roomKey: roomKey, signer: signer)
    }

    /// The fields every sealed room message has; `kind` tells a name (§6.7) or a file (§6.8)
    /// from a chat line.
    private struct Header: Decodable {
        let v: Int
        let kind: String?
        let room: String
        let epoch: Int
        let counter: Int
        let ts: Int64
        let pad: String?

        enum CodingKeys: String, CodingKey { case v, kind, room, epoch, counter, ts, pad }

        init(from decoder: Decoder) throws {
            let fields = try decoder.container(keyedBy: CodingKeys.self)
            v = try fields.decode(Int.self, forKey: .v)
            // Absent is a chat line; present it must be a string (`null` is not absent), as in JS.
            kind = fields.contains(.kind) ? try fields.decode(String.self, forKey: .kind) : nil
            room = try fields.decode(String.self, forKey: .room)
            epoch = try fields.decode(Int.self, forKey: .epoch)
            counter = try fields.decode(Int.self, forKey: .counter)
            ts = try fields.decode(Int64.self, forKey: .ts)
            // Absent in messages sealed before padding (§6.1); present, a string (`null` is not absent).
            pad = fields.contains(.pad) ? try fields.decode(String.self, forKey: .pad) : nil
        }
    }

    public static func open(_ payload: [UInt8], roomKey: SymmetricKey, room: String, epoch: Int,
                            sender: ThemisPublicKey) throws(PayloadError) -> RoomContent {
        guard let signed = try? cell(roomKey).decrypt(payload, context: Statement.roomContext(room: room, epoch: epoch))
        else { throw .undecryptable }
        guard let inner = try? SecureMessage.verify(signed, with: sender) else { throw .badSignature }
        let header = try parse(Header.self, inner)
        // Version 1, a counter from 1 (§6.1), and numbers JSON keeps exact: the web client can
        // hold no other, so neither client takes another. A `kind` other than "name" or "file" is no
        // message either client knows. A file whose description breaks a rule of §6.8 does not
        // parse (`RoomFile` checks them as it decodes): malformed. So is a `pad` of anything but
        // spaces; its length is the sender's to choose and never checked.
        let content: RoomContent
        guard header.v == 1, (0...RoomState.maxSeq).contains(header.epoch), (1...RoomState.maxSeq).contains(header.counter),
              (0...Int64(RoomState.maxSeq)).contains(header.ts), (header.pad.map(Padding.isValidPad) ?? true) else { throw .malformed }
        switch header.kind {
        case nil: content = .chat(try parse(ChatMessage.self, inner))
        case "name": content = .name(try parse(NameMessage.self, inner))
        case "file": content = .file(try parse(FileMessage.self, inner))
        default: throw .malformed
        }
        guard header.room == room, header.epoch == epoch else { throw .wrongRoomOrEpoch }
        return content
    }

    // MARK: rotations

    public static func signRotation(room: String, epoch: Int, key: SymmetricKey, owner: ThemisPrivateKey) throws(ThemisError) -> [UInt8] {
        try SecureMessage.sign(json(RoomKeyGrant(type: "rotation", room: room, epoch: epoch, key: key)), with: owner)
    }

    /// Plain rotation: the signed grant sealed under the previous epoch's key.
    public static func sealRotation(_ signed: [UInt8], oldKey: SymmetricKey, room: String, oldEpoch: Int) throws(ThemisError) -> [UInt8] {
        try cell(oldKey).encrypt(signed, context: Statement.roomContext(room: room, epoch: oldEpoch))
    }

    /// Wrapped rotation: the signed grant encrypted to one member.
    public static func wrapRotation(_ signed: [UInt8], owner: ThemisPrivateKey, member: ThemisPublicKey) throws(ThemisError) -> [UInt8] {
        try SecureMessage.encrypt(signed, from: owner, to: member)
    }

    public static func openRotation(payload: [UInt8], oldKey: SymmetricKey, room: String, newEpoch: Int,
                                    owner: ThemisPublicKey) throws(PayloadError) -> SymmetricKey {
        guard newEpoch >= 1,
              let signed = try? cell(oldKey).decrypt(payload, context: Statement.roomContext(room: room, epoch: newEpoch - 1))
        else { throw .undecryptable }
        return try verifyRotation(signed, room: room, newEpoch: newEpoch, owner: owner)
    }

    public static func openRotation(wrap: [UInt8], me: ThemisPrivateKey, room: String, newEpoch: Int,
                                    owner: ThemisPublicKey) throws(PayloadError) -> SymmetricKey {
        guard let signed = try? SecureMessage.decrypt(wrap, by: me, from: owner) else { throw .undecryptable }
        return try verifyRotation(signed, room: room, newEpoch: newEpoch, owner: owner)
    }

    static func verifyRotation(_ signed: [UInt8], room: String, newEpoch: Int, owner: ThemisPublicKey) throws(PayloadError) -> SymmetricKey {
        guard let inner = try? SecureMessage.verify(signed, with: owner) else { throw .badSignature }
        let grant = try parse(RoomKeyGrant.self, inner)
        guard grant.type == "rotation" else { throw .malformed }
        guard grant.room == room, grant.epoch == newEpoch else { throw .wrongRoomOrEpoch }
        guard grant.key.symmetricKey.byteCount == roomKeyBytes else { throw .malformed }
        return grant.key.symmetricKey
    }

    // MARK: joins

    public static func sealJoinGrant(room: String, epoch: Int, roomKey: SymmetricKey, joiningKey: SymmetricKey, token: [UInt8]) throws(ThemisError) -> [UInt8] {
        try cell(joiningKey).encrypt(json(RoomKeyGrant(type: nil, room: room, epoch: epoch, key: roomKey)), context: token)
    }

    public static func openJoinGrant(_ sealed: [UInt8], joiningKey: SymmetricKey, token: [UInt8], room: String) throws(PayloadError) -> RoomKeyGrant {
        guard let inner = try? cell(joiningKey).decrypt(sealed, context: token) else { throw .undecryptable }
        let grant = try parse(RoomKeyGrant.self, inner)
        guard grant.room == room, grant.epoch >= 0 else { throw .wrongRoomOrEpoch }
        guard grant.key.symmetricKey.byteCount == roomKeyBytes else { throw .malformed }
        return grant
    }

    public static func sealConfirmation(room: String, joiner: String, roomKey: SymmetricKey, token: [UInt8]) throws(ThemisError) -> [UInt8] {
        try cell(roomKey).encrypt(Statement.confirmation(room: room, key: joiner), context: token)
    }

    public static func checkConfirmation(_ sealed: [UInt8], room: String, joiner: String, roomKey: SymmetricKey, token: [UInt8]) -> Bool {
        guard let inner = try? cell(roomKey).decrypt(sealed, context: token) else { return false }
        return constantTimeEquals(inner, Statement.confirmation(room: room, key: joiner))
    }
}
