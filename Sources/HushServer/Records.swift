import HushProtocol

/// A room as stored. Keys are the b64 of Themis public key containers.
public struct RoomRecord: Sendable, Equatable {
    public var id: String
    public var owner: String
    public var epoch: Int
    public var lastSeq: Int
    public var lastRotationSeq: Int
    public var sinceRotation: Int
    public var rotateEvery: Int
    public var wrapRequired: Bool
    /// Bytes the room's records cost against its quota (`StorageRules`).
    public var storedBytes: Int
    /// Retention deleted every chat message with a sequence number up to this one (0: none).
    public var expiredThrough: Int
}

public enum Role: String, Sendable { case owner, member }

public struct MemberRecord: Sendable, Equatable {
    public var room: String
    public var key: String
    public var role: Role
    public var signature: [UInt8]
    public var floor: Int
    public var delivered: Int
}

public enum InviteState: String, Sendable { case open, requested, responded, confirmed }

public struct InviteRecord: Sendable, Equatable {
    public var room: String
    public var inviteID: [UInt8]
    public var expiresAt: Int64
    public var state: InviteState
    public var joiner: String?
    public var joiningKey: [UInt8]?
    public var response: [UInt8]?
    public var confirmation: [UInt8]?
    public var responseEpoch: Int?
}

/// A stored message; `wraps` only for a wrapped rotation.
public struct MessageRecord: Sendable, Equatable {
    public var room: String
    public var seq: Int
    public var kind: String
    public var sender: String
    public var epoch: Int
    public var at: Int64
    public var payload: [UInt8]?
    /// The sender's idempotency id of a chat message (nil for rotations).
    public var messageID: [UInt8]?

    public func envelope(wrap: [UInt8]?) -> Envelope {
        Envelope(room: room, seq: seq, kind: kind, from: sender, epoch: epoch, at: at, payload: payload, wrap: wrap)
    }
}

/// A member that left or was removed: kept so that later joiners can verify its messages
/// (`formerMembers` of `hello`).
public struct DepartedRecord: Sendable, Equatable {
    public var room: String
    public var key: String
    /// The owner's membership signature.
    public var signature: [UInt8]
    /// The room's last sequence number when the key departed.
    public var until: Int
    public var departure: Departure
    /// The removal signature (owner) or the leave signature (the key itself).
    public var departureSignature: [UInt8]

    public var entry: FormerMemberEntry {
        FormerMemberEntry(key: key, signature: signature, until: until, departure: departure,
                          departureSignature: departureSignature)
    }
}

/// A file's stored state (docs/PROTOCOL.md §4.9). The server knows its id, who uploaded it, its
/// chunk count and which message carries it: never its name, type or size beyond the count.
public struct FileRecord: Sendable, Equatable {
    public var room: String
    public var id: [UInt8]
    public var uploader: String
    public var chunks: Int
    public var storedChunks: Int
    /// The message it is attached to; nil while it is pending.
    public var seq: Int?
    /// When its first chunk was stored, in milliseconds.
    public var createdAt: Int64

    public var isComplete: Bool { storedChunks == chunks }
}
