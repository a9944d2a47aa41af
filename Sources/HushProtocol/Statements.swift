import ThemisKit

/// The exact byte strings that get signed, sealed or used as context (docs/PROTOCOL.md §6).
public enum Statement {
    /// Secure Cell context of room payloads: `<room>:<epoch>`.
    public static func roomContext(room: String, epoch: Int) -> [UInt8] { Array("\(room):\(epoch)".utf8) }

    public static func membership(room: String, key: String) -> [UInt8] { Array("hush-member:\(room):\(key)".utf8) }

    public static func removal(room: String, key: String) -> [UInt8] { Array("hush-remove:\(room):\(key)".utf8) }

    /// Signed by the leaving member's own key (docs/PROTOCOL.md §6.5).
    public static func leave(room: String, key: String) -> [UInt8] { Array("hush-leave:\(room):\(key)".utf8) }

    public static func confirmation(room: String, key: String) -> [UInt8] { Array("hush-confirm:\(room):\(key)".utf8) }

    /// Verifies the signature of a departure: a removal is signed by the owner (§6.5), a leave by
    /// the departing key itself (§6.5).
    public static func verifyDeparture(_ departure: Departure, signature: [UInt8], room: String, key: String,
                                       owner: ThemisPublicKey) -> Bool {
        switch departure {
        case .removed:
            return verify(signature, signs: removal(room: room, key: key), by: owner)
        case .left:
            guard let member = try? KeyID.key(fromJSON: key) else { return false }
            return verify(signature, signs: leave(room: room, key: key), by: member)
        }
    }

    /// Verifies a Secure Message signature by `signer` and that it signs exactly `expected`.
    public static func verify(_ signature: [UInt8], signs expected: [UInt8], by signer: ThemisPublicKey) -> Bool {
        guard let signed = try? SecureMessage.verify(signature, with: signer) else { return false }
        return constantTimeEquals(signed, expected)
    }
}

/// How a member departed a room (`formerMembers[].departure`, docs/PROTOCOL.md §4.1).
public enum Departure: String, Codable, Sendable, Equatable {
    case left, removed
}

/// Key identities: the b64 of the container in JSON, the b64url as Secure Session id.
public enum KeyID {
    public static func json(_ key: ThemisPublicKey) -> String { Base64.encode(key.containerBytes) }
    public static func sessionID(_ key: ThemisPublicKey) -> [UInt8] { Array(Base64.encodeURL(key.containerBytes).utf8) }

    /// One key, one identity: only the canonical form is accepted (the 45-byte compressed
    /// container, in canonical base64), so the 77-byte form of a key, or another spelling of
    /// its base64, can never act as a second identity of the same key.
    public static func key(fromJSON text: String) throws(HushError) -> ThemisPublicKey {
        guard text.utf8.count <= 128, let bytes = Base64.decode(text), bytes.count == canonicalContainerBytes,
              Base64.encode(bytes) == text, let key = try? ThemisPublicKey(containerBytes: bytes) else {
            throw HushError(.badRequest, "not a valid public key")
        }
        return key
    }

    public static func key(fromSessionID id: [UInt8]) -> ThemisPublicKey? {
        guard id.count <= 128, let text = String(bytes: id, encoding: .ascii), let bytes = Base64.decodeURL(text),
              bytes.count == canonicalContainerBytes, Base64.encodeURL(bytes) == text else { return nil }
        return try? ThemisPublicKey(containerBytes: bytes)
    }

    /// A `UEC2` container of a compressed P-256 point: what Themis generates.
    static let canonicalContainerBytes = 45
}
