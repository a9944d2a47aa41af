import Foundation
import GRDB
import HushProtocol
import ThemisKit

/// `Store` on SQLite through GRDB: WAL journal, `synchronous=FULL` on the connection that
/// writes, so a committed message survives `kill -9` and power loss.
public final class SQLiteStore: Store {
    private let pool: DatabasePool

    /// `PRAGMA synchronous` value of FULL.
    static let synchronousFull = 2

    public init(path: String) throws {
        pool = try DatabasePool(path: path)
        // GRDB sets the writer to NORMAL when it enables WAL, after any `prepareDatabase`
        // hook: set FULL afterwards on the one writer connection, and check that it holds.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        guard try writerSynchronousLevel() == Self.synchronousFull else {
            throw StoreError("SQLite refused synchronous=FULL on the writer connection")
        }
        try Self.migrator.migrate(pool)
    }

    /// The writer connection's `PRAGMA synchronous` (2 = FULL).
    public func writerSynchronousLevel() throws -> Int {
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
        return migrator
    }

    /// Runs `body` in one write transaction, passing `HushError` through untouched.
    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.write(body)
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }

    // MARK: row mapping

    static func room(_ db: Database, _ id: String) throws -> RoomRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM rooms WHERE id = ?", arguments: [id]).map(room(row:))
    }

    static func room(row: Row) -> RoomRecord {
        RoomRecord(id: row["id"], owner: row["owner"], epoch: row["epoch"], lastSeq: row["last_seq"],
                   lastRotationSeq: row["last_rotation_seq"], sinceRotation: row["since_rotation"],
                   rotateEvery: row["rotate_every"], wrapRequired: row["wrap_required"])
    }

    static func member(_ db: Database, room: String, key: String) throws -> MemberRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM members WHERE room = ? AND key = ?", arguments: [room, key]).map(member(row:))
    }

    /// Unknown stored values fail closed: a row this code does not understand grants nothing.
    static func member(row: Row) throws -> MemberRecord {
        guard let role = Role(rawValue: row["role"]) else { throw StoreError("unknown member role in the database") }
        return MemberRecord(room: row["room"], key: row["key"], role: role,
                            signature: bytes(row["signature"]) ?? [], floor: row["floor"], delivered: row["delivered"])
    }

    static func invite(_ db: Database, room: String, inviteID: [UInt8]) throws -> InviteRecord? {
        // Fetch the room's invites and compare ids in constant time.
        try Row.fetchAll(db, sql: "SELECT * FROM invites WHERE room = ?", arguments: [room]).map(invite(row:))
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
        try String.fetchAll(db, sql: "SELECT key FROM members WHERE room = ? ORDER BY rowid", arguments: [room])
    }

    static func roomCount(_ db: Database, key: String) throws -> Int {
        try Int.fetchOne(db, sql: """
            SELECT (SELECT COUNT(*) FROM members WHERE key = ?) + (SELECT COUNT(*) FROM invites WHERE joiner = ?)
            """, arguments: [key, key]) ?? 0
    }

    static func updateInvite(_ db: Database, _ invite: InviteRecord) throws {
        try db.execute(sql: """
            UPDATE invites SET state = ?, joiner = ?, joining_key = ?, response = ?, confirmation = ?, response_epoch = ?
            WHERE room = ? AND invite_id = ?
            """, arguments: [invite.state.rawValue, invite.joiner, data(invite.joiningKey), data(invite.response),
                             data(invite.confirmation), invite.responseEpoch, invite.room, data(invite.inviteID)])
    }

    // MARK: Store

    public func isRetired(_ key: String) async throws -> Bool {
        try await read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM retired WHERE key = ?", arguments: [key]) ?? false }
    }

    public func createRoom(id: String, owner: String, rotateEvery: Int, limits: Limits) async throws -> RoomRecord {
        try await write { db in
            guard try Self.roomCount(db, key: owner) < limits.maxRoomsPerKey else {
                throw HushError(.limitReached, "this key is in too many rooms")
            }
            let room = RoomRecord(id: id, owner: owner, epoch: 0, lastSeq: 0, lastRotationSeq: 0, sinceRotation: 0,
                                  rotateEvery: rotateEvery, wrapRequired: false)
            try db.execute(sql: "INSERT INTO rooms VALUES (?, ?, 0, 0, 0, 0, ?, 0)", arguments: [id, owner, rotateEvery])
            try db.execute(sql: "INSERT INTO members VALUES (?, ?, 'owner', x'', 0, 0)", arguments: [id, owner])
            return room
        }
    }

    public func room(_ id: String) async throws -> RoomRecord? {
        try await read { db in try Self.room(db, id) }
    }

    public func rooms(of key: String) async throws -> [(RoomRecord, MemberRecord)] {
        let rows = try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT m.*, r.id AS rid, r.owner, r.epoch, r.last_seq, r.last_rotation_seq, r.since_rotation,
                       r.rotate_every, r.wrap_required
                FROM members m JOIN rooms r ON r.id = m.room WHERE m.key = ?
                """, arguments: [key]).map { row in
                (RoomRecord(id: row["rid"], owner: row["owner"], epoch: row["epoch"], lastSeq: row["last_seq"],
                            lastRotationSeq: row["last_rotation_seq"], sinceRotation: row["since_rotation"],
                            rotateEvery: row["rotate_every"], wrapRequired: row["wrap_required"]),
                 try Self.member(row: row))
            }
        }
        return rows
    }

    public func members(of room: String) async throws -> [MemberRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM members WHERE room = ? ORDER BY rowid", arguments: [room]).map(Self.member(row:))
        }
    }

    public func joins(of key: String) async throws -> [InviteRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM invites WHERE joiner = ?", arguments: [key]).map(Self.invite(row:))
        }
    }

    public func pendingJoins(room: String) async throws -> [InviteRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM invites WHERE room = ? AND state != 'open'", arguments: [room])
                .map(Self.invite(row:))
        }
    }

    public func addInvite(room: String, by key: String, inviteID: [UInt8], expiresAt: Int64, now: Int64, limits: Limits) async throws {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.requireOwner(room, key: key)
            let open = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM invites WHERE room = ? AND state = 'open' AND expires_at > ?",
                                        arguments: [room.id, now]) ?? 0
            try RoomRules.checkNewInvite(expiresAt: expiresAt, now: now, openInvites: open, limits: limits)
            guard try Self.invite(db, room: room.id, inviteID: inviteID) == nil else {
                throw HushError(.inviteUsed, "this invite id is already registered")
            }
            try db.execute(sql: "DELETE FROM invites WHERE room = ? AND state = 'open' AND expires_at <= ?", arguments: [room.id, now])
            try db.execute(sql: "INSERT INTO invites (room, invite_id, expires_at, state) VALUES (?, ?, ?, 'open')",
                           arguments: [room.id, Data(inviteID), expiresAt])
        }
    }

    public func requestJoin(room: String, inviteID: [UInt8], joiner: String, joiningKey: [UInt8], now: Int64, limits: Limits) async throws -> JoinOutcome {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            guard try Self.member(db, room: room.id, key: joiner) == nil else {
                throw HushError(.alreadyMember, "this key is already in the room")
            }
            let pending = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM invites WHERE room = ? AND state != 'open'",
                                           arguments: [room.id]) ?? 0
            var invite = try RoomRules.checkJoin(invite: Self.invite(db, room: room.id, inviteID: inviteID), now: now,
                                                 pendingJoins: pending, limits: limits)
            guard try Self.roomCount(db, key: joiner) < limits.maxRoomsPerKey else {
                throw HushError(.limitReached, "this key is in too many rooms")
            }
            invite.state = .requested
            invite.joiner = joiner
            invite.joiningKey = joiningKey
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func respondJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8]) async throws -> JoinOutcome {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.requireOwner(room, key: key)
            var invite = try RoomRules.checkResponse(invite: Self.invite(db, room: room.id, inviteID: inviteID))
            invite.state = .responded
            invite.response = sealed
            invite.confirmation = nil
            invite.responseEpoch = room.epoch
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func confirmJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8]) async throws -> JoinOutcome {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            var invite = try RoomRules.checkConfirm(invite: Self.invite(db, room: room.id, inviteID: inviteID), key: key)
            invite.state = .confirmed
            invite.confirmation = sealed
            try Self.updateInvite(db, invite)
            return JoinOutcome(room: room, invite: invite)
        }
    }

    public func addMember(room: String, inviteID: [UInt8], key: String, signature: [UInt8], by owner: String, limits: Limits) async throws -> [String] {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.requireOwner(room, key: owner)
            let count = try Self.keys(db, room: room.id).count
            try RoomRules.checkAddMember(room: room, invite: Self.invite(db, room: room.id, inviteID: inviteID), key: key,
                                         signature: signature, memberCount: count, limits: limits)
            try db.execute(sql: "INSERT INTO members VALUES (?, ?, 'member', ?, ?, ?)",
                           arguments: [room.id, key, Data(signature), room.lastRotationSeq, room.lastRotationSeq])
            try db.execute(sql: "DELETE FROM invites WHERE room = ? AND invite_id = ?", arguments: [room.id, Data(inviteID)])
            return try Self.keys(db, room: room.id)
        }
    }

    public func append(room: String, from key: String, payload: [UInt8], epoch: Int, messageID: [UInt8], now: Int64,
                       afterCommit: @escaping AfterCommit) async throws -> AppendOutcome {
        try await write { db in
            var room = try RoomRules.requireRoom(Self.room(db, room))
            _ = try RoomRules.requireMember(Self.member(db, room: room.id, key: key))
            if let original = try Row.fetchOne(db, sql: "SELECT * FROM messages WHERE room = ? AND sender = ? AND message_id = ?",
                                               arguments: [room.id, key, Data(messageID)]) {
                return AppendOutcome(message: Self.message(row: original), room: room, recipients: [], wraps: [:], isRepeat: true)
            }
            try RoomRules.checkSend(room: room, epoch: epoch)
            room.lastSeq += 1
            room.sinceRotation += 1
            let message = MessageRecord(room: room.id, seq: room.lastSeq, kind: "message", sender: key,
                                        epoch: room.epoch, at: now, payload: payload, messageID: messageID)
            try Self.insert(db, message)
            try db.execute(sql: "UPDATE rooms SET last_seq = ?, since_rotation = ? WHERE id = ?",
                           arguments: [room.lastSeq, room.sinceRotation, room.id])
            let outcome = AppendOutcome(message: message, room: room, recipients: try Self.keys(db, room: room.id), wraps: [:])
            db.afterNextTransaction(onCommit: { _ in afterCommit(outcome) })
            return outcome
        }
    }

    static func insert(_ db: Database, _ message: MessageRecord) throws {
        try db.execute(sql: """
            INSERT INTO messages (room, seq, kind, sender, epoch, at, payload, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [message.room, message.seq, message.kind, message.sender, message.epoch, message.at,
                             data(message.payload), data(message.messageID)])
    }

    public func rotate(room: String, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?, now: Int64,
                       afterCommit: @escaping AfterCommit) async throws -> AppendOutcome {
        try await write { db in
            var room = try RoomRules.requireRoom(Self.room(db, room))
            _ = try RoomRules.requireMember(Self.member(db, room: room.id, key: key))
            try RoomRules.requireOwner(room, key: key)
            let keys = try Self.keys(db, room: room.id)
            try RoomRules.checkRotation(room: room, epoch: epoch, payload: payload, wraps: wraps, roomKeys: Set(keys))
            room.lastSeq += 1
            room.epoch = epoch
            room.lastRotationSeq = room.lastSeq
            room.sinceRotation = 0
            room.wrapRequired = false
            let message = MessageRecord(room: room.id, seq: room.lastSeq, kind: "rotation", sender: key,
                                        epoch: epoch, at: now, payload: payload, messageID: nil)
            try Self.insert(db, message)
            var wrapMap: [String: [UInt8]] = [:]
            for wrap in wraps ?? [] {
                wrapMap[wrap.key] = wrap.wrap.bytes
                try db.execute(sql: "INSERT INTO wraps VALUES (?, ?, ?, ?)",
                               arguments: [room.id, message.seq, wrap.key, Data(wrap.wrap.bytes)])
            }
            try db.execute(sql: """
                UPDATE rooms SET last_seq = ?, epoch = ?, last_rotation_seq = ?, since_rotation = 0, wrap_required = 0
                WHERE id = ?
                """, arguments: [room.lastSeq, epoch, room.lastSeq, room.id])
            let outcome = AppendOutcome(message: message, room: room, recipients: keys, wraps: wrapMap)
            db.afterNextTransaction(onCommit: { _ in afterCommit(outcome) })
            return outcome
        }
    }

    public func history(room: String, for key: String, after: Int?, limit: Int?, limits: Limits) async throws -> (messages: [Envelope], more: Bool) {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let member = try RoomRules.requireMember(Self.member(db, room: room.id, key: key))
            let page = try RoomRules.historyPage(after: after, limit: limit, floor: member.floor, limits: limits)
            let rows = try Row.fetchAll(db, sql: """
                SELECT m.*, w.wrap AS own_wrap FROM messages m
                LEFT JOIN wraps w ON w.room = m.room AND w.seq = m.seq AND w.key = ?
                WHERE m.room = ? AND m.seq > ? ORDER BY m.seq LIMIT ?
                """, arguments: [key, room.id, page.after, page.limit + 1])
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
                try db.execute(sql: "UPDATE members SET delivered = ? WHERE room = ? AND key = ?", arguments: [last, room.id, key])
            }
            return (messages, more)
        }
    }

    public func saveDelivered(room: String, key: String, seq: Int) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE members SET delivered = MAX(delivered, ?) WHERE room = ? AND key = ?",
                           arguments: [seq, room, key])
        }
    }

    public func formerMembers(of room: String, after floor: Int, limit: Int) async throws -> [DepartedRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM departed WHERE room = ? AND until > ? ORDER BY until DESC, rowid DESC LIMIT ?
                """, arguments: [room, floor, limit]).compactMap { row in
                guard let departure = Departure(rawValue: row["departure"]) else { return nil }
                return DepartedRecord(room: row["room"], key: row["key"], signature: Self.bytes(row["signature"]) ?? [],
                                      until: row["until"], departure: departure,
                                      departureSignature: Self.bytes(row["departure_signature"]) ?? [])
            }
        }
    }

    public func removeMember(room: String, key: String, signature: [UInt8], by owner: String) async throws -> DepartureOutcome {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.requireOwner(room, key: owner)
            guard key != room.owner, let member = try Self.member(db, room: room.id, key: key) else {
                throw HushError(.notMember, "that key is not a member of the room")
            }
            try RoomRules.checkOwnerSignature(signature, statement: Statement.removal(room: room.id, key: key), room: room)
            try Self.retire(db, room: room, member: member, departure: .removed, signature: signature)
            return DepartureOutcome(remaining: try Self.keys(db, room: room.id), until: room.lastSeq)
        }
    }

    public func leave(room: String, key: String, signature: [UInt8]) async throws -> DepartureOutcome {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            let member = try RoomRules.requireMember(Self.member(db, room: room.id, key: key))
            guard key != room.owner else { throw HushError(.badRequest, "the owner deletes the room instead of leaving") }
            try RoomRules.checkLeaveSignature(signature, room: room.id, key: key)
            try Self.retire(db, room: room, member: member, departure: .left, signature: signature)
            return DepartureOutcome(remaining: try Self.keys(db, room: room.id), until: room.lastSeq)
        }
    }

    /// Deletes the membership, keeps the departure (for `formerMembers`), retires the key.
    static func retire(_ db: Database, room: RoomRecord, member: MemberRecord, departure: Departure, signature: [UInt8]) throws {
        try db.execute(sql: "DELETE FROM members WHERE room = ? AND key = ?", arguments: [room.id, member.key])
        try db.execute(sql: "INSERT OR REPLACE INTO departed VALUES (?, ?, ?, ?, ?, ?)",
                       arguments: [room.id, member.key, Data(member.signature), room.lastSeq, departure.rawValue, Data(signature)])
        try db.execute(sql: "UPDATE rooms SET wrap_required = 1 WHERE id = ?", arguments: [room.id])
        try db.execute(sql: "INSERT OR IGNORE INTO retired VALUES (?)", arguments: [member.key])
    }

    public func deleteRoom(room: String, by key: String) async throws -> [String] {
        try await write { db in
            let room = try RoomRules.requireRoom(Self.room(db, room))
            try RoomRules.requireOwner(room, key: key)
            let keys = try Self.keys(db, room: room.id)
            try db.execute(sql: "DELETE FROM wraps WHERE room = ?", arguments: [room.id])
            try db.execute(sql: "DELETE FROM messages WHERE room = ?", arguments: [room.id])
            try db.execute(sql: "DELETE FROM invites WHERE room = ?", arguments: [room.id])
            try db.execute(sql: "DELETE FROM departed WHERE room = ?", arguments: [room.id])
            try db.execute(sql: "DELETE FROM members WHERE room = ?", arguments: [room.id])
            try db.execute(sql: "DELETE FROM rooms WHERE id = ?", arguments: [room.id])
            return keys
        }
    }
}

/// The database holds something this code cannot trust or understand.
struct StoreError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
