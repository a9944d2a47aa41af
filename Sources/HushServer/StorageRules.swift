import HushProtocol

/// How long the server keeps history (docs/PROTOCOL.md §4.7). Nil keeps forever.
public struct Retention: Sendable, Equatable {
    /// Records older than this many days expire.
    public var days: Int?
    /// Only the newest this many sequence numbers of a room (messages and rotations) stay.
    public var messages: Int?
    /// Records looked at (and so deleted) per sweep pass at most: one pass is one transaction.
    public var batch = 1000
    /// Time between two sweeps of every room.
    public var sweepEvery: Duration = .seconds(60)

    public init(days: Int? = nil, messages: Int? = nil) {
        self.days = days
        self.messages = messages
    }

    public var isEnabled: Bool { days != nil || messages != nil }
}

/// A stored record as retention sees it.
public struct StoredEntry: Sendable, Equatable {
    public var seq: Int
    public var kind: String
    /// Commit time, in milliseconds.
    public var at: Int64

    public init(seq: Int, kind: String, at: Int64) {
        self.seq = seq
        self.kind = kind
        self.at = at
    }
}

/// What one room loses in a retention pass.
public struct ExpiryPlan: Sendable, Equatable {
    /// The room's new `expiredThrough`: no chat message with a sequence number up to it is kept.
    public var expiredThrough: Int
    /// The records to delete.
    public var deletions: [Int]
}

/// Space and retention (docs/PROTOCOL.md §4.4, §4.7, §7), as pure functions: what storing
/// costs, when it is refused, and what expires. The store applies them in its transaction.
public enum StorageRules {
    /// What a stored record costs beyond its bytes (its row: sequence number, sender key, time,
    /// id, index entries), so that a flood of one-byte messages meets the quota too. Measured:
    /// a one-byte message takes about 300 bytes of pages, a 1000-byte one about 1500.
    public static let recordOverhead = 256

    public static func messageCost(payload: [UInt8]) -> Int { payload.count + recordOverhead }

    public static func rotationCost(payload: [UInt8]?, wraps: [Wrap]?) -> Int {
        (payload?.count ?? 0) + recordOverhead + (wraps ?? []).reduce(0) { $0 + $1.wrap.bytes.count + recordOverhead }
    }

    /// A chat message: within its room's quota (`room_full`) and the server's bound (`server_full`).
    /// `databaseBytes`: the database pages in use now.
    public static func checkMessage(cost: Int, room: RoomRecord, databaseBytes: Int, limits: Limits) throws(HushError) {
        guard room.storedBytes + cost <= limits.roomQuotaBytes else {
            throw HushError(.roomFull, "this room has reached its storage quota: nothing more is stored until old messages expire")
        }
        try checkServer(cost: cost, databaseBytes: databaseBytes, limits: limits)
    }

    /// A new room: within the server's bound.
    public static func checkNewRoom(databaseBytes: Int, limits: Limits) throws(HushError) {
        try checkServer(cost: recordOverhead, databaseBytes: databaseBytes, limits: limits)
    }

    /// A rotation is never refused for space when it is owed (a departed key holds the current
    /// room key: a full room must not lock it in) or when the current key has sealed messages
    /// (so at most one rotation per epoch passes a full room's quota); otherwise it is held to
    /// the same bounds as a message, since it would protect nothing new.
    public static func checkRotation(cost: Int, room: RoomRecord, databaseBytes: Int, limits: Limits) throws(HushError) {
        guard !room.wrapRequired, room.sinceRotation == 0 else { return }
        try checkMessage(cost: cost, room: room, databaseBytes: databaseBytes, limits: limits)
    }

    static func checkServer(cost: Int, databaseBytes: Int, limits: Limits) throws(HushError) {
        guard let bound = limits.maxStorageBytes else { return }
        guard databaseBytes + cost <= bound else { throw serverFull }
    }

    /// The server's bound, or its disk, is reached.
    static let serverFull = HushError(.serverFull, "the server's storage is full: nothing was stored; try again later")

    /// The hard ceiling of the database file (`PRAGMA max_page_count`), in pages: past it SQLite
    /// refuses every write that would grow the file, which the store reports as `server_full`.
    public static func maxPageCount(limits: Limits, pageSize: Int) -> Int? {
        limits.maxStorageBytes.map { ($0 + limits.storageHeadroomBytes) / max(pageSize, 1) }
    }

    /// One room's retention pass. `kept`: the oldest records at or below `expiredThrough` (only
    /// rotations remain there); `oldest`: the oldest records above it, in sequence order.
    /// The expired prefix of `oldest` (by age or by count) moves `expiredThrough` up; a chat
    /// message at or below it goes, and a rotation goes only once every key of the room was
    /// handed it (`minDelivered`): a key that was not needs it to reach later epochs' keys.
    public static func expiry(expiredThrough current: Int, lastSeq: Int, minDelivered: Int, kept: [StoredEntry],
                              oldest: [StoredEntry], now: Int64, retention: Retention) -> ExpiryPlan {
        let countFloor = retention.messages.map { lastSeq - $0 } ?? Int.min
        let ageCutoff = retention.days.map { now - Int64($0) * 86_400_000 } ?? Int64.min
        var expiredThrough = current
        for entry in oldest where entry.seq > expiredThrough {
            guard entry.seq <= countFloor || entry.at < ageCutoff else { break }
            expiredThrough = entry.seq
        }
        let deletions = (kept.filter { $0.seq <= current } + oldest.filter { $0.seq > current && $0.seq <= expiredThrough })
            .filter { $0.kind != "rotation" || $0.seq <= minDelivered }
            .map(\.seq)
        return ExpiryPlan(expiredThrough: expiredThrough, deletions: deletions)
    }
}
