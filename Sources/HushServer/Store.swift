import HushProtocol

/// What a join or membership change means for whom.
public struct JoinOutcome: Sendable {
    public var room: RoomRecord
    public var invite: InviteRecord
}

/// The result of appending a message or rotation.
public struct AppendOutcome: Sendable {
    public var message: MessageRecord
    public var room: RoomRecord
    /// Every key of the room (owner and members).
    public var recipients: [String]
    /// Per-member wraps of a wrapped rotation.
    public var wraps: [String: [UInt8]]
    /// A `send` repeated with a `messageId` already stored: `message` is the original, and
    /// nothing was written or pushed.
    public var isRepeat = false
}

/// How an accepted write reaches open connections: the room core's effects of its outcome
/// (`RoomPushes`), for the connection that asked. A store works them out inside the write and
/// hands them to `hub` once the write is committed, before the caller resumes, in the room's
/// commit order (so every room's pushes leave in sequence order); a store several nodes share
/// also records them in the same transaction for the other nodes (`PostgresFanOut`).
public struct Announcement<Outcome: Sendable>: Sendable {
    public let hub: Hub
    public let requester: Outbox?
    public let effects: @Sendable (Outcome) -> [ConnectionEffect]

    public init(hub: Hub, requester: Outbox?, effects: @escaping @Sendable (Outcome) -> [ConnectionEffect]) {
        self.hub = hub
        self.requester = requester
        self.effects = effects
    }

    /// Hands the effects of `outcome` to this node's connections.
    func deliver(_ outcome: Outcome) { hub.apply(effects(outcome), requester: requester) }
}

/// A member left or was removed.
public struct DepartureOutcome: Sendable {
    /// The keys still in the room.
    public var remaining: [String]
    /// The room's last sequence number at the departure.
    public var until: Int
}

/// A page of `history` (docs/PROTOCOL.md §4.7).
public struct HistoryPage: Sendable {
    public var messages: [Envelope]
    public var more: Bool
    /// The room's `expiredThrough`: the messages up to it were deleted by retention.
    public var expiredThrough: Int
}

/// One retention pass: what it deleted, and the room to go on after (nil: it reached the end).
public struct ExpiryPass: Sendable {
    public var deleted: Int
    public var nextRoom: Int64?
}

/// Durable state of rooms. Each method is one atomic transaction that reads what it needs,
/// applies `RoomRules`, and either commits or throws `HushError` having changed nothing.
/// `SQLiteStore` is the embedded default; `PostgresStore` keeps the same contract for several
/// nodes.
public protocol Store: Sendable {
    func isRetired(_ key: String) async throws -> Bool
    func createRoom(id: String, owner: String, rotateEvery: Int, now: Int64, limits: Limits) async throws -> RoomRecord
    func room(_ id: String) async throws -> RoomRecord?
    func rooms(of key: String) async throws -> [(RoomRecord, MemberRecord)]
    func members(of room: String) async throws -> [MemberRecord]
    /// The unexpired joins this key made.
    func joins(of key: String, now: Int64) async throws -> [InviteRecord]
    /// The unexpired joins of a room that got past `open`.
    func pendingJoins(room: String, now: Int64) async throws -> [InviteRecord]
    /// Owner: the room's unexpired invites, soonest to expire first.
    func invites(room: String, by key: String, now: Int64) async throws -> [InviteRecord]
    /// Owner: deletes an invite and any join through it; returns what was deleted.
    func revokeInvite(room: String, inviteID: [UInt8], by key: String, announce: Announcement<InviteRecord>) async throws -> InviteRecord

    func addInvite(room: String, by key: String, inviteID: [UInt8], expiresAt: Int64, now: Int64, limits: Limits) async throws
    func requestJoin(room: String, inviteID: [UInt8], joiner: String, joiningKey: [UInt8], now: Int64, limits: Limits,
                     announce: Announcement<JoinOutcome>) async throws -> JoinOutcome
    func respondJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                     announce: Announcement<JoinOutcome>) async throws -> JoinOutcome
    func confirmJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                     announce: Announcement<JoinOutcome>) async throws -> JoinOutcome
    /// Returns the room's keys after the admission.
    func addMember(room: String, inviteID: [UInt8], key: String, signature: [UInt8], by owner: String, now: Int64,
                   limits: Limits, announce: Announcement<[String]>) async throws -> [String]

    /// A chat message under `epoch` with the sender's idempotency id: a repeat of a stored
    /// (room, sender, id) returns the original (`isRepeat`) and writes nothing.
    /// Refused for space (`StorageRules`) with `room_full` or `server_full`. `files`: the
    /// sender's pending files the message carries, attached to it in the same transaction.
    func append(room: String, from key: String, payload: [UInt8], epoch: Int, messageID: [UInt8], files: [[UInt8]],
                now: Int64, limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome
    func rotate(room: String, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?, now: Int64,
                limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome
    /// `file_put` (§4.9): stores one chunk of a file (`RoomRules.putChunk`); returns the file after it.
    func putChunk(room: String, file: [UInt8], by key: String, chunks: Int, index: Int, data: [UInt8], now: Int64,
                  limits: Limits) async throws -> FileRecord
    /// `file_get` (§4.9): one chunk of a file the key may read (`RoomRules.readableFile`), with
    /// the file's chunk count.
    func fileChunk(room: String, file: [UInt8], index: Int, for key: String) async throws -> (chunks: Int, data: [UInt8])
    /// Deletes the pending files whose first chunk was stored before `before` (milliseconds),
    /// giving their bytes back to their rooms; returns how many it deleted.
    func expirePendingFiles(before: Int64) async throws -> Int

    func history(room: String, for key: String, after: Int?, limit: Int?, limits: Limits) async throws -> HistoryPage
    func saveDelivered(room: String, key: String, seq: Int) async throws

    /// The departed members whose messages a key with `floor` can read (`until > floor`), the
    /// most recent `limit` of them.
    func formerMembers(of room: String, after floor: Int, limit: Int) async throws -> [DepartedRecord]

    func removeMember(room: String, key: String, signature: [UInt8], by owner: String,
                      announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome
    /// `signature`: the leaving key's own signature of the leave statement (§6.5).
    func leave(room: String, key: String, signature: [UInt8], announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome
    /// Returns the keys that were in the room.
    func deleteRoom(room: String, by key: String, announce: Announcement<[String]>) async throws -> [String]

    /// Starts handing the pushes of writes that other nodes commit to `hub` (a store several
    /// nodes share); a store of one node has none.
    func deliverPeers(to hub: Hub) async throws

    /// One bounded retention pass (`StorageRules.expiry`) over the rooms after `afterRoom`
    /// (0: from the first), in one transaction; `now` in milliseconds.
    func expire(now: Int64, retention: Retention, afterRoom: Int64) async throws -> ExpiryPass
}

extension Store {
    public func deliverPeers(to hub: Hub) async throws {}
}
