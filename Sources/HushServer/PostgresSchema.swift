import Logging
import PostgresNIO

/// The PostgreSQL schema: the same tables and meaning as SQLite's (`SQLiteStore.migrator`), plus
/// an `ordinal` where SQLite relies on `rowid` order (members in joining order, departures
/// newest first, retention's walk over the rooms).
enum PostgresSchema {
    /// Applied in order, each once; a new version is appended, never edited.
    static let migrations: [(version: Int, statements: [String])] = [
        (1, [
            """
            CREATE TABLE rooms (
            id TEXT PRIMARY KEY, ordinal BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, owner TEXT NOT NULL,
            epoch BIGINT NOT NULL, last_seq BIGINT NOT NULL, last_rotation_seq BIGINT NOT NULL,
            since_rotation BIGINT NOT NULL, rotate_every BIGINT NOT NULL, wrap_required BOOLEAN NOT NULL,
            stored_bytes BIGINT NOT NULL DEFAULT 0, expired_through BIGINT NOT NULL DEFAULT 0)
            """,
            """
            CREATE TABLE members (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, key TEXT NOT NULL,
            ordinal BIGINT GENERATED ALWAYS AS IDENTITY, role TEXT NOT NULL, signature BYTEA NOT NULL,
            floor BIGINT NOT NULL, delivered BIGINT NOT NULL, PRIMARY KEY (room, key))
            """,
            """
            CREATE INDEX members_by_key ON members(key)
            """,
            """
            CREATE INDEX members_in_order ON members(room, ordinal)
            """,
            """
            CREATE TABLE invites (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, invite_id BYTEA NOT NULL,
            expires_at BIGINT NOT NULL, state TEXT NOT NULL, joiner TEXT, joining_key BYTEA,
            response BYTEA, confirmation BYTEA, response_epoch BIGINT, PRIMARY KEY (room, invite_id))
            """,
            """
            CREATE INDEX invites_by_joiner ON invites(joiner)
            """,
            """
            CREATE TABLE messages (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, seq BIGINT NOT NULL,
            kind TEXT NOT NULL, sender TEXT NOT NULL, epoch BIGINT NOT NULL, at BIGINT NOT NULL,
            payload BYTEA, message_id BYTEA, PRIMARY KEY (room, seq))
            """,
            """
            CREATE UNIQUE INDEX messages_by_id ON messages(room, sender, message_id) WHERE message_id IS NOT NULL
            """,
            """
            CREATE TABLE wraps (
            room TEXT NOT NULL, seq BIGINT NOT NULL, key TEXT NOT NULL, wrap BYTEA NOT NULL,
            PRIMARY KEY (room, seq, key),
            FOREIGN KEY (room, seq) REFERENCES messages(room, seq) ON DELETE CASCADE)
            """,
            """
            CREATE TABLE retired (key TEXT PRIMARY KEY)
            """,
            """
            CREATE SEQUENCE departed_order
            """,
            """
            CREATE TABLE departed (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, key TEXT NOT NULL,
            ordinal BIGINT NOT NULL DEFAULT nextval('departed_order'), signature BYTEA NOT NULL,
            until BIGINT NOT NULL, departure TEXT NOT NULL, departure_signature BYTEA NOT NULL,
            PRIMARY KEY (room, key))
            """,
            """
            CREATE INDEX departed_by_until ON departed(room, until)
            """,
        ]),
        (2, [
            // Pushes across nodes (`PostgresFanOut`): each room's events, numbered under its row
            // lock, kept a while for a node that has to catch up. No foreign key: a deleted
            // room's last event (`room_deleted`) outlives the room.
            """
            ALTER TABLE rooms ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0
            """,
            """
            CREATE TABLE node_events (
            room TEXT NOT NULL, event_seq BIGINT NOT NULL, id TEXT NOT NULL, effects BYTEA NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (room, event_seq))
            """,
            """
            CREATE INDEX node_events_by_time ON node_events(at)
            """,
        ]),
        (3, [
            // An invite a member joined with says so to the next holder (`invite_used`).
            """
            CREATE TABLE used_invites (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, invite_id BYTEA NOT NULL,
            expires_at BIGINT NOT NULL, PRIMARY KEY (room, invite_id))
            """,
        ]),
        (4, [
            // Files (docs/PROTOCOL.md §4.9): sealed chunks, attached to the message that
            // carries them (`seq`), or pending (NULL) until it is sent.
            """
            CREATE TABLE files (
            room TEXT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE, id BYTEA NOT NULL, uploader TEXT NOT NULL,
            chunks INTEGER NOT NULL, stored_chunks INTEGER NOT NULL, seq BIGINT, created_at BIGINT NOT NULL,
            PRIMARY KEY (room, id))
            """,
            """
            CREATE INDEX files_by_seq ON files(room, seq)
            """,
            """
            CREATE INDEX files_pending ON files(created_at) WHERE seq IS NULL
            """,
            """
            CREATE TABLE file_chunks (
            room TEXT NOT NULL, file BYTEA NOT NULL, idx INTEGER NOT NULL, data BYTEA NOT NULL,
            PRIMARY KEY (room, file, idx),
            FOREIGN KEY (room, file) REFERENCES files(room, id) ON DELETE CASCADE)
            """,
        ]),
    ]

    /// The tables whose size counts against `Limits.maxStorageBytes`.
    static let storedTables = "'rooms', 'members', 'invites', 'used_invites', 'messages', 'wraps', 'retired', 'departed', 'files', 'file_chunks'"

    /// Any number, the same on every node: the advisory lock under which migrations run, so that
    /// nodes starting at once apply each migration once, one after the other.
    static let migrationLock: Int64 = 0x4875_7368_4D69_6772  // "HushMigr"

    /// Applies the missing migrations in one transaction under the advisory lock.
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS hush_schema (version BIGINT PRIMARY KEY)", logger: logger)
            var applied = 0
            for try await version in try await connection.query("SELECT COALESCE(MAX(version), 0) FROM hush_schema",
                                                                 logger: logger).decode(Int.self) {
                applied = version
            }
            guard applied <= migrations.count else {
                throw StoreError("the database schema (version \(applied)) is newer than this server knows")
            }
            for migration in migrations where migration.version > applied {
                // One statement per query: the extended protocol takes no more.
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO hush_schema VALUES (\(migration.version))", logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
