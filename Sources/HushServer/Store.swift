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

/// Called once the change is durable, in commit order: every room's pushes leave in
/// sequence order because they are handed to the hub here, not after the caller resumes.
public typealias AfterCommit = @Sendable (AppendOutcome) -> Void

/// A member left or was removed.
public struct DepartureOutcome: Sendable {
    /// The keys still in the room.
    public var remaining: [String]
    /// The room's last sequence number at the departure.
    public var until: Int
}

/// Durable state of rooms. Each method is one atomic transaction that reads what it needs,
/// applies `RoomRules`, and either commits or throws `HushError` having changed nothing.
/// SQLite is the embedded default; a PostgreSQL implementation can follow the same contract.
public protocol Store: Sendable {
    func isRetired(_ key: String) async throws -> Bool
    func createRoom(id: String, owner: String, rotateEvery: Int, limits: Limits) async throws -> RoomRecord
    func room(_ id: String) async throws -> RoomRecord?
    func rooms(of key: String) async throws -> [(RoomRecord, MemberRecord)]
    func members(of room: String) async throws -> [MemberRecord]
    func joins(of key: String) async throws -> [InviteRecord]
    func pendingJoins(room: String) async throws -> [InviteRecord]

    func addInvite(room: String, by key: String, inviteID: [UInt8], expiresAt: Int64, now: Int64, limits: Limits) async throws
    func requestJoin(room: String, inviteID: [UInt8], joiner: String, joiningKey: [UInt8], now: Int64, limits: Limits) async throws -> JoinOutcome
    func respondJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8]) async throws -> JoinOutcome
    func confirmJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8]) async throws -> JoinOutcome
    func addMember(room: String, inviteID: [UInt8], key: String, signature: [UInt8], by owner: String, limits: Limits) async throws -> [String]

    /// A chat message under `epoch` with the sender's idempotency id: a repeat of a stored
    /// (room, sender, id) returns the original (`isRepeat`) and writes nothing.
    func append(room: String, from key: String, payload: [UInt8], epoch: Int, messageID: [UInt8], now: Int64,
                afterCommit: @escaping AfterCommit) async throws -> AppendOutcome
    func rotate(room: String, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?, now: Int64,
                afterCommit: @escaping AfterCommit) async throws -> AppendOutcome
    func history(room: String, for key: String, after: Int?, limit: Int?, limits: Limits) async throws -> (messages: [Envelope], more: Bool)
    func saveDelivered(room: String, key: String, seq: Int) async throws

    /// The departed members whose messages a key with `floor` can read (`until > floor`), the
    /// most recent `limit` of them.
    func formerMembers(of room: String, after floor: Int, limit: Int) async throws -> [DepartedRecord]

    func removeMember(room: String, key: String, signature: [UInt8], by owner: String) async throws -> DepartureOutcome
    /// `signature`: the leaving key's own signature of the leave statement (§6.5).
    func leave(room: String, key: String, signature: [UInt8]) async throws -> DepartureOutcome
    /// Returns the keys that were in the room.
    func deleteRoom(room: String, by key: String) async throws -> [String]
}
