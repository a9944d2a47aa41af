import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HushServer
import Logging
import NIOConcurrencyHelpers
import PostgresNIO

/// The store a test server runs on. Suites that test what a store does take every one of
/// `StoreChoice.all` as a test argument.
public enum StoreChoice: String, Sendable, CaseIterable, CustomStringConvertible {
    case sqlite, postgres

    /// SQLite, and PostgreSQL when its server programs are installed (`scripts/setup test`
    /// installs them) or `HUSH_REQUIRE_POSTGRES=1` says their absence is a failure.
    public static var all: [StoreChoice] {
        PostgresCluster.binDirectory != nil || ProcessInfo.processInfo.environment["HUSH_REQUIRE_POSTGRES"] == "1"
            ? [.sqlite, .postgres] : [.sqlite]
    }

    public var description: String { rawValue }
}

/// A throwaway PostgreSQL cluster for this test process: `initdb` in a temporary folder, the
/// server on a free loopback port (as `nobody` when the tests run as root, since PostgreSQL
/// refuses root), stopped when the process exits. Each test gets a database of its own.
public final class PostgresCluster: Sendable {
    public let port: Int
    let folder: URL
    let bin: URL
    private let databases = NIOLockedValueBox(0)

    /// Where `initdb` and `pg_ctl` are: `HUSH_PG_BIN`, the PATH, or Debian's versioned folder.
    static let binDirectory: URL? = {
        let environment = ProcessInfo.processInfo.environment
        var candidates = [environment["HUSH_PG_BIN"]].compactMap { $0 }
        candidates += (environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let debian = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: debian)) ?? []
        candidates += versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "\(debian)/\($0)/bin" }
        return candidates.map { URL(fileURLWithPath: $0) }.first { folder in
            ["initdb", "pg_ctl", "postgres"].allSatisfy {
                FileManager.default.isExecutableFile(atPath: folder.appendingPathComponent($0).path)
            }
        }
    }()

    /// The cluster, started on first use.
    public static func shared() async throws -> PostgresCluster {
        try await starting.value
    }

    private static let starting = Task { try start() }

    /// Stopped at exit (`pg_ctl stop` waits for the server to be gone).
    private static let running = NIOLockedValueBox<PostgresCluster?>(nil)

    private init(port: Int, folder: URL, bin: URL) {
        self.port = port
        self.folder = folder
        self.bin = bin
    }

    static func start() throws -> PostgresCluster {
        guard let bin = binDirectory else {
            throw FixtureError("PostgreSQL's initdb/pg_ctl are not installed: run scripts/setup test")
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("hush-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if getuid() == 0 {
            guard let nobody = getpwnam("nobody") else { throw FixtureError("no user nobody to run PostgreSQL as") }
            try FileManager.default.setAttributes([.ownerAccountID: Int(nobody.pointee.pw_uid),
                                                   .groupOwnerAccountID: Int(nobody.pointee.pw_gid)], ofItemAtPath: folder.path)
        }
        let data = folder.appendingPathComponent("data").path
        try run(bin.appendingPathComponent("initdb"),
                ["-D", data, "-U", "hush", "--auth=trust", "--encoding=UTF8", "--no-sync"])
        // A free port can be taken between the probe and the start: try a few.
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try freePort()
            let options = "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories='\(folder.path)' -c max_connections=300 -c fsync=on"
            do {
                try run(bin.appendingPathComponent("pg_ctl"),
                        ["-D", data, "-l", folder.appendingPathComponent("log").path, "-o", options, "-w", "-t", "60", "start"])
                let cluster = PostgresCluster(port: port, folder: folder, bin: bin)
                running.withLockedValue { $0 = cluster }
                atexit { PostgresCluster.running.withLockedValue { $0?.stop() } }
                return cluster
            } catch {
                lastError = error
            }
        }
        throw lastError ?? FixtureError("PostgreSQL did not start")
    }

    /// `pg_ctl stop`, waiting until the server has exited, then the folder goes.
    func stop() {
        try? Self.run(bin.appendingPathComponent("pg_ctl"),
                      ["-D", folder.appendingPathComponent("data").path, "-m", "fast", "-w", "-t", "60", "stop"])
        try? FileManager.default.removeItem(at: folder)
    }

    /// Runs a PostgreSQL program to its end (as `nobody` under root) and throws on failure.
    /// posix_spawn, not Foundation's Process: the server that `pg_ctl start` leaves running would
    /// inherit the descriptor Process watches for the child's end, and the wait would never end.
    static func run(_ program: URL, _ arguments: [String]) throws {
        let command = (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "nobody", "--"] : []) + [program.path] + arguments
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("hush-pg-output-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: outputFile) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputFile.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The server outlives this call: it must not hold this process's sockets (a test's client
        // connection would never close). glibc ignores a descriptor closed meanwhile.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(name), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        let argv = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, argv, environ)
        guard spawned == 0 else { throw FixtureError("\(program.lastPathComponent) did not start (\(spawned))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        // Exited (low 7 bits 0) with code 0.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
            throw FixtureError("\(program.lastPathComponent) failed (status \(status)): \(text.suffix(2000))")
        }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw FixtureError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    public func location(database: String) -> PostgresLocation {
        PostgresLocation(host: "127.0.0.1", port: port, username: "hush", database: database, tls: .disable)
    }

    /// A new empty database; `dropDatabase` when done.
    public func createDatabase() async throws -> PostgresLocation {
        let name = "hush_test_\(databases.withLockedValue { $0 += 1; return $0 })"
        try await administer("CREATE DATABASE \(name)")
        return location(database: name)
    }

    public func dropDatabase(_ location: PostgresLocation) async throws {
        try await administer("DROP DATABASE IF EXISTS \(location.database) WITH (FORCE)")
    }

    /// Ends every connection to the database, as a restart of the database would: the nodes'
    /// pools and their `LISTEN` connections.
    public func terminateConnections(to location: PostgresLocation) async throws {
        try await administer("""
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(location.database)' AND pid <> pg_backend_pid()
            """)
    }

    /// One statement on a test database, as another process with access to it would.
    public func execute(_ statement: String, in location: PostgresLocation) async throws {
        try await administer(statement, database: location.database)
    }

    /// Holds `FOR UPDATE` on a room's row in a transaction of another session, as another
    /// node's transaction would, until `release()`.
    public func holdRoomLock(_ room: String, in location: PostgresLocation) async throws -> HeldRoomLock {
        let (connection, logger) = try await connect(database: location.database)
        do {
            try await connection.query("BEGIN", logger: logger)
            let locked = try await connection.query("SELECT id FROM rooms WHERE id = \(room) FOR UPDATE", logger: logger).collect()
            guard locked.count == 1 else { throw FixtureError("no room \(room) to lock") }
            return HeldRoomLock(connection: connection, logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// How many sessions of the database wait for a lock now.
    public func sessionsWaitingForALock(in location: PostgresLocation) async throws -> Int {
        try await query("""
            SELECT COUNT(*)::BIGINT FROM pg_stat_activity WHERE datname = \(location.database) AND wait_event_type = 'Lock'
            """, in: location)
    }

    /// How many transactions recorded the room's events after `seq` (`node_events.at` is the
    /// start of the transaction that recorded it).
    public func transactionsOfEvents(room: String, after seq: Int, in location: PostgresLocation) async throws -> Int {
        try await query("SELECT COUNT(DISTINCT at)::BIGINT FROM node_events WHERE room = \(room) AND event_seq > \(seq)",
                        in: location)
    }

    /// A query of one integer on a test database.
    private func query(_ query: PostgresQuery, in location: PostgresLocation) async throws -> Int {
        let (connection, logger) = try await connect(database: location.database)
        do {
            let value = try await connection.query(query, logger: logger).collect().first?.decode(Int.self) ?? 0
            try await connection.close()
            return value
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// One statement on the `postgres` database (CREATE/DROP DATABASE run outside a transaction).
    private func administer(_ statement: String, database: String = "postgres") async throws {
        let (connection, logger) = try await connect(database: database)
        do {
            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }

    private func connect(database: String) async throws -> (PostgresConnection, Logger) {
        let configuration = PostgresConnection.Configuration(host: "127.0.0.1", port: port, username: "hush",
                                                             password: nil, database: database, tls: .disable)
        let logger = Logger(label: "hush.test.postgres")
        return (try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger), logger)
    }
}

/// A room's row held by a transaction of another session (`PostgresCluster.holdRoomLock`).
public struct HeldRoomLock: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    /// Ends the holding transaction and its connection.
    public func release() async throws {
        try await connection.query("ROLLBACK", logger: logger)
        try await connection.close()
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
