import Foundation
import HushProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import ThemisKit

/// `Store` on PostgreSQL through a pool of postgres-nio connections, so that several `hush serve`
/// nodes can share one database. Each request is one transaction that first locks its room's
/// row (`FOR UPDATE`): two nodes appending to one room take sequence numbers one after the
/// other, without gap or duplicate. `synchronous_commit = on` on every connection: a write is
/// on disk before it is answered.
public final class PostgresStore: Store {
    private let client: PostgresClient
    private let running: Task<Void, Never>
    private let logger: Logger
    private let fanOut: PostgresFanOut
    /// Internal for tests, which watch its queue.
    let committer: GroupCommitter<PostgresBatches>

    /// Transactions retried after a serialization failure or a deadlock, which the database
    /// resolves by failing one side; beyond that the request fails (`internal`).
    static let maxAttempts = 3

    /// Writes per transaction at most. Each runs in a subtransaction with an id of its own,
    /// and a transaction with more than 64 of those makes every other session's snapshot look
    /// them up on disk (PostgreSQL's per-backend subtransaction cache).
    public static let maxCommitBatch = 32
    /// Batches committed at once, each on a pooled connection and with rooms of its own: while
    /// one waits for a round trip or its WAL flush, the others run.
    public static let commitLanes = 8

    private init(client: PostgresClient, running: Task<Void, Never>, logger: Logger, maxConnections: Int, commitBatch: Int,
                 commitLanes: Int) {
        self.client = client
        self.running = running
        self.logger = logger
        fanOut = PostgresFanOut(client: client, logger: logger)
        // One write per transaction is the store without group commit: as many at once as
        // the pool has connections.
        committer = GroupCommitter(store: PostgresBatches(client: client, logger: logger),
                                   maxBatch: min(commitBatch, Self.maxCommitBatch),
                                   maxLanes: commitBatch <= 1 ? maxConnections : commitLanes)
    }

    /// Opens the pool and applies the missing migrations; `close()` it when done.
    /// `commitBatch`: writes per transaction at most (group commit, at most `maxCommitBatch`);
    /// 1 commits each on its own. `commitLanes`: batches committed at once.
    public static func connect(to location: PostgresLocation, maxConnections: Int = 20,
                               commitBatch: Int = PostgresStore.maxCommitBatch, commitLanes: Int = PostgresStore.commitLanes,
                               logger: Logger = Logger(label: "hush.postgres")) async throws -> PostgresStore {
        var configuration = location.clientConfiguration
        configuration.options.maximumConnections = max(1, maxConnections)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let store = PostgresStore(client: client, running: Task { await client.run() }, logger: logger,
                                  maxConnections: configuration.options.maximumConnections, commitBatch: commitBatch,
                                  commitLanes: commitLanes)
        do {
            try await client.withConnection { connection in
                try await PostgresSchema.migrate(connection, logger: logger)
            }
            guard try await store.synchronousCommit() == "on" else {
                throw StoreError("PostgreSQL refused synchronous_commit = on")
            }
        } catch {
            await store.close()
            throw error
        }
        return store
    }

    /// Closes the pool's connections; returns once they are closed.
    public func close() async {
        await fanOut.stop()
        running.cancel()
        await running.value
    }

    /// `SHOW synchronous_commit` on a pooled connection (tests check it is `on`).
    public func synchronousCommit() async throws -> String {
        try await read { tx in try await tx.rows("SHOW synchronous_commit").first?["synchronous_commit"].decode(String.self) ?? "" }
    }

    /// Hands the pushes of writes committed by other nodes to this node's connections.
    public func deliverPeers(to hub: Hub) async throws {
        try await fanOut.start(hub: hub)
    }

    // MARK: transactions

    /// One connection in a transaction.
    struct Transaction: Sendable {
        let connection: PostgresConnection
        let logger: Logger

        func rows(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
            try await connection.query(query, logger: logger).collect().map { $0.makeRandomAccess() }
        }

        func execute(_ query: PostgresQuery) async throws {
            try await connection.query(query, logger: logger)
        }

        func int(_ query: PostgresQuery) async throws -> Int? {
            try await rows(query).first?[0].decode(Int?.self)
        }
    }

    /// Runs `body` in its own savepoint of the next group commit (`PostgresBatches`), after
    /// the batch locked `room`'s row and `key`'s advisory lock; returns once the transaction
    /// is committed, after `afterCommit` ran. A thrown error changes nothing (`HushError` is
    /// passed on untouched).
    private func write<T: Sendable>(room: String?, key: String? = nil, afterCommit: (@Sendable (T) -> Void)? = nil,
                                    _ body: @escaping @Sendable (Transaction) async throws -> T) async throws -> T {
        try await committer.write(afterCommit: afterCommit) { keep in
            PostgresBatches.Write(room: room, key: key) { tx in
                do {
                    keep(.success(try await body(tx)))
                    return nil
                } catch {
                    let reported = Self.reported(error)
                    keep(.failure(reported))
                    return reported
                }
            }
        }
    }

    /// Runs `body` in a read-write transaction of its own: for writes that lock several rooms
    /// themselves (retention, in the batches' order) or none for update (history, delivered marks).
    private func writeAlone<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try await Self.transaction(client, logger, "BEGIN", body)
    }

    /// A read-only transaction on one snapshot, so that what one request reads agrees.
    private func read<T: Sendable>(_ body: (Transaction) async throws -> T) async throws -> T {
        try await Self.transaction(client, logger, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// Runs `body` in a transaction on a pooled connection and commits; a thrown error rolls it
    /// back and is passed on (`HushError` untouched). Retried on a serialization failure or deadlock.
    static func transaction<T: Sendable>(_ client: PostgresClient, _ logger: Logger, _ begin: PostgresQuery,
                                         _ body: (Transaction) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await client.withConnection { connection in
                    let tx = Transaction(connection: connection, logger: logger)
                    try await tx.execute(begin)
                    do {
                        let value = try await body(tx)
                        try await tx.execute("COMMIT")
                        return value
                    } catch {
                        try? await tx.execute("ROLLBACK")
                        throw error
                    }
                }
            } catch let error as PSQLError where isTransient(error) && attempt < maxAttempts {
                attempt += 1
            } catch {
                throw reported(error)
            }
        }
    }

    /// serialization_failure, deadlock_detected.
    static func isTransient(_ error: PSQLError) -> Bool {
        ["40001", "40P01"].contains(error.serverInfo?[.sqlState])
    }

    /// A full disk (disk_full) is the server being full, told to the client as such.
    static func reported(_ error: any Error) -> any Error {
        guard let error = error as? PSQLError, error.serverInfo?[.sqlState] == "53100" else { return error }
        return StorageRules.serverFull
    }

    // MARK: row mapping

    static let roomColumns = """
        id, owner, epoch, last_seq, last_rotation_seq, since_rotation, rotate_every, wrap_required, stored_bytes, expired_through
        """

    /// The room's row, locked for the rest of the transaction: writes of one room, from any
    /// node, run one after the other.
    static func lockRoom(_ tx: Transaction, _ id: String) async throws -> RoomRecord {
        try RoomRules.requireRoom(try await tx.rows("SELECT \(unescaped: roomColumns) FROM rooms WHERE id = \(id) FOR UPDATE")
            .first.map(room(row:)))
    }

    static func room(row: PostgresRandomAccessRow) throws -> RoomRecord {
        RoomRecord(id: try row["id"].decode(String.self), owner: try row["owner"].decode(String.self),
                   epoch: try row["epoch"].decode(Int.self), lastSeq: try row["last_seq"].decode(Int.self),
                   lastRotationSeq: try row["last_rotation_seq"].decode(Int.self),
                   sinceRotation: try row["since_rotation"].decode(Int.self),
                   rotateEvery: try row["rotate_every"].decode(Int.self),
                   wrapRequired: try row["wrap_required"].decode(Bool.self),
                   storedBytes: try row["stored_bytes"].decode(Int.self),
                   expiredThrough: try row["expired_through"].decode(Int.self))
    }

    static let memberColumns = "room, key, role, signature, floor, delivered"

    static func member(_ tx: Transaction, room: String, key: String) async throws -> MemberRecord? {
        try await tx.rows("SELECT \(unescaped: memberColumns) FROM members WHERE room = \(room) AND key = \(key)")
            .first.map(member(row:))
    }

    /// Unknown stored values fail closed: a row this code does not understand grants nothing.
    static func member(row: PostgresRandomAccessRow) throws -> MemberRecord {
        guard let role = Role(rawValue: try row["role"].decode(String.self)) else {
            throw StoreError("unknown member role in the database")
        }
        return MemberRecord(room: try row["room"].decode(String.self), key: try row["key"].decode(String.self), role: role,
                            signature: try bytes(row["signature"]) ?? [], floor: try row["floor"].decode(Int.self),
                            delivered: try row["delivered"].decode(Int.self))
    }

    static func invite(_ tx: Transaction, room: String, inviteID: [UInt8]) async throws -> InviteRecord? {
        // Fetch the room's invites and compare ids in constant time.
        try await tx.rows("SELECT * FROM invites WHERE room = \(room)").map(invite(row:))
            .first { constantTimeEquals($0.inviteID, inviteID) }
    }

    static func invite(row: PostgresRandomAccessRow) throws -> InviteRecord {
        guard let state = InviteState(rawValue: try row["state"].decode(String.self)) else {
            throw StoreError("unknown invite state in the database")
        }
        return InviteRecord(room: try row["room"].decode(String.self), inviteID: try bytes(row["invite_id"]) ?? [],
                            expiresAt: try row["expires_at"].decode(Int64.self), state: state,
                            joiner: try row["joiner"].decode(String?.self), joiningKey: try bytes(row["joining_key"]),
                            response: try bytes(row["response"]), confirmation: try bytes(row["confirmation"]),
                            responseEpoch: try row["response_epoch"].decode(Int?.self))
    }

    static func message(row: PostgresRandomAccessRow) throws -> MessageRecord {
        MessageRecord(room: try row["room"].decode(String.self), seq: try row["seq"].decode(Int.self),
                      kind: try row["kind"].decode(String.self), sender: try row["sender"].decode(String.self),
                      epoch: try row["epoch"].decode(Int.self), at: try row["at"].decode(Int64.self),
                      payload: try bytes(row["payload"]), messageID: try bytes(row["message_id"]))
    }

    static func bytes(_ cell: PostgresCell) throws -> [UInt8]? {
        try cell.decode(ByteBuffer?.self).map { Array($0.readableBytesView) }
    }

    /// Byte strings are bound as `bytea` (a `[UInt8]` would be bound as an array).
    static func bytea(_ bytes: [UInt8]?) -> ByteBuffer? { bytes.map { ByteBuffer(bytes: $0) } }

    static func keys(_ tx: Transaction, room: String) async throws -> [String] {
        try await tx.rows("SELECT key FROM members WHERE room = \(room) ORDER BY ordinal").map { try $0[0].decode(String.self) }
    }

    /// Rooms and unexpired joins of a key (an expired join no longer holds a place).
    static func roomCount(_ tx: Transaction, key: String, now: Int64) async throws -> Int {
        try await tx.int("""
            SELECT (SELECT COUNT(*) FROM members WHERE key = \(key))
                 + (SELECT COUNT(*) FROM invites WHERE joiner = \(key) AND expires_at > \(now))
            """) ?? 0
    }

    /// Serializes, across nodes, the requests that add to a key's rooms, so that two of them
    /// cannot both pass `maxRoomsPerKey` on counts that miss each other.
    /// Whether a member joined the room with this invite (and it has not expired since).
    static func wasUsed(_ tx: Transaction, room: String, inviteID: [UInt8]) async throws -> Bool {
        try await !tx.rows("SELECT 1 FROM used_invites WHERE room = \(room) AND invite_id = \(bytea(inviteID))").isEmpty
    }

    static func lockKey(_ tx: Transaction, _ key: String) async throws {
        try await tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(\(key), 0))")
    }

    /// The bytes of Hush's tables (with their indexes and TOAST) on disk; 0 without a server
    /// bound, which is then the only reader.
    static func databaseBytes(_ tx: Transaction, limits: Limits) async throws -> Int {
        guard limits.maxStorageBytes != nil else { return 0 }
        return try await tx.int("""
            SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c
            WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
              AND c.relname IN (\(unescaped: PostgresSchema.storedTables))
            """) ?? 0
    }

    static func updateInvite(_ tx: Transaction, _ invite: InviteRecord) async throws {
        try await tx.execute("""
            UPDATE invites SET state = \(invite.state.rawValue), joiner = \(invite.joiner),
                joining_key = \(bytea(invite.joiningKey)), response = \(bytea(invite.response)),
                confirmation = \(bytea(invite.confirmation)), response_epoch = \(invite.responseEpoch)
            WHERE room = \(invite.room) AND invite_id = \(bytea(invite.inviteID))
            """)
    }

    /// Writes back a room as a rule returned it.
    static func update(_ tx: Transaction, _ room: RoomRecord) async throws {
        try await tx.execute("""
            UPDATE rooms SET epoch = \(room.epoch), last_seq = \(room.lastSeq), last_rotation_seq = \(room.lastRotationSeq),
                since_rotation = \(room.sinceRotation), wrap_required = \(room.wrapRequired),
                stored_bytes = \(room.storedBytes), expired_through = \(room.expiredThrough)
            WHERE id = \(room.id)
            """)
    }

    static func insert(_ tx: Transaction, _ message: MessageRecord) async throws {
        try await tx.execute("""
            INSERT INTO messages (room, seq, kind, sender, epoch, at, payload, message_id)
            VALUES (\(message.room), \(message.seq), \(message.kind), \(message.sender), \(message.epoch), \(message.at),
                    \(bytea(message.payload)), \(bytea(message.messageID)))
            """)
    }

    // MARK: Store

    public func isRetired(_ key: String) async throws -> Bool {
        try await read { tx in try await !tx.rows("SELECT 1 FROM retired WHERE key = \(key)").isEmpty }
    }

    public func createRoom(id: String, owner: String, rotateEvery: Int, now: Int64, limits: Limits) async throws -> RoomRecord {
        try await write(room: nil, key: owner) { tx in
            try await Self.lockKey(tx, owner)
            guard try await Self.roomCount(tx, key: owner, now: now) < limits.maxRoomsPerKey else {
                throw HushError(.limitReached, "this key is in too many rooms")
            }
            try StorageRules.checkNewRoom(databaseBytes: try await Self.databaseBytes(tx, limits: limits), limits: limits)
            let room = RoomRecord(id: id, owner: owner, epoch: 0, lastSeq: 0, lastRotationSeq: 0, sinceRotation: 0,
                                  rotateEvery: rotateEvery, wrapRequired: false, storedBytes: 0, expiredThrough: 0)
            try await tx.execute("""
                INSERT INTO rooms (id, owner, epoch, last_seq, last_rotation_seq, since_rotation, rotate_every, wrap_required)
                VALUES (\(id), \(owner), 0, 0, 0, 0, \(rotateEvery), FALSE)
                """)
            try await tx.execute("""
                INSERT INTO members (room, key, role, signature, floor, delivered) VALUES (\(id), \(owner), 'owner', '', 0, 0)
                """)
            return room
        }
    }

    public func room(_ id: String) async throws -> RoomRecord? {
        try await read { tx in try await tx.rows("SELECT \(unescaped: Self.roomColumns) FROM rooms WHERE id = \(id)").first.map(Self.room(row:)) }
    }

    public func rooms(of key: String) async throws -> [(RoomRecord, MemberRecord)] {
        let rows = try await read { tx in
            try await tx.rows("""
                SELECT r.id, r.owner, r.epoch, r.last_seq, r.last_rotation_seq, r.since_rotation, r.rotate_every,
                       r.wrap_required, r.stored_bytes, r.expired_through,
                       m.room, m.key, m.role, m.signature, m.floor, m.delivered
                FROM members m JOIN rooms r ON r.id = m.room WHERE m.key = \(key) ORDER BY m.ordinal
                """).map { row in (try Self.room(row: row), try Self.member(row: row)) }
        }
        return rows
    }

    public func members(of room: String) async throws -> [MemberRecord] {
        try await read { tx in
            try await tx.rows("SELECT \(unescaped: Self.memberColumns) FROM members WHERE room = \(room) ORDER BY ordinal")
                .map(Self.member(row:))
        }
    }

    public func joins(of key: String, now: Int64) async throws -> [InviteRecord] {
        try await read { tx in
            try await tx.rows("SELECT * FROM invites WHERE joiner = \(key) AND expires_at > \(now)").map(Self.invite(row:))
        }
    }

    public func pendingJoins(room: String, now: Int64) async throws -> [InviteRecord] {
        try await read { tx in
            try await tx.rows("SELECT * FROM invites WHERE room = \(room) AND state != 'open' AND expires_at > \(now)")
                .map(Self.invite(row:))
        }
    }

    public func invites(room: String, by key: String, now: Int64) async throws -> [InviteRecord] {
        try await read { tx in
            let room = try RoomRules.requireRoom(try await tx.rows("SELECT \(unescaped: Self.roomColumns) FROM rooms WHERE id = \(room)")
                .first.map(Self.room(row:)))
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .owner)
            return try await tx.rows("SELECT * FROM invites WHERE room = \(room.id) AND expires_at > \(now) ORDER BY expires_at")
                .map(Self.invite(row:))
        }
    }

    public func revokeInvite(room: String, inviteID: [UInt8], by key: String,
                             announce: Announcement<InviteRecord>) async throws -> InviteRecord {
        try await announcing(announce, room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .owner)
            guard let invite = try await Self.invite(tx, room: room.id, inviteID: inviteID) else {
                throw HushError(.unknownInvite, "no such invite in this room")
            }
            try await tx.execute("DELETE FROM invites WHERE room = \(room.id) AND invite_id = \(Self.bytea(invite.inviteID))")
            return (invite, room.id)
        }
    }

    public func addInvite(room: String, by key: String, inviteID: [UInt8], expiresAt: Int64, now: Int64, limits: Limits) async throws {
        try await write(room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .owner)
            let open = try await tx.int("""
                SELECT COUNT(*) FROM invites WHERE room = \(room.id) AND state = 'open' AND expires_at > \(now)
                """) ?? 0
            try RoomRules.checkNewInvite(expiresAt: expiresAt, now: now, openInvites: open, limits: limits)
            guard try await Self.invite(tx, room: room.id, inviteID: inviteID) == nil,
                  try await !Self.wasUsed(tx, room: room.id, inviteID: inviteID) else {
                throw HushError(.inviteUsed, "this invite id is already registered")
            }
            // Expired invites, and the joins through them, are over: make room for new ones.
            try await tx.execute("DELETE FROM invites WHERE room = \(room.id) AND expires_at <= \(now)")
            try await tx.execute("DELETE FROM used_invites WHERE room = \(room.id) AND expires_at <= \(now)")
            try await tx.execute("""
                INSERT INTO invites (room, invite_id, expires_at, state) VALUES (\(room.id), \(Self.bytea(inviteID)), \(expiresAt), 'open')
                """)
        }
    }

    public func requestJoin(room: String, inviteID: [UInt8], joiner: String, joiningKey: [UInt8], now: Int64,
                            limits: Limits, announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await announcing(announce, room: room, key: joiner) { tx in
            let room = try await Self.lockRoom(tx, room)
            try await Self.lockKey(tx, joiner)
            let pending = try await tx.int("""
                SELECT COUNT(*) FROM invites WHERE room = \(room.id) AND state != 'open' AND expires_at > \(now)
                """) ?? 0
            let invite = try RoomRules.join(invite: try await Self.invite(tx, room: room.id, inviteID: inviteID),
                                            inviteWasUsed: try await Self.wasUsed(tx, room: room.id, inviteID: inviteID),
                                            joiner: joiner, joiningKey: joiningKey,
                                            isMember: try await Self.member(tx, room: room.id, key: joiner) != nil,
                                            roomsOfJoiner: try await Self.roomCount(tx, key: joiner, now: now),
                                            pendingJoins: pending, now: now, limits: limits)
            try await Self.updateInvite(tx, invite)
            return (JoinOutcome(room: room, invite: invite), room.id)
        }
    }

    public func respondJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                            announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await announcing(announce, room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .owner)
            let invite = try RoomRules.respond(room: room, invite: try await Self.invite(tx, room: room.id, inviteID: inviteID),
                                               sealed: sealed, now: now)
            try await Self.updateInvite(tx, invite)
            return (JoinOutcome(room: room, invite: invite), room.id)
        }
    }

    public func confirmJoin(room: String, inviteID: [UInt8], by key: String, sealed: [UInt8], now: Int64,
                            announce: Announcement<JoinOutcome>) async throws -> JoinOutcome {
        try await announcing(announce, room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            let invite = try RoomRules.confirm(invite: try await Self.invite(tx, room: room.id, inviteID: inviteID), key: key,
                                               sealed: sealed, now: now)
            try await Self.updateInvite(tx, invite)
            return (JoinOutcome(room: room, invite: invite), room.id)
        }
    }

    public func addMember(room: String, inviteID: [UInt8], key: String, signature: [UInt8], by owner: String, now: Int64,
                          limits: Limits, announce: Announcement<[String]>) async throws -> [String] {
        try await announcing(announce, room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: owner), as: .owner)
            let invite = try await Self.invite(tx, room: room.id, inviteID: inviteID)
            let member = try RoomRules.admit(room: room, invite: invite,
                                             key: key, signature: signature,
                                             memberCount: try await Self.keys(tx, room: room.id).count, now: now, limits: limits)
            try await tx.execute("""
                INSERT INTO members (room, key, role, signature, floor, delivered)
                VALUES (\(member.room), \(member.key), \(member.role.rawValue), \(Self.bytea(member.signature)),
                        \(member.floor), \(member.delivered))
                """)
            try await tx.execute("DELETE FROM invites WHERE room = \(room.id) AND invite_id = \(Self.bytea(inviteID))")
            try await tx.execute("""
                INSERT INTO used_invites (room, invite_id, expires_at) VALUES (\(room.id), \(Self.bytea(inviteID)), \(invite?.expiresAt ?? now))
                ON CONFLICT (room, invite_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
                """)
            return (try await Self.keys(tx, room: room.id), room.id)
        }
    }

    /// A write of `room` with pushes: they are recorded as the room's next event in the
    /// write's own savepoint (for the other nodes), and handed to this node's connections once
    /// its batch is committed, in the room's event order (`PostgresFanOut`).
    /// `afterRecording` runs in the same savepoint once the event is recorded on the room's row.
    private func announcing<Outcome: Sendable>(_ announce: Announcement<Outcome>, room: String, key: String? = nil,
                                               _ body: @escaping @Sendable (Transaction) async throws -> (outcome: Outcome, room: String),
                                               afterRecording: (@Sendable (Transaction, _ room: String) async throws -> Void)? = nil)
        async throws -> Outcome {
        let recorded = NIOLockedValueBox<[PostgresFanOut.Event]>([])
        let fanOut = fanOut
        do {
            typealias Recorded = (outcome: Outcome, event: PostgresFanOut.Event?, effects: [ConnectionEffect])
            let deliver: @Sendable (Recorded) -> Void = { recorded in
                guard let event = recorded.event else { return }
                fanOut.deliver(event, effects: recorded.effects, requester: announce.requester, hub: announce.hub)
            }
            let (outcome, event, _) = try await write(room: room, key: key, afterCommit: deliver) { tx -> Recorded in
                let (outcome, room) = try await body(tx)
                let effects = announce.effects(outcome)
                var event: PostgresFanOut.Event?
                if !effects.isEmpty {
                    let recording = try await fanOut.record(tx.connection, room: room, effects: effects)
                    recorded.withLockedValue { $0.append(recording) }
                    event = recording
                }
                try await afterRecording?(tx, room)
                return (outcome, event, effects)
            }
            // Attempts of a retried batch, or a savepoint rolled back, recorded nothing.
            for attempt in recorded.withLockedValue({ $0 }) where attempt != event { fanOut.forget(attempt) }
            return outcome
        } catch {
            for attempt in recorded.withLockedValue({ $0 }) { fanOut.forget(attempt) }
            throw error
        }
    }

    public func append(room: String, from key: String, payload: [UInt8], epoch: Int, messageID: [UInt8], files: [[UInt8]],
                       now: Int64, limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome {
        try await announcing(announce, room: room) { tx in
            let current = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: current.id, key: key), as: .member)
            if let original = try await tx.rows("""
                SELECT * FROM messages WHERE room = \(current.id) AND sender = \(key) AND message_id = \(Self.bytea(messageID))
                """).first {
                return (AppendOutcome(message: try Self.message(row: original), room: current, recipients: [], wraps: [:],
                                      isRepeat: true), current.id)
            }
            let (room, message) = try RoomRules.send(room: current, from: key, epoch: epoch, payload: payload,
                                                     messageID: messageID, now: now,
                                                     databaseBytes: try await Self.databaseBytes(tx, limits: limits),
                                                     limits: limits)
            var stored: [FileRecord?] = []
            for id in files { stored.append(try await Self.file(tx, room: room.id, id: id)) }
            let attached = try RoomRules.attach(stored, by: key, seq: message.seq)
            try await Self.insert(tx, message)
            for file in attached {
                try await tx.execute("UPDATE files SET seq = \(file.seq) WHERE room = \(room.id) AND id = \(Self.bytea(file.id))")
            }
            try await Self.update(tx, room)
            return (AppendOutcome(message: message, room: room, recipients: try await Self.keys(tx, room: room.id), wraps: [:]), room.id)
        }
    }

    public func rotate(room: String, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?, now: Int64,
                       limits: Limits, announce: Announcement<AppendOutcome>) async throws -> AppendOutcome {
        try await announcing(announce, room: room) { tx in
            let current = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: current.id, key: key), as: .owner)
            let keys = try await Self.keys(tx, room: current.id)
            let (room, message) = try RoomRules.rotate(room: current, by: key, epoch: epoch, payload: payload, wraps: wraps,
                                                       roomKeys: Set(keys), now: now,
                                                       databaseBytes: try await Self.databaseBytes(tx, limits: limits),
                                                       limits: limits)
            try await Self.insert(tx, message)
            var wrapMap: [String: [UInt8]] = [:]
            for wrap in wraps ?? [] {
                wrapMap[wrap.key] = wrap.wrap.bytes
                try await tx.execute("""
                    INSERT INTO wraps (room, seq, key, wrap) VALUES (\(room.id), \(message.seq), \(wrap.key), \(Self.bytea(wrap.wrap.bytes)))
                    """)
            }
            try await Self.update(tx, room)
            return (AppendOutcome(message: message, room: room, recipients: keys, wraps: wrapMap), room.id)
        }
    }

    public func history(room: String, for key: String, after: Int?, limit: Int?, limits: Limits) async throws -> HistoryPage {
        try await writeAlone { tx in
            // A share lock: retention cannot move `expiredThrough` between reading it and the page.
            let room = try RoomRules.requireRoom(try await tx.rows("""
                SELECT \(unescaped: Self.roomColumns) FROM rooms WHERE id = \(room) FOR SHARE
                """).first.map(Self.room(row:)))
            let member = try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .member)
            let page = try RoomRules.historyPage(after: after, limit: limit, floor: member.floor, limits: limits)
            let rows = try await tx.rows("""
                SELECT m.*, w.wrap AS own_wrap FROM messages m
                LEFT JOIN wraps w ON w.room = m.room AND w.seq = m.seq AND w.key = \(key)
                WHERE m.room = \(room.id) AND m.seq > \(page.after) ORDER BY m.seq LIMIT \(page.limit + 1)
                """)
            // Cut the page at the byte budget too (never below one message): `more` tells the
            // client to ask again from the last sequence number it got.
            var messages: [Envelope] = []
            var bytes = 0
            for row in rows.prefix(page.limit) {
                let envelope = try Self.message(row: row).envelope(wrap: try Self.bytes(row["own_wrap"]))
                bytes += (envelope.payload?.bytes.count ?? 0) + (envelope.wrap?.bytes.count ?? 0)
                if !messages.isEmpty && bytes > limits.maxHistoryPageBytes { break }
                messages.append(envelope)
            }
            let more = rows.count > messages.count
            if let last = messages.last?.seq, last > member.delivered {
                try await tx.execute("""
                    UPDATE members SET delivered = GREATEST(delivered, \(last)) WHERE room = \(room.id) AND key = \(key)
                    """)
            }
            return HistoryPage(messages: messages, more: more, expiredThrough: room.expiredThrough)
        }
    }

    public func saveDelivered(room: String, key: String, seq: Int) async throws {
        try await writeAlone { tx in
            try await tx.execute("UPDATE members SET delivered = GREATEST(delivered, \(seq)) WHERE room = \(room) AND key = \(key)")
        }
    }

    public func formerMembers(of room: String, after floor: Int, limit: Int) async throws -> [DepartedRecord] {
        try await read { tx in
            try await tx.rows("""
                SELECT * FROM departed WHERE room = \(room) AND until > \(floor) ORDER BY until DESC, ordinal DESC LIMIT \(limit)
                """).compactMap { row in
                guard let departure = Departure(rawValue: try row["departure"].decode(String.self)) else { return nil }
                return DepartedRecord(room: try row["room"].decode(String.self), key: try row["key"].decode(String.self),
                                      signature: try Self.bytes(row["signature"]) ?? [], until: try row["until"].decode(Int.self),
                                      departure: departure, departureSignature: try Self.bytes(row["departure_signature"]) ?? [])
            }
        }
    }

    public func removeMember(room: String, key: String, signature: [UInt8], by owner: String,
                             announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome {
        try await announcing(announce, room: room) { tx in
            let current = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: current.id, key: owner), as: .owner)
            let (room, departed) = try RoomRules.depart(room: current, member: try await Self.member(tx, room: current.id, key: key),
                                                        departure: .removed, signature: signature)
            try await Self.retire(tx, room: room, departed: departed)
            return (DepartureOutcome(remaining: try await Self.keys(tx, room: room.id), until: departed.until), room.id)
        }
    }

    public func leave(room: String, key: String, signature: [UInt8],
                      announce: Announcement<DepartureOutcome>) async throws -> DepartureOutcome {
        try await announcing(announce, room: room) { tx in
            let current = try await Self.lockRoom(tx, room)
            let member = try RoomRules.authorize(try await Self.member(tx, room: current.id, key: key), as: .member)
            let (room, departed) = try RoomRules.depart(room: current, member: member, departure: .left, signature: signature)
            try await Self.retire(tx, room: room, departed: departed)
            return (DepartureOutcome(remaining: try await Self.keys(tx, room: room.id), until: departed.until), room.id)
        }
    }

    /// Writes a departure: the membership goes, the departed record stays (for `formerMembers`),
    /// the key is retired, and the room is as `RoomRules.depart` left it.
    static func retire(_ tx: Transaction, room: RoomRecord, departed: DepartedRecord) async throws {
        try await tx.execute("DELETE FROM members WHERE room = \(room.id) AND key = \(departed.key)")
        // A key that departs again counts as the newest departure, as SQLite's INSERT OR REPLACE does.
        try await tx.execute("""
            INSERT INTO departed (room, key, signature, until, departure, departure_signature)
            VALUES (\(room.id), \(departed.key), \(bytea(departed.signature)), \(departed.until), \(departed.departure.rawValue),
                    \(bytea(departed.departureSignature)))
            ON CONFLICT (room, key) DO UPDATE SET signature = EXCLUDED.signature, until = EXCLUDED.until,
                departure = EXCLUDED.departure, departure_signature = EXCLUDED.departure_signature,
                ordinal = nextval('departed_order')
            """)
        try await update(tx, room)
        try await tx.execute("INSERT INTO retired (key) VALUES (\(departed.key)) ON CONFLICT DO NOTHING")
    }

    // MARK: files

    static func file(_ tx: Transaction, room: String, id: [UInt8]) async throws -> FileRecord? {
        try await tx.rows("""
            SELECT room, id, uploader, chunks, stored_chunks, seq, created_at FROM files WHERE room = \(room) AND id = \(bytea(id))
            """).first.map { row in
            FileRecord(room: try row["room"].decode(String.self), id: try bytes(row["id"]) ?? [],
                       uploader: try row["uploader"].decode(String.self), chunks: try row["chunks"].decode(Int.self),
                       storedChunks: try row["stored_chunks"].decode(Int.self), seq: try row["seq"].decode(Int?.self),
                       createdAt: try row["created_at"].decode(Int64.self))
        }
    }

    static func chunk(_ tx: Transaction, room: String, file: [UInt8], index: Int) async throws -> [UInt8]? {
        try await tx.rows("SELECT data FROM file_chunks WHERE room = \(room) AND file = \(bytea(file)) AND idx = \(index)")
            .first.map { try bytes($0["data"]) ?? [] }
    }

    public func putChunk(room: String, file id: [UInt8], by key: String, chunks: Int, index: Int, data: [UInt8], now: Int64,
                         limits: Limits) async throws -> FileRecord {
        try await write(room: room) { tx in
            // The room's row lock serializes the counts and the quota across nodes.
            let current = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: current.id, key: key), as: .member)
            let pending = try await tx.int("""
                SELECT COUNT(*) FROM files WHERE room = \(current.id) AND uploader = \(key) AND seq IS NULL
                """) ?? 0
            let inRoom = try await tx.int("SELECT COUNT(*) FROM files WHERE room = \(current.id)") ?? 0
            let write = try RoomRules.putChunk(room: current, file: try await Self.file(tx, room: current.id, id: id), id: id,
                                               by: key, chunks: chunks, index: index, data: data,
                                               stored: try await Self.chunk(tx, room: current.id, file: id, index: index),
                                               pendingOfKey: pending, filesInRoom: inRoom, now: now,
                                               databaseBytes: try await Self.databaseBytes(tx, limits: limits), limits: limits)
            guard case .store(let room, let file) = write else { return write.file }
            try await tx.execute("""
                INSERT INTO files (room, id, uploader, chunks, stored_chunks, seq, created_at)
                VALUES (\(room.id), \(Self.bytea(file.id)), \(file.uploader), \(file.chunks), \(file.storedChunks), \(file.seq), \(file.createdAt))
                ON CONFLICT (room, id) DO UPDATE SET stored_chunks = EXCLUDED.stored_chunks
                """)
            try await tx.execute("""
                INSERT INTO file_chunks (room, file, idx, data) VALUES (\(room.id), \(Self.bytea(file.id)), \(index), \(Self.bytea(data)))
                ON CONFLICT (room, file, idx) DO UPDATE SET data = EXCLUDED.data
                """)
            try await Self.update(tx, room)
            return file
        }
    }

    public func fileChunk(room: String, file id: [UInt8], index: Int, for key: String) async throws -> (chunks: Int, data: [UInt8]) {
        try await read { tx in
            let room = try RoomRules.requireRoom(try await tx.rows("SELECT \(unescaped: Self.roomColumns) FROM rooms WHERE id = \(room)")
                .first.map(Self.room(row:)))
            let member = try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .member)
            let file = try RoomRules.readableFile(try await Self.file(tx, room: room.id, id: id), room: room, member: member)
            guard let data = try await Self.chunk(tx, room: room.id, file: id, index: index) else { throw RoomRules.unknownFile }
            return (file.chunks, data)
        }
    }

    public func expirePendingFiles(before: Int64) async throws -> Int {
        try await writeAlone { tx in
            // The rooms first, in creation order as batches and retention lock them (no deadlock),
            // then their pending files as they are now (none attached meanwhile).
            let rooms = try await tx.rows("""
                SELECT id FROM rooms WHERE id IN (SELECT room FROM files WHERE seq IS NULL AND created_at < \(before) LIMIT 1000)
                ORDER BY ordinal FOR UPDATE
                """).map { try $0["id"].decode(String.self) }
            let pending = try await tx.rows("""
                SELECT room, id FROM files WHERE room = ANY(\(rooms)) AND seq IS NULL AND created_at < \(before) LIMIT 1000
                """)
            for row in pending {
                try await Self.deleteFile(tx, room: try row["room"].decode(String.self), id: try Self.bytes(row["id"]) ?? [])
            }
            return pending.count
        }
    }

    /// Deletes one file (its chunks go with it: ON DELETE CASCADE) and gives its bytes back to
    /// its room's quota.
    static func deleteFile(_ tx: Transaction, room: String, id: [UInt8]) async throws {
        let freed = try await tx.int("""
            SELECT (COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * \(StorageRules.recordOverhead))::BIGINT
            FROM file_chunks WHERE room = \(room) AND file = \(bytea(id))
            """) ?? 0
        try await tx.execute("DELETE FROM files WHERE room = \(room) AND id = \(bytea(id))")
        try await tx.execute("UPDATE rooms SET stored_bytes = stored_bytes - \(freed) WHERE id = \(room)")
    }

    public func deleteRoom(room: String, by key: String, announce: Announcement<[String]>) async throws -> [String] {
        // The event is numbered on the room's row, so the row goes after it is recorded.
        try await announcing(announce, room: room) { tx in
            let room = try await Self.lockRoom(tx, room)
            try RoomRules.authorize(try await Self.member(tx, room: room.id, key: key), as: .owner)
            return (try await Self.keys(tx, room: room.id), room.id)
        } afterRecording: { tx, room in
            // The room's other rows go with it (ON DELETE CASCADE).
            try await tx.execute("DELETE FROM rooms WHERE id = \(room)")
        }
    }

    public func expire(now: Int64, retention: Retention, afterRoom: Int64) async throws -> ExpiryPass {
        guard retention.isEnabled else { return ExpiryPass(deleted: 0, nextRoom: nil) }
        let batch = max(1, retention.batch)
        return try await writeAlone { tx in
            // Each room looked at costs one unit of the batch, each record read one more: a pass
            // stays bounded however many rooms or records there are. The rooms are locked in
            // `ordinal` order, which no other request holds more than one of: no deadlock.
            let rooms = try await tx.rows("""
                SELECT ordinal, \(unescaped: Self.roomColumns) FROM rooms WHERE ordinal > \(afterRoom)
                ORDER BY ordinal LIMIT \(batch) FOR UPDATE
                """)
            var budget = batch
            var deleted = 0
            for row in rooms {
                let ordinal = try row["ordinal"].decode(Int64.self)
                budget -= 1
                let room = try await Self.expire(tx, room: Self.room(row: row), now: now, retention: retention, budget: budget)
                deleted += room.deleted
                budget -= room.read
                // A room cut short by the budget comes first in the next pass, unless it had
                // nothing to delete (then it would only be read again).
                if budget <= 0 { return ExpiryPass(deleted: deleted, nextRoom: room.deleted > 0 ? ordinal - 1 : ordinal) }
            }
            return ExpiryPass(deleted: deleted, nextRoom: rooms.count == batch ? try rooms.last?["ordinal"].decode(Int64.self) : nil)
        }
    }

    /// One room's part of a retention pass, reading at most `budget` records: how many it read
    /// and how many it deleted.
    static func expire(_ tx: Transaction, room: RoomRecord, now: Int64, retention: Retention,
                       budget: Int) async throws -> (read: Int, deleted: Int) {
        func entries(below: Bool, limit: Int) async throws -> [StoredEntry] {
            guard limit > 0 else { return [] }
            let comparison = below ? "<=" : ">"
            return try await tx.rows("""
                SELECT seq, kind, at FROM messages WHERE room = \(room.id) AND seq \(unescaped: comparison) \(room.expiredThrough)
                ORDER BY seq LIMIT \(limit)
                """).map { StoredEntry(seq: try $0["seq"].decode(Int.self), kind: try $0["kind"].decode(String.self),
                                       at: try $0["at"].decode(Int64.self)) }
        }
        // What may expire first, then the rotations kept below the floor: however many of those
        // a long-absent key holds back, the floor still moves.
        let oldest = try await entries(below: false, limit: budget)
        let kept = try await entries(below: true, limit: budget - oldest.count)
        let minDelivered = try await tx.int("SELECT MIN(delivered) FROM members WHERE room = \(room.id)") ?? 0
        let plan = StorageRules.expiry(expiredThrough: room.expiredThrough, lastSeq: room.lastSeq, minDelivered: minDelivered,
                                       kept: kept, oldest: oldest, now: now, retention: retention)
        let read = oldest.count + kept.count
        guard plan.expiredThrough != room.expiredThrough || !plan.deletions.isEmpty else { return (read, 0) }
        let overhead = StorageRules.recordOverhead
        let freed = try await tx.int("""
            SELECT (COALESCE(SUM(COALESCE(LENGTH(m.payload), 0) + \(overhead)), 0)
                  + (SELECT COALESCE(SUM(LENGTH(w.wrap) + \(overhead)), 0) FROM wraps w
                     WHERE w.room = \(room.id) AND w.seq = ANY(\(plan.deletions))))::BIGINT
            FROM messages m WHERE m.room = \(room.id) AND m.seq = ANY(\(plan.deletions))
            """) ?? 0
        // A file goes with the message that carries it.
        for row in try await tx.rows("SELECT id FROM files WHERE room = \(room.id) AND seq = ANY(\(plan.deletions))") {
            try await deleteFile(tx, room: room.id, id: try bytes(row["id"]) ?? [])
        }
        // Their wraps go with them (ON DELETE CASCADE).
        try await tx.execute("DELETE FROM messages WHERE room = \(room.id) AND seq = ANY(\(plan.deletions))")
        try await tx.execute("""
            UPDATE rooms SET expired_through = \(plan.expiredThrough), stored_bytes = stored_bytes - \(freed) WHERE id = \(room.id)
            """)
        // A departed key whose messages have all expired has nothing left to verify.
        try await tx.execute("DELETE FROM departed WHERE room = \(room.id) AND until <= \(plan.expiredThrough)")
        return (read, plan.deletions.count)
    }
}

/// PostgreSQL's batches (group commit): one transaction on a pooled connection, each write in
/// its own savepoint. Before the writes run, the batch locks every room row they lock, in
/// creation order, then every key's advisory lock, in key order: every node's batches, and
/// retention, take their locks in this one order, so two batches never wait on each other in
/// a cycle, and two writes of one room in a batch simply run one after the other. A
/// serialization failure or deadlock runs the whole batch again (`maxAttempts`).
struct PostgresBatches: BatchCommitting {
    struct Write: Sendable {
        /// The room whose row the write locks, and the key it locks, if any.
        let room: String?
        let key: String?
        /// Runs the write; returns its error, its changes then rolled back.
        let run: @Sendable (PostgresStore.Transaction) async -> (any Error)?
    }

    /// A lone write's refusal: its transaction is rolled back, nothing else to keep.
    private struct Refused: Error {}

    let client: PostgresClient
    let logger: Logger

    /// The room's row: two lanes of one node never wait for each other.
    static func held(by write: Write) -> String? { write.room }

    func commit(_ writes: [Write]) async -> (any Error)? {
        do {
            try await PostgresStore.transaction(client, logger, "BEGIN") { tx in
                // A lone write is today's transaction: it locks its one room and key itself.
                guard writes.count > 1 else {
                    guard let write = writes.first, let error = await write.run(tx) else { return }
                    try Self.rethrowIfTransient(error)
                    throw Refused()
                }
                // A name PostgreSQL cannot take (a NUL byte: the relay passes names on as
                // given) would fail the whole batch here: its write fails alone, in its savepoint.
                let rooms = Array(Set(writes.compactMap(\.room).filter(Self.isText)))
                try await tx.execute("SELECT 1 FROM rooms WHERE id = ANY(\(rooms)) ORDER BY ordinal FOR UPDATE")
                for key in Set(writes.compactMap(\.key).filter(Self.isText)).sorted() { try await PostgresStore.lockKey(tx, key) }
                // Savepoints are not released: each RELEASE is a round trip, and the batch's
                // bound keeps their nesting shallow.
                for write in writes {
                    try await tx.execute("SAVEPOINT one_write")
                    guard let error = await write.run(tx) else { continue }
                    try Self.rethrowIfTransient(error)
                    try await tx.execute("ROLLBACK TO SAVEPOINT one_write")
                }
            }
            return nil
        } catch is Refused {
            return nil
        } catch {
            return error
        }
    }

    /// Whether PostgreSQL's `text` can hold the string (anything but NUL).
    static func isText(_ string: String) -> Bool { !string.utf8.contains(0) }

    /// A serialization failure or deadlock fails the batch, which is then run again.
    private static func rethrowIfTransient(_ error: any Error) throws {
        if let error = error as? PSQLError, PostgresStore.isTransient(error) { throw error }
    }
}
