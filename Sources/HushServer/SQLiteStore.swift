import Foundation
import GRDB
import HushProtocol
import ThemisKit

/// `Store` on SQLite through GRDB: WAL journal, `synchronous=FULL` on the connection that
/// writes, so a committed message survives `kill -9` and power loss.
public final class SQLiteStore: Store {
    private let pool: DatabasePool
    private let committer: GroupCommitter<SQLiteBatches>

    /// Writes per transaction at most: bounds a batch's latency and its journal.
    public static let defaultCommitBatch = 256

    /// `PRAGMA synchronous` value of FULL.
    static let synchronousFull = 2

    /// `commitBatch`: writes per transaction at most (group commit); 1 turns grouping off.
    /// `limits.maxStorageBytes` (plus its headroom) caps the database file.
    public init(path: String, commitBatch: Int = SQLiteStore.defaultCommitBatch, limits: Limits = .standard) throws {
        let pool = try DatabasePool(path: path)
        // GRDB sets the writer to NORMAL when it enables WAL, after any `prepareDatabase`
        // hook: set FULL afterwards on the one writer connection, and check that it holds.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        guard try Self.synchronousLevel(of: pool) == Self.synchronousFull else {
            throw StoreError("SQLite refused synchronous=FULL on the writer connection")
        }
        try Self.migrator.migrate(pool)
        // The writer is the only connection that grows the file; SQLite keeps the ceiling at
        // least at the file's present size.
        try pool.writeWithoutTransaction { db in
            let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
            if let pages = StorageRules.maxPageCount(limits: limits, pageSize: pageSize) {
                try db.execute(sql: "PRAGMA max_page_count = \(pages)")
            }
        }
        self.pool = pool
        committer = GroupCommitter(store: SQLiteBatches(pool: pool), maxBatch: commitBatch)
    }

    /// The writer connection's `PRAGMA synchronous` (2 = FULL).
    public func writerSynchronousLevel() throws -> Int { try Self.synchronousLevel(of: pool) }

    static func synchronousLevel(of pool: DatabasePool) throws -> Int {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE rooms (
                    id TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                    last_rotation_seq INTEGER NOT NULL, since_rotation INTEGER NOT NULL,
                    rotate_every INTEGER NOT NULL, wrap_required INTEGER NOT NULL);
                CREATE TABLE members (
                    room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, key TEXT NOT NULL,
                    role TEXT NOT NULL, signature BLOB NOT NULL, floor INTEGER NOT NULL, delivered INTEGER NOT NULL,
                    PRIMARY KEY (room, key));
                CREATE INDEX members_by_key ON members(key);
                CREATE TABLE invites (
                    room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, invite_id BLOB NOT NULL,
                    expires_at INTEGER NOT NULL, state TEXT NOT NULL, joiner TEXT, joining_key BLOB,
                    response BLOB, confirmation BLOB, response_epoch INTEGER,
                    PRIMARY KEY (room, invite_id));
                CREATE INDEX invites_by_joiner ON invites(joiner);
                CREATE TABLE messages (
                    room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
                    kind TEXT NOT NULL, sender TEXT NOT NULL, epoch INTEGER NOT NULL, at INTEGER NOT NULL,
                    payload BLOB, PRIMARY KEY (room, seq));
                CREATE TABLE wraps (
                    room TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, wrap BLOB NOT NULL,
                    PRIMARY KEY (room, seq, key), FOREIGN KEY (room, seq) REFERENCES messages(room, seq) ON DELETE CASCADE);
                CREATE TABLE retired (key TEXT PRIMARY KEY);
                """)
        }
        migrator.registerMigration("v2-departed") { db in
            // Members that left or were removed, for `formerMembers` (docs/PROTOCOL.md §4.1).
            try db.execute(sql: """
                CREATE TABLE departed (
                    room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, key TEXT NOT NULL,
                    signature BLOB NOT NULL, until INTEGER NOT NULL, departure TEXT NOT NULL,
                    departure_signature BLOB NOT NULL, PRIMARY KEY (room, key));
                CREATE INDEX departed_by_until ON departed(room, until);
                """)
        }
        migrator.registerMigration("v3-message-ids") { db in
            // Idempotent sends (docs/PROTOCOL.md §4.4): one message per (room, sender, id).
            try db.execute(sql: """
                ALTER TABLE messages ADD COLUMN message_id BLOB;
                CREATE UNIQUE INDEX messages_by_id ON messages(room, sender, message_id) WHERE message_id IS NOT NULL;
                """)
        }
        migrator.registerMigration("v4-storage") { db in
            // Per-room quota accounting and the retention floor (docs/PROTOCOL.md §4.4, §4.7).
            let overhead = StorageRules.recordOverhead
            try db.execute(sql: """
                ALTER TABLE rooms ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE rooms ADD COLUMN expired_through INTEGER NOT NULL DEFAULT 0;
                UPDATE rooms SET stored_bytes =
                    (SELECT COALESCE(SUM(LENGTH(payload)), 0) + COUNT(*) * \(overhead) FROM messages WHERE room = rooms.id)
                    + (SELECT COALESCE(SUM(LENGTH(wrap)), 0) + COUNT(*) * \(overhead) FROM wraps WHERE room = rooms.id);
                """)
        }
        migrator.registerMigration("v5-used-invites") { db in
            // An invite a member joined with says so to the next holder (`invite_used`), until
            // it would have expired, instead of looking unknown.
            try db.execute(sql: """
                CREATE TABLE used_invites (room TEXT NOT NULL, invite_id BLOB NOT NULL, expires_at INTEGER NOT NULL,
                                           PRIMARY KEY (room, invite_id));
                """)
        }
        migrator.registerMigration("v6-files") { db in
            // Files (docs/PROTOCOL.md §4.9): sealed chunks the server cannot read, attached to
            // the message that carries them (`seq`), or pending (NULL) until it is sent.
            try db.execute(sql: """
                CREATE TABLE files (
                    room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, id BLOB NOT NULL, uploader TEXT NOT NULL,
                    chunks INTEGER NOT NULL, stored_chunks INTEGER NOT NULL, seq INTEGER, created_at INTEGER NOT NULL,
                    PRIMARY KEY (room, id));
                CREATE INDEX files_by_seq ON files(room, seq);
                CREATE INDEX files_pending ON files(created_at) WHERE seq IS NULL;
                CREATE TABLE file_chunks (
                    room TEXT NOT NULL, file BLOB NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
                    PRIMARY KEY (room, file, idx),
                    FOREIGN KEY (room, file) REFERENCES files(room, id) ON DELETE CASCADE);
                """)
        }
        return migrator
    }

    /// Runs `body` atomically (its own savepoint in the next group commit), passing `HushError`
    /// through untouched; returns once the change is durable, after `afterCommit` ran (in
    /// commit order: one writer commits every room's writes in sequence order).
    private func write<T: Sendable>(afterCommit: (@Sendable (T) -> Void)? = nil,
                                    _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await committer.write(body, afterCommit: afterCommit)
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    // MARK: row mapping

    static func room(_ db: Database, _ id: String) throws -> RoomRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM rooms WHERE id = ?"), arguments: [id]).map(room(row:))
    }

    static func room(row: Row) -> RoomRecord {
        RoomRecord(id: row["id"], owner: row["owner"], epoch: row["epoch"], lastSeq: row["last_seq"],
                   lastRotationSeq: row["last_rotation_seq"], sinceRotation: row["since_rotation"],
                   rotateEvery: row["rotate_every"], wrapRequired: row["wrap_required"],
                   storedBytes: row["stored_bytes"], expiredThrough: row["expired_through"])
    }

    static func member(_ db: Database, room: String, key: String) throws -> MemberRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM members WHERE room = ? AND key = ?"), arguments: [room, key]).map(member(row:))
    }

    /// Unknown stored values fail closed: a row this code does not understand grants nothing.
    static func member(row: Row) throws -> MemberRecord {
        guard let role = Role(rawValue: row["role"]) else { throw StoreError("unknown member role in the database") }
        return MemberRecord(room: row["room"], key: row["key"], role: role,
                            signature: bytes(row["signature"]) ?? [], floor: row["floor"], delivered: row["delivered"])
    }

    static func invite(_ db: Database, room: String, inviteID: [UInt8]) throws -> InviteRecord? {
        // Fetch the room's invites and compare ids in constant time.
        try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM invites WHERE room = ?"), arguments: [room]).map(invite(row:))
            .first { constantTimeEquals($0.inviteID, inviteID) }
    }

    static func invite(row: Row) throws -> InviteRecord {
        guard let state = InviteState(rawValue: row["state"]) else { throw StoreError("unknown invite state in the database") }
        return InviteRecord(room: row["room"], inviteID: bytes(row["invite_id"]) ?? [], expiresAt: row["expires_at"],
                     state: state, joiner: row["joiner"],
                     joiningKey: bytes(row["joining_key"]), response: bytes(row["response"]),
                     confirmation: bytes(row["confirmation"]), responseEpoch: row["response_epoch"])
    }

    static func message(row: Row) -> MessageRecord {
        MessageRecord(room: row["room"], seq: row["seq"], kind: row["kind"], sender: row["sender"],
                      epoch: row["epoch"], at: row["at"], payload: bytes(row["payload"]), messageID: bytes(row["message_id"]))
    }

    static func bytes(_ data: Data?) -> [UInt8]? { data.map { Array($0) } }
    static func data(_ bytes: [UInt8]?) -> Data? { bytes.map { Data($0) } }

    static func keys(_ db: Database, room: String) throws -> [String] {
        try String.fetchAll(db.cachedStatement(sql: "SELECT key FROM members WHERE room = ? ORDER BY rowid"), arguments: [room])
    }

    /// Rooms and unexpired joins of a key (an expired join no longer holds a place).
    static func roomCount(_ db: Database, key: String, now: Int64) throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: """
            SELECT (SELECT COUNT(*) FROM members WHERE key = ?) + (SELECT COUNT(*) FROM invites WHERE joiner = ? AND expires_at > ?)
            """), arguments: [key, key, now]) ?? 0
    }

    /// The bytes of database pages in use (free pages, which SQLite reuses, not counted); 0
    /// without a server bound, which is then the only reader: three PRAGMAs a send saved.
    static func databaseBytes(_ db: Database, limits: Limits) throws -> Int {
        guard limits.maxStorageBytes != nil else { return 0 }
        let pages = try Int.fetchOne(db.cachedStatement(sql: "PRAGMA page_count")) ?? 0
        let free = try Int.fetchOne(db.cachedStatement(sql: "PRAGMA freelist_count")) ?? 0
        let pageSize = try Int.fetchOne(db.cachedStatement(sql: "PRAGMA page_size")) ?? 0
        return (pages - free) * pageSize
    }

    static func updateInvite(_ db: Database, _ invite: InviteRecord) throws {
        try db.cachedStatement(sql: """
            UPDATE invites SET state = ?, joiner = ?, joining_key = ?, response = ?, confirmation = ?, response_epoch = ?
            WHERE room = ? AND invite_id = ?
            """).execute(arguments: [invite.state.rawValue, invite.joiner, data(invite.joiningKey), data(invite.response),
                             data(invite.confirmation), invite.responseEpoch, invite.room, data(invite.inviteID)])
    }

    // MARK: Store

    public func isRetired(_ key: String) async throws -> Bool {
        try await read { db in try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM retired WHERE key = ?"), arguments: [key]) ?? false }
    }

    public func createRoom(id: String, owner: String, rotateEvery: Int, now: Int64, limits: Limits) async throws -> RoomRecord {
        try await write { db in
            guard try Self.roomCount(db, key: owner, now: now) < limits.maxRoomsPerKey else {
                throw HushError(.limitReached, "this key is in too many rooms")
            }
            try StorageRules.checkNewRoom(databaseBytes: Self.databaseBytes(db, limits: limits), limits: limits)
            let room = RoomRecord(id: id, owner: owner, epoch: 0, lastSeq: 0, lastRotationSeq: 0, sinceRotation: 0,
                                  rotateEvery: rotateEvery, wrapRequired: false, storedBytes: 0, expiredThrough: 0)
            try db.cachedStatement(sql: """
                INSERT INTO rooms (id, owner, epoch, last_seq, last_rotation_seq, since_rotation, rotate_every, wrap_required)
                VALUES (?, ?, 0, 0, 0, 0, ?, 0)
                """).execute(arguments: [id, owner, rotateEvery])
            try db.cachedStatement(sql: "INSERT INTO members VALUES (?, ?, 'owner', x'', 0, 0)").execute(arguments: [id, owner])
            return room
        }
    }

    public func room(_ id: String) async throws -> RoomRecord? {
        try await read { db in try Self.room(db, id) }
    }

    public func rooms(of key: String) async throws -> [(RoomRecord, MemberRecord)] {
        let rows = try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT m.*, r.id AS rid, r.owner, r.epoch, r.last_seq, r.last_rotation_seq, r.since_rotation,
                       r.rotate_every, r.wrap_required, r.stored_bytes, r.expired_through
                FROM members m JOIN rooms r ON r.id = m.room WHERE m.key = ?
                """), arguments: [key]).map { row in
                (RoomRecord(id: row["rid"], owner: row["owner"], epoch: row["epoch"], lastSeq: row["last_seq"],
                            lastRotationSeq: row["last_rotation_seq"], sinceRotation: row["since_rotation"],
                            rotateEvery: row["rotate_every"], wrapRequired: row["wrap_required"],
                            storedBytes: row["stored_bytes"], expiredThrough: row["expired_through"]),
                 try Self.member(row: row))
            }
        }
        return rows
    }

    public func members(of room: String) async throws -> [MemberRecord] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM members WHERE room = ? ORDER BY rowid"), arguments: [room]).map(Self.member(row:))
        }
    }

    public func joins(of key: String, now: Int64) async throws -> [InviteRecord] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM invites WHERE joiner = ? AND expires_at > ?"), arguments: [key, now])
                .map(Self.invite(row:))
        }
    }

    public func pendingJoins(room: String, now: Int64) async throws -> [InviteRecord] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM invites WHERE room = ? AND state != 'open' AND expires_at > ?"),
                             arguments: [room, now]).map(Self.invite(row:))
        }
    }

    public func invites(room: String, by key: String, now: Int64) async throws -> [InviteRecord] {
        try await read { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .owner)
            return try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM invites WHERE room = ? AND expires_at > ? ORDER BY expires_at"),
                                    arguments: [room.id, now]).map(Self.invite(row:))
        }
    }

    public func revokeInvite(room: String, inviteID: [UInt8], by key: String,
                             announce: Announcement<InviteRecord>) async throws -> InviteRecord {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .owner)
            guard let invite = try Self.invite(db, room: room.id, inviteID: inviteID) else {
                throw HushError(.unknownInvite, "no such invite in this room")
            }
            try db.cachedStatement(sql: "DELETE FROM invites WHERE room = ? AND invite_id = ?").execute(arguments: [room.id, Data(invite.inviteID)])
            return invite
        }
    }

    public func addInvite(room: String, by key: String, inviteID: [UInt8], expiresAt: Int64, now: Int64, limits: Limits) async throws {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .owner)
            let open = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM invites WHERE room = ? AND state = 'open' AND expires_at > ?"),
                                        arguments: [room.id, now]) ?? 0
            try RoomRules.checkNewInvite(expiresAt: expiresAt, now: now, openInvites: open, limits: limits)
            guard try Self.invite(db, room: room.id, inviteID: inviteID) == nil, try !Self.wasUsed(db, room: room.id, inviteID: inviteID) else {
                throw HushError(.inviteUsed, "this invite id is already registered")
            }
            // Expired invites, and the joins through them, are over: make room for new ones.
            try db.cachedStatement(sql: "DELETE FROM invites WHERE room = ? AND expires_at <= ?").execute(arguments: [room.id, now])
            try db.cachedStatement(sql: "DELETE FROM used_invites WHERE room = ? AND expires_at <= ?").execute(arguments: [room.id, now])
            try db.cachedStatement(sql: "INSERT INTO invites (room, invite_id, expires_at, state) VALUES (?, ?, ?, 'open')").execute(
                           arguments: [room.id, Data(inviteID), expiresAt])
        }
    }

    public func requestJoin(room: String, inviteID: [UInt8], joiner: String, joiningKey: [UInt8], now: Int64, limits: Limits,
                            announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let pending = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM invites WHERE room = ? AND state != 'open' AND expires_at > ?"),
                                           arguments: [room.id, now]) ?? 0
            let invite = try RoomRules.join(invite: Self.invite(db, room: room.id, inviteID: inviteID),
                                            inviteWasUsed: Self.wasUsed(db, room: room.id, inviteID: inviteID), joiner: joiner,
                                            joiningKey: joiningKey, isMember: Self.member(db, room: room.id, key: joiner) != nil,
                                            roomsOfJoiner: Self.roomCount(db, key: joiner, now: now), pendingJoins: pending,
                                            now: now, limits: limits)
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func respondJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                            announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .owner)
            let invite = try RoomRules.respond(room: room, invite: Self.invite(db, room: room.id, inviteID: inviteID),
                                               sealed: sealed, now: now)
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func confirmJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                            announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let invite = try RoomRules.confirm(invite: Self.invite(db, room: room.id, inviteID: inviteID), key: key,
                                               sealed: sealed, now: now)
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func addMember(room: String, inviteID: [UInt8], key: String, signature: [UInt8], by owner: String, now: Int64,
                          limits: Limits, announce: Announcement<[String]>) async throws -> [String] {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: owner), as: .owner)
            let invite = try Self.invite(db, room: room.id, inviteID: inviteID)
            let member = try RoomRules.admit(room: room, invite: invite, key: key,
                                             signature: signature, memberCount: Self.keys(db, room: room.id).count, now: now,
                                             limits: limits)
            try db.cachedStatement(sql: "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?)").execute(
                arguments: [member.room, member.key, member.role.rawValue, Data(member.signature), member.floor, member.delivered])
            try db.cachedStatement(sql: "DELETE FROM invites WHERE room = ? AND invite_id = ?").execute(arguments: [room.id, Data(inviteID)])
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO used_invites VALUES (?, ?, ?)").execute(
                arguments: [room.id, Data(inviteID), invite?.expiresAt ?? now])
            return try Self.keys(db, room: room.id)
        }
    }

    public func append(room: String, from key: String, payload: [UInt8], epoch: Int, messageID: [UInt8], files: [[UInt8]],
                       now: Int64, limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let current = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: current.id, key: key), as: .member)
            if let original = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM messages WHERE room = ? AND sender = ? AND message_id = ?"),
                                               arguments: [current.id, key, Data(messageID)]) {
                return AppendOutcome(message: Self.message(row: original), room: current, recipients: [], wraps: [:], isRepeat: true)
            }
            let (room, message) = try RoomRules.send(room: current, from: key, epoch: epoch, payload: payload, messageID: messageID,
                                                     now: now, databaseBytes: Self.databaseBytes(db, limits: limits), limits: limits)
            let attached = try RoomRules.attach(files.map { try Self.file(db, room: room.id, id: $0) }, by: key, seq: message.seq)
            try Self.insert(db, message)
            for file in attached {
                try db.cachedStatement(sql: "UPDATE files SET seq = ? WHERE room = ? AND id = ?").execute(
                    arguments: [file.seq, room.id, Data(file.id)])
            }
            try Self.update(db, room)
            return AppendOutcome(message: message, room: room, recipients: try Self.keys(db, room: room.id), wraps: [:])
        }
    }

    static func insert(_ db: Database, _ message: MessageRecord) throws {
        try db.cachedStatement(sql: """
            INSERT INTO messages (room, seq, kind, sender, epoch, at, payload, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [message.room, message.seq, message.kind, message.sender, message.epoch, message.at,
                             data(message.payload), data(message.messageID)])
    }

    public func rotate(room: String, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?, now: Int64,
                       limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let current = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: current.id, key: key), as: .owner)
            let keys = try Self.keys(db, room: current.id)
            let (room, message) = try RoomRules.rotate(room: current, by: key, epoch: epoch, payload: payload, wraps: wraps,
                                                       roomKeys: Set(keys), now: now,
                                                       databaseBytes: Self.databaseBytes(db, limits: limits), limits: limits)
            try Self.insert(db, message)
            var wrapMap: [String: [UInt8]] = [:]
            for wrap in wraps ?? [] {
                wrapMap[wrap.key] = wrap.wrap.bytes
                try db.cachedStatement(sql: "INSERT INTO wraps VALUES (?, ?, ?, ?)").execute(
                               arguments: [room.id, message.seq, wrap.key, Data(wrap.wrap.bytes)])
            }
            try Self.update(db, room)
            return AppendOutcome(message: message, room: room, recipients: keys, wraps: wrapMap)
        }
    }

    // MARK: files

    static func file(_ db: Database, room: String, id: [UInt8]) throws -> FileRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM files WHERE room = ? AND id = ?"), arguments: [room, Data(id)]).map {
            FileRecord(room: $0["room"], id: bytes($0["id"]) ?? [], uploader: $0["uploader"], chunks: $0["chunks"],
                       storedChunks: $0["stored_chunks"], seq: $0["seq"], createdAt: $0["created_at"])
        }
    }

    public func putChunk(room: String, file id: [UInt8], by key: String, chunks: Int, index: Int, data: [UInt8], now: Int64,
                         limits: Limits) async throws -> FileRecord {
        try await write { db in
            let current = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: current.id, key: key), as: .member)
            let stored = try Data.fetchOne(db.cachedStatement(sql: "SELECT data FROM file_chunks WHERE room = ? AND file = ? AND idx = ?"),
                                           arguments: [current.id, Data(id), index])
            let pending = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM files WHERE room = ? AND uploader = ? AND seq IS NULL"),
                                           arguments: [current.id, key]) ?? 0
            let inRoom = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM files WHERE room = ?"), arguments: [current.id]) ?? 0
            let write = try RoomRules.putChunk(room: current, file: Self.file(db, room: current.id, id: id), id: id, by: key,
                                               chunks: chunks, index: index, data: data, stored: Self.bytes(stored),
                                               pendingOfKey: pending, filesInRoom: inRoom, now: now,
                                               databaseBytes: Self.databaseBytes(db, limits: limits), limits: limits)
            guard case .store(let room, let file) = write else { return write.file }
            try db.cachedStatement(sql: """
                INSERT INTO files (room, id, uploader, chunks, stored_chunks, seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (room, id) DO UPDATE SET stored_chunks = excluded.stored_chunks
                """).execute(arguments: [room.id, Data(file.id), file.uploader, file.chunks, file.storedChunks, file.seq, file.createdAt])
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO file_chunks (room, file, idx, data) VALUES (?, ?, ?, ?)").execute(
                arguments: [room.id, Data(file.id), index, Data(data)])
            try Self.update(db, room)
            return file
        }
    }

    public func fileChunk(room: String, file id: [UInt8], index: Int, for key: String) async throws -> (chunks: Int, data: [UInt8]) {
        try await read { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let member = try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .member)
            let file = try RoomRules.readableFile(Self.file(db, room: room.id, id: id), room: room, member: member)
            guard let data = try Data.fetchOne(db.cachedStatement(sql: "SELECT data FROM file_chunks WHERE room = ? AND file = ? AND idx = ?"),
                                               arguments: [room.id, Data(id), index]) else {
                throw RoomRules.unknownFile
            }
            return (file.chunks, Array(data))
        }
    }

    public func expirePendingFiles(before: Int64) async throws -> Int {
        try await write { db in
            let pending = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT room, id FROM files WHERE seq IS NULL AND created_at < ? ORDER BY created_at LIMIT 1000
                """), arguments: [before])
            for row in pending {
                try Self.deleteFile(db, room: row["room"], id: row["id"])
            }
            return pending.count
        }
    }

    /// Deletes one file and gives its bytes back to its room's quota.
    static func deleteFile(_ db: Database, room: String, id: Data) throws {
        let freed = try Int.fetchOne(db.cachedStatement(sql: """
            SELECT COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * \(StorageRules.recordOverhead) FROM file_chunks WHERE room = ? AND file = ?
            """), arguments: [room, id]) ?? 0
        try db.cachedStatement(sql: "DELETE FROM file_chunks WHERE room = ? AND file = ?").execute(arguments: [room, id])
        try db.cachedStatement(sql: "DELETE FROM files WHERE room = ? AND id = ?").execute(arguments: [room, id])
        try db.cachedStatement(sql: "UPDATE rooms SET stored_bytes = stored_bytes - ? WHERE id = ?").execute(arguments: [freed, room])
    }

    public func history(room: String, for key: String, after: Int?, limit: Int?, limits: Limits) async throws -> HistoryPage {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let member = try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .member)
            let page = try RoomRules.historyPage(after: after, limit: limit, floor: member.floor, limits: limits)
            let rows = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT m.*, w.wrap AS own_wrap FROM messages m
                LEFT JOIN wraps w ON w.room = m.room AND w.seq = m.seq AND w.key = ?
                WHERE m.room = ? AND m.seq > ? ORDER BY m.seq LIMIT ?
                """), arguments: [key, room.id, page.after, page.limit + 1])
            // Cut the page at the byte budget too (never below one message): `more` tells the
            // client to ask again from the last sequence number it got.
            var messages: [Envelope] = []
            var bytes = 0
            for row in rows.prefix(page.limit) {
                let envelope = Self.message(row: row).envelope(wrap: Self.bytes(row["own_wrap"]))
                bytes += (envelope.payload?.bytes.count ?? 0) + (envelope.wrap?.bytes.count ?? 0)
                if !messages.isEmpty && bytes > limits.maxHistoryPageBytes { break }
                messages.append(envelope)
            }
            let more = rows.count > messages.count
            if let last = messages.last?.seq, last > member.delivered {
                try db.cachedStatement(sql: "UPDATE members SET delivered = ? WHERE room = ? AND key = ?").execute(arguments: [last, room.id, key])
            }
            return HistoryPage(messages: messages, more: more, expiredThrough: room.expiredThrough)
        }
    }

    public func saveDelivered(room: String, key: String, seq: Int) async throws {
        try await write { db in
            try db.cachedStatement(sql: "UPDATE members SET delivered = MAX(delivered, ?) WHERE room = ? AND key = ?").execute(
                           arguments: [seq, room, key])
        }
    }

    public func formerMembers(of room: String, after floor: Int, limit: Int) async throws -> [DepartedRecord] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM departed WHERE room = ? AND until > ? ORDER BY until DESC, rowid DESC LIMIT ?
                """), arguments: [room, floor, limit]).compactMap { row in
                guard let departure = Departure(rawValue: row["departure"]) else { return nil }
                return DepartedRecord(room: row["room"], key: row["key"], signature: Self.bytes(row["signature"]) ?? [],
                                      until: row["until"], departure: departure,
                                      departureSignature: Self.bytes(row["departure_signature"]) ?? [])
            }
        }
    }

    public func removeMember(room: String, key: String, signature: [UInt8], by owner: String,
                             announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let current = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: current.id, key: owner), as: .owner)
            let (room, departed) = try RoomRules.depart(room: current, member: Self.member(db, room: current.id, key: key),
                                                        departure: .removed, signature: signature)
            try Self.retire(db, room: room, departed: departed)
            return DepartureOutcome(remaining: try Self.keys(db, room: room.id), until: departed.until)
        }
    }

    public func leave(room: String, key: String, signature: [UInt8],
                      announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome {
        try await write(afterCommit: announce.deliver) { db in
            let current = try RoomRules.requireRoom(Self.room(db, room))
            let member = try RoomRules.authorize(Self.member(db, room: current.id, key: key), as: .member)
            let (room, departed) = try RoomRules.depart(room: current, member: member, departure: .left, signature: signature)
            try Self.retire(db, room: room, departed: departed)
            return DepartureOutcome(remaining: try Self.keys(db, room: room.id), until: departed.until)
        }
    }

    /// Writes a departure: the membership goes, the departed record stays (for `formerMembers`),
    /// the key is retired, and the room is as `RoomRules.depart` left it.
    static func retire(_ db: Database, room: RoomRecord, departed: DepartedRecord) throws {
        try db.cachedStatement(sql: "DELETE FROM members WHERE room = ? AND key = ?").execute(arguments: [room.id, departed.key])
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO departed VALUES (?, ?, ?, ?, ?, ?)").execute(
            arguments: [room.id, departed.key, Data(departed.signature), departed.until, departed.departure.rawValue,
                        Data(departed.departureSignature)])
        try update(db, room)
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO retired VALUES (?)").execute(arguments: [departed.key])
    }

    /// Whether a member joined the room with this invite (and it has not expired since).
    static func wasUsed(_ db: Database, room: String, inviteID: [UInt8]) throws -> Bool {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM used_invites WHERE room = ? AND invite_id = ?"),
                         arguments: [room, Data(inviteID)]) != nil
    }

    /// Writes back a room as a rule returned it.
    static func update(_ db: Database, _ room: RoomRecord) throws {
        try db.cachedStatement(sql: """
            UPDATE rooms SET epoch = ?, last_seq = ?, last_rotation_seq = ?, since_rotation = ?, wrap_required = ?,
                stored_bytes = ?, expired_through = ?
            WHERE id = ?
            """).execute(arguments: [room.epoch, room.lastSeq, room.lastRotationSeq, room.sinceRotation, room.wrapRequired,
                                     room.storedBytes, room.expiredThrough, room.id])
    }

    public func deleteRoom(room: String, by key: String, announce: Announcement<[String]>) async throws -> [String] {
        try await write(afterCommit: announce.deliver) { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.authorize(Self.member(db, room: room.id, key: key), as: .owner)
            let keys = try Self.keys(db, room: room.id)
            try db.cachedStatement(sql: "DELETE FROM file_chunks WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM files WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM wraps WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM messages WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM invites WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM used_invites WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM departed WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM members WHERE room = ?").execute(arguments: [room.id])
            try db.cachedStatement(sql: "DELETE FROM rooms WHERE id = ?").execute(arguments: [room.id])
            return keys
        }
    }

    public func expire(now: Int64, retention: Retention, afterRoom: Int64) async throws -> ExpiryPass {
        guard retention.isEnabled else { return ExpiryPass(deleted: 0, nextRoom: nil) }
        let batch = max(1, retention.batch)
        return try await write { db in
            // Each room looked at costs one unit of the batch, each record read one more: a pass
            // stays bounded however many rooms or records there are.
            let rooms = try Row.fetchAll(db.cachedStatement(sql: "SELECT rowid, * FROM rooms WHERE rowid > ? ORDER BY rowid LIMIT ?"),
                                         arguments: [afterRoom, batch])
            var budget = batch
            var deleted = 0
            for row in rooms {
                let rowid: Int64 = row["rowid"]
                budget -= 1
                let room = try Self.expire(db, room: Self.room(row: row), now: now, retention: retention, budget: budget)
                deleted += room.deleted
                budget -= room.read
                // A room cut short by the budget comes first in the next pass, unless it had
                // nothing to delete (then it would only be read again).
                if budget <= 0 { return ExpiryPass(deleted: deleted, nextRoom: room.deleted > 0 ? rowid - 1 : rowid) }
            }
            return ExpiryPass(deleted: deleted, nextRoom: rooms.count == batch ? rooms.last?["rowid"] : nil)
        }
    }

    /// One room's part of a retention pass, reading at most `budget` records: how many it read
    /// and how many it deleted.
    static func expire(_ db: Database, room: RoomRecord, now: Int64, retention: Retention,
                       budget: Int) throws -> (read: Int, deleted: Int) {
        func entries(_ sql: String, limit: Int) throws -> [StoredEntry] {
            guard limit > 0 else { return [] }
            return try Row.fetchAll(db, sql: "SELECT seq, kind, at FROM messages WHERE room = ? AND \(sql) ORDER BY seq LIMIT ?",
                                    arguments: [room.id, room.expiredThrough, limit])
                .map { StoredEntry(seq: $0["seq"], kind: $0["kind"], at: $0["at"]) }
        }
        // What may expire first, then the rotations kept below the floor: however many of those
        // a long-absent key holds back, the floor still moves.
        let oldest = try entries("seq > ?", limit: budget)
        let kept = try entries("seq <= ?", limit: budget - oldest.count)
        let minDelivered = try Int.fetchOne(db.cachedStatement(sql: "SELECT MIN(delivered) FROM members WHERE room = ?"), arguments: [room.id]) ?? 0
        let plan = StorageRules.expiry(expiredThrough: room.expiredThrough, lastSeq: room.lastSeq, minDelivered: minDelivered,
                                       kept: kept, oldest: oldest, now: now, retention: retention)
        let read = oldest.count + kept.count
        guard plan.expiredThrough != room.expiredThrough || !plan.deletions.isEmpty else { return (read, 0) }
        var freed = 0
        for seq in plan.deletions {
            let overhead = StorageRules.recordOverhead
            freed += try Int.fetchOne(db, sql: """
                SELECT COALESCE(LENGTH(payload), 0) + \(overhead)
                    + (SELECT COALESCE(SUM(LENGTH(wrap)), 0) + COUNT(*) * \(overhead) FROM wraps WHERE room = ?1 AND seq = ?2)
                FROM messages WHERE room = ?1 AND seq = ?2
                """, arguments: [room.id, seq]) ?? 0
            try db.cachedStatement(sql: "DELETE FROM wraps WHERE room = ? AND seq = ?").execute(arguments: [room.id, seq])
            try db.cachedStatement(sql: "DELETE FROM messages WHERE room = ? AND seq = ?").execute(arguments: [room.id, seq])
            // A file goes with the message that carries it.
            for id in try Data.fetchAll(db.cachedStatement(sql: "SELECT id FROM files WHERE room = ? AND seq = ?"), arguments: [room.id, seq]) {
                try deleteFile(db, room: room.id, id: id)
            }
        }
        try db.cachedStatement(sql: "UPDATE rooms SET expired_through = ?, stored_bytes = stored_bytes - ? WHERE id = ?").execute(
                       arguments: [plan.expiredThrough, freed, room.id])
        // A departed key whose messages have all expired has nothing left to verify.
        try db.cachedStatement(sql: "DELETE FROM departed WHERE room = ? AND until <= ?").execute(arguments: [room.id, plan.expiredThrough])
        return (read, plan.deletions.count)
    }
}

/// The database holds something this code cannot trust or understand.
struct StoreError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
