import ArgumentParser
import Foundation
import Hummingbird
import HushProtocol
import HushServer
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a Hush server.")

    @Option(help: "Address to listen on (env HUSH_HOST).")
    var host: String = ProcessInfo.processInfo.environment["HUSH_HOST"] ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (env HUSH_PORT).")
    var port: Int = Int(ProcessInfo.processInfo.environment["HUSH_PORT"] ?? "") ?? 8080

    @Option(help: "Folder for the server key and the database (env HUSH_DATA).")
    var data: String = ProcessInfo.processInfo.environment["HUSH_DATA"] ?? "./hush-data"

    @Option(help: "Folder of the web client (env HUSH_WEB_ROOT; default: the repository's web/).")
    var webRoot: String?

    @Option(help: "An origin whose pages may use this relay from a browser besides its own, such as a copy written by `hush web export` (https://chat.example); repeat it for more (env HUSH_ALLOW_ORIGINS, separated by spaces or commas).")
    var allowOrigin: [String] = []

    @Option(help: "Requests per second per connection (burst: twice that); 0 turns the limit off, and the file-chunk budget with it. For benchmarks only; default 20 (docs/PROTOCOL.md §7).")
    var rateLimit: Double?

    @Option(help: "PostgreSQL in place of SQLite in the data folder, shared by every node that names it: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE[?sslmode=disable|prefer|require] (env HUSH_DATABASE, which keeps a password out of the process list).")
    var database: String?

    @Option(help: "The server key file to use instead of the data folder's server.key (env HUSH_SERVER_KEY): give every node of one database the same, so that clients pin one key whichever node answers. It must exist: a first node's server.key, or PREFIX.priv from `hush keygen --out PREFIX`.")
    var serverKey: String?

    @Option(help: "Writes per transaction at most (group commit, one fsync per batch); 1 commits each on its own. For benchmarks; default \(SQLiteStore.defaultCommitBatch) on SQLite, \(PostgresStore.maxCommitBatch) (also the most) on PostgreSQL.")
    var commitBatch: Int?

    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics, or 'off' (env HUSH_METRICS_ADDRESS). Keep it on loopback or a private network.")
    var metricsAddress: String = ProcessInfo.processInfo.environment["HUSH_METRICS_ADDRESS"] ?? "off"

    @Option(help: "Open connections on the chat port; more are answered 503 and closed (default: the open-file limit less 64).")
    var maxConnections: Int?

    @Option(help: "Open connections from one address; more are answered 429 and closed.")
    var maxConnectionsPerAddress: Int = ConnectionLimits().maxConnectionsPerAddress

    @Option(help: "Seconds a connection has to send its request head (and between requests).")
    var requestHeadTimeout: Double = 10

    @Option(help: "Seconds a WebSocket has, from its upgrade, to complete the Secure Session handshake.")
    var handshakeTimeout: Double = Limits.standard.handshakeTimeout / .seconds(1)

    @Option(help: "Seconds to wait for connections to close after SIGTERM/SIGINT before cutting them.")
    var shutdownTimeout: Double = 10

    @Option(help: "Stored bytes per room (payloads, wraps, \(StorageRules.recordOverhead) per record); a send beyond is refused with room_full.")
    var roomQuotaBytes: Int = Limits.standard.roomQuotaBytes

    @Option(help: "Database bytes in use beyond which messages and new rooms are refused with server_full (default: only the disk bounds it). The file may grow 32 MiB past it for owed rotations and removals.")
    var maxStorageBytes: Int?

    @Option(help: "Delete messages older than this many days (default: keep them).")
    var retainDays: Int?

    @Option(help: "Keep only the newest this many sequence numbers (messages and rotations) of each room (default: keep all).")
    var retainMessages: Int?

    func validate() throws {
        guard maxConnectionsPerAddress > 0, maxConnections ?? 1 > 0 else {
            throw ValidationError("--max-connections and --max-connections-per-address must be positive")
        }
        guard requestHeadTimeout > 0, handshakeTimeout > 0, shutdownTimeout > 0 else {
            throw ValidationError("--request-head-timeout, --handshake-timeout and --shutdown-timeout must be positive")
        }
        // Upper ends keep the byte and millisecond arithmetic far from overflow.
        guard (1...Self.maxBytes).contains(roomQuotaBytes), (1...Self.maxBytes).contains(maxStorageBytes ?? 1) else {
            throw ValidationError("--room-quota-bytes and --max-storage-bytes must be 1…\(Self.maxBytes)")
        }
        guard (1...Self.maxRetainDays).contains(retainDays ?? 1), retainMessages ?? 1 > 0 else {
            throw ValidationError("--retain-days must be 1…\(Self.maxRetainDays) and --retain-messages positive")
        }
        _ = try Self.parseAddress(metricsAddress)
        _ = try databaseLocation
        _ = try allowedOrigins
    }

    /// `--allow-origin`, else `HUSH_ALLOW_ORIGINS`.
    var allowedOrigins: Set<WebOrigin> {
        get throws {
            let texts = allowOrigin.isEmpty
                ? (ProcessInfo.processInfo.environment["HUSH_ALLOW_ORIGINS"] ?? "").split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
                : allowOrigin
            return Set(try texts.map { text in
                do { return try WebOrigin(text) } catch { throw ValidationError("--allow-origin \(text): \(error)") }
            })
        }
    }

    /// The PostgreSQL database, or nil for SQLite.
    var databaseLocation: PostgresLocation? {
        get throws {
            guard let url = database ?? ProcessInfo.processInfo.environment["HUSH_DATABASE"] else { return nil }
            do {
                return try PostgresLocation(url: url)
            } catch {
                // The message never repeats the URL: it may hold a password.
                throw ValidationError("--database: \(error)")
            }
        }
    }

    static let maxBytes = 1 << 50
    static let maxRetainDays = 100_000

    func run() async throws {
        // Every connection holds a descriptor: take all the process may have, and keep connections
        // below it so that the database and the runtime never run out (docs/PROTOCOL.md §7).
        let descriptors = DescriptorLimit.raiseToHard()
        var configuration = ServerConfiguration(dataDirectory: URL(fileURLWithPath: data))
        if let maxConnections {
            configuration.connections.maxConnections = maxConnections
            if maxConnections > DescriptorLimit.connectionBudget {
                print("Warning: --max-connections \(maxConnections) leaves fewer than \(DescriptorLimit.reserve) of \(descriptors) descriptors for the rest of the server")
            }
        }
        configuration.connections.maxConnectionsPerAddress = maxConnectionsPerAddress
        configuration.connections.requestHeadTimeout = .seconds(requestHeadTimeout)
        configuration.limits.handshakeTimeout = .seconds(handshakeTimeout)
        let metricsListener = try Self.parseAddress(metricsAddress)
        if let rateLimit {
            guard rateLimit >= 0 else { throw ValidationError("--rate-limit must be 0 (off) or positive") }
            configuration.limits.requestsPerSecond = rateLimit == 0 ? 1e9 : rateLimit
            configuration.limits.requestBurst = rateLimit == 0 ? 1e9 : 2 * rateLimit
            if rateLimit == 0 {
                // Off means off for file chunks too, so that a benchmark sees the server's own pace.
                configuration.limits.fileRequestsPerSecond = 1e9
                configuration.limits.fileRequestBurst = 1e9
            }
            print("Rate limit: \(rateLimit == 0 ? "off" : "\(rateLimit) requests/s per connection") (benchmark setting)")
        }
        if let commitBatch {
            guard (1...4096).contains(commitBatch) else { throw ValidationError("--commit-batch must be 1…4096") }
            configuration.commitBatch = commitBatch
        }
        configuration.limits.roomQuotaBytes = roomQuotaBytes
        configuration.limits.maxStorageBytes = maxStorageBytes
        configuration.retention = Retention(days: retainDays, messages: retainMessages)
        configuration.host = host
        configuration.port = port
        configuration.serverKeyFile = (serverKey ?? ProcessInfo.processInfo.environment["HUSH_SERVER_KEY"]).map { URL(fileURLWithPath: $0) }
        configuration.allowedOrigins = try allowedOrigins
        configuration.webRoot = (webRoot ?? ProcessInfo.processInfo.environment["HUSH_WEB_ROOT"]).map { URL(fileURLWithPath: $0) }
        let metrics = ServerMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        var logger = Logger(label: "hush")
        logger.logLevel = .info
        let postgres: PostgresStore?
        if let location = try databaseLocation {
            postgres = try await PostgresStore.connect(to: location, commitBatch: commitBatch ?? PostgresStore.maxCommitBatch,
                                                       logger: Logger(label: "hush.postgres"))
            print("Database: \(location)")
        } else {
            postgres = nil
        }
        let server: HushServer
        do {
            if let postgres {
                server = try await HushServer(configuration: configuration, store: postgres, metrics: metrics)
            } else {
                server = try HushServer(configuration: configuration, metrics: metrics)
            }
        } catch {
            await postgres?.close()
            throw error
        }
        let fingerprint = server.identity.fingerprint
        let app = server.application(logger: logger) { [host] port in
            print("Hush is listening on http://\(host):\(port)")
            print("Server key fingerprint: \(fingerprint)")
            fflush(nil)  // the banner must reach a pipe at once: tests and scripts wait for it
        }
        var services: [any Service] = [app]
        if configuration.retention.isEnabled {
            services.append(RetentionService(sweeper: server.retention, logger: logger))
        }
        if let (metricsHost, metricsPort) = metricsListener {
            // First in the list, so shut down last.
            services.insert(server.metricsApplication(host: metricsHost, port: metricsPort, logger: logger) { port in
                print("Metrics on http://\(metricsHost):\(port)/metrics")
                fflush(nil)
            }, at: 0)
        }
        // SIGTERM/SIGINT: Hummingbird stops accepting and sends every WebSocket a close frame;
        // connections still open after the shutdown timeout (a peer that never answers the
        // close) are cancelled, which closes them.
        var group = ServiceGroupConfiguration(services: services.map { .init(service: $0) },
                                              gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .seconds(shutdownTimeout)
        // Cancellation only has to close sockets; a hang there is a bug, and the process traps.
        group.maximumCancellationDuration = .seconds(10)
        do {
            try await ServiceGroup(configuration: group).run()
        } catch {
            await postgres?.close()
            throw error
        }
        await postgres?.close()
    }

    /// `HOST:PORT` (`[IPv6]:PORT`), or nil for `off`.
    static func parseAddress(_ text: String) throws -> (host: String, port: Int)? {
        guard text != "off" else { return nil }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ValidationError("--metrics-address must be HOST:PORT or off")
        }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { throw ValidationError("--metrics-address must be HOST:PORT or off") }
        return (String(host), port)
    }
}

/// Runs the retention sweeper until the server shuts down.
struct RetentionService: Service {
    let sweeper: RetentionSweeper
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown { await sweeper.run(logger: logger) }
    }
}
