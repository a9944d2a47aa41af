import Foundation
import Hummingbird
import HummingbirdCore
import HushProtocol
import Logging
import NIOCore

/// How to run a server.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDirectory: URL
    public var webRoot: URL?
    public var limits = Limits.standard
    /// Writes per SQLite transaction at most (group commit); 1 commits each on its own.
    public var commitBatch = SQLiteStore.defaultCommitBatch
    /// The server key file every node of a deployment shares (`--server-key`); nil: the data
    /// folder's `server.key`, made on the first start.
    public var serverKeyFile: URL?
    /// The server's notion of now (invite expiry, message times); tests inject their own.
    public var clock: @Sendable () -> Date = { Date() }
    /// Monotonic time for the per-connection request budget (a changed wall clock never
    /// refills it); tests inject their own.
    public var requestClock: @Sendable () -> ContinuousClock.Instant = { .now }
    /// Caps and deadlines for TCP connections to the chat port.
    public var connections = ConnectionLimits()
    /// How long history is kept (off by default).
    public var retention = Retention()
    /// Page origins besides the relay's own whose browsers may use it (`OriginGate`).
    public var allowedOrigins: Set<WebOrigin> = []

    public init(dataDirectory: URL) { self.dataDirectory = dataDirectory }
}

/// The Hush server: durable store, identity, relay, HTTP and WebSocket routes.
public struct HushServer: Sendable {
    public let configuration: ServerConfiguration
    public let identity: ServerIdentity
    public let store: any Store
    public let metrics: ServerMetrics
    /// Who is online (tests watch it to know when the server has noticed a close).
    public let hub: Hub
    /// Deletes expired history; `hush serve` runs it periodically, tests call `sweep()`.
    public let retention: RetentionSweeper
    /// A WebSocket ping this often, so that dead peers are noticed.
    static let pingPeriod: Duration = .seconds(30)
    /// How long a close waits for the peer's close frame.
    static let closeTimeout: TimeAmount = .seconds(10)

    /// A server on SQLite in the data folder.
    public init(configuration: ServerConfiguration, metrics: ServerMetrics = ServerMetrics()) throws {
        // First: loading the identity makes the data folder (0700) the database goes in.
        let identity = try ServerIdentity.forServer(configuration)
        self.init(configuration: configuration, identity: identity,
                  store: try SQLiteStore(path: configuration.dataDirectory.appendingPathComponent("hush.sqlite").path,
                                         commitBatch: configuration.commitBatch, limits: configuration.limits),
                  metrics: metrics)
    }

    /// A server on a store the caller opened (and closes), such as `PostgresStore`; the server
    /// key still lives in the data folder. It hands what other nodes of the store commit to its
    /// own connections from the start.
    public init(configuration: ServerConfiguration, store: any Store, metrics: ServerMetrics = ServerMetrics()) async throws {
        self.init(configuration: configuration, identity: try ServerIdentity.forServer(configuration), store: store, metrics: metrics)
        try await store.deliverPeers(to: hub)
    }

    init(configuration: ServerConfiguration, identity: ServerIdentity, store: any Store, metrics: ServerMetrics) {
        self.configuration = configuration
        self.identity = identity
        self.store = store
        self.metrics = metrics
        hub = Hub(capacity: configuration.limits.maxOutgoingFrames)
        retention = RetentionSweeper(store: store, retention: configuration.retention,
                                     pendingFileLifetime: configuration.limits.pendingFileLifetime, clock: configuration.clock)
    }

    /// The web client `hush serve` serves without `--web-root`: the repository's `web/`.
    public static var defaultWebRoot: URL { WebRoutes.defaultWebRoot }

    /// The Hummingbird application of the chat port; `onListening` receives the actually bound port.
    public func application(logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol {
        let limits = configuration.limits
        let router = Router()
        // Outermost, so that it also dresses the errors the others throw.
        let webRoot = configuration.webRoot ?? WebRoutes.defaultWebRoot
        router.add(middleware: SecurityHeadersMiddleware(headers: WebRoutes.securityHeaders(webRoot: webRoot)))
        // Request counts and durations through swift-metrics; `hush serve` exports them on its metrics listener.
        router.add(middleware: MetricsMiddleware())
        let origins = OriginGate(allowed: configuration.allowedOrigins)
        WebRoutes(identity: identity, webRoot: webRoot, origins: origins).add(to: router)
        let relay = Relay(store: store, hub: hub, limits: limits, metrics: metrics, clock: configuration.clock)
        let session = SessionConnection(identity: identity, relay: relay, hub: hub, limits: limits, metrics: metrics,
                                        requestClock: configuration.requestClock, logger: logger,
                                        pingPeriod: TimeAmount(Self.pingPeriod), closeTimeout: Self.closeTimeout)
        let headTimeout = TimeAmount(configuration.connections.requestHeadTimeout)
        let admission = ConnectionAdmission(limits: configuration.connections)
        // Past the longest a closing connection waits for its peer (`HeapTrimmer`).
        let heapTrimmer = HeapTrimmer(settleDelay: Duration(Self.closeTimeout) + .seconds(5))
        let metrics = metrics
        let server = HTTPServerBuilder { responder in
            // The idle timeout covers a kept-alive connection between requests; `ChatChannel` covers
            // the first request head.
            ChatChannel(responder: responder, session: session, idleTimeout: headTimeout, admission: admission,
                        origins: origins, heapTrimmer: heapTrimmer, requestHeadTimeout: headTimeout, metrics: metrics)
        }
        return Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "hush"),
            onServerRunning: { channel in
                try? await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.addHandler(AcceptPause(), position: .first)
                }.get()
                await onListening(channel.localAddress?.port ?? 0)
            },
            logger: logger
        )
    }

    /// `GET /metrics` (Prometheus text) on a listener of its own, kept off the public chat port.
    public func metricsApplication(host: String, port: Int, logger: Logger,
                                   onListening: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: SecurityHeadersMiddleware(headers: WebRoutes.securityHeaders()))
        router.get("/metrics") { [metrics] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        let idleTimeout = TimeAmount(configuration.connections.requestHeadTimeout)
        return Application(
            router: router,
            // A plain HTTP/1 channel has its idle timeout from the accept on; scrapers beyond
            // the cap wait in the listen backlog.
            server: .http1(configuration: .init(idleTimeout: idleTimeout)),
            configuration: .init(address: .hostname(host, port: port), serverName: "hush",
                                 availableConnectionsDelegate: .maximum(16, logger: logger)),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger
        )
    }
}
