#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Prometheus
import NIOConcurrencyHelpers

/// The chat port's connections: HTTP/1 through Hummingbird, and `/ws` upgraded to a
/// `SessionHandler` on NIO's WebSocket pipeline, behind the connection caps and the
/// request-head deadline of `ConnectionLimits`.
struct ChatChannel: ServerChildChannel, HTTPChannelHandler {
    enum Value: ServerChildChannelValue {
        case admitted(EventLoopFuture<FirstRequest>, any Channel)
        /// Over a cap: the `Refusal` handler answers and closes it; nothing else to do.
        case refused(any Channel)

        var channel: any Channel {
            switch self {
            case .admitted(_, let channel), .refused(let channel): channel
            }
        }
    }

    /// What a connection became after its first request head.
    enum FirstRequest: Sendable {
        /// Upgraded at `/ws`: its `SessionHandler` serves it; no task waits on it.
        case session
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade anywhere but `/ws`: answered `400`.
        case refusedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    let responder: HTTPChannelHandler.Responder
    let session: SessionConnection
    /// Covers a kept-alive HTTP connection between requests.
    let idleTimeout: TimeAmount
    let admission: ConnectionAdmission
    let origins: OriginGate
    let heapTrimmer: HeapTrimmer
    let requestHeadTimeout: TimeAmount
    let metrics: ServerMetrics

    init(responder: @escaping HTTPChannelHandler.Responder, session: SessionConnection, idleTimeout: TimeAmount,
         admission: ConnectionAdmission, origins: OriginGate, heapTrimmer: HeapTrimmer, requestHeadTimeout: TimeAmount,
         metrics: ServerMetrics) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.session = session
        self.idleTimeout = idleTimeout
        self.admission = admission
        self.origins = origins
        self.heapTrimmer = heapTrimmer
        self.requestHeadTimeout = requestHeadTimeout
        self.metrics = metrics
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let value: EventLoopFuture<Value>
        switch admission.admit(channel.remoteAddress) {
        case .refused(let status):
            metrics.refusedConnections.increment()
            value = channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(Refusal(status: status))
                return .refused(channel)
            }
        case .admitted(let address):
            channel.closeFuture.whenComplete { [admission, heapTrimmer] _ in
                heapTrimmer.connectionClosed(open: admission.release(address))
            }
            value = channel.eventLoop.makeCompletedFuture {
                let firstRequest = try configurePipeline(channel, logger: logger)
                // Behind NIO's upgrade handler, so that it sees the request head and parse errors.
                try channel.pipeline.syncOperations.addHandler(RequestHeadDeadline(timeout: requestHeadTimeout,
                                                                                   closed: metrics.closed))
                // Before it, so that a refused page never reaches the upgrade.
                let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                try channel.pipeline.syncOperations.addHandler(OriginCheck(gate: origins, refused: metrics.closed), position: .after(decoder))
                return .admitted(firstRequest, channel)
            }
        }
        // NIO leaves a channel whose setup failed open and unregistered: closing it is ours to do.
        value.whenFailure { _ in channel.close(promise: nil) }
        return value
    }

    /// NIO's HTTP/1 pipeline with its upgrade handler: a `GET /ws` upgrade gets the WebSocket
    /// codec and a `SessionHandler`; anything else goes on as HTTP through Hummingbird.
    private func configurePipeline(_ channel: any Channel, logger: Logger) throws -> EventLoopFuture<FirstRequest> {
        let upgradeAsked = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
        let upgrader = NIOTypedWebSocketServerUpgrader<FirstRequest>(
            maxFrameSize: session.limits.maxFrameBytes,
            shouldUpgrade: { channel, head in
                upgradeAsked.value = true
                let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first
                return channel.eventLoop.makeSucceededFuture(head.method == .GET && path == "/ws" ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { [session] channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(session.makeHandler())
                    return .session
                }
            })
        let upgrade = NIOTypedHTTPServerUpgradeConfiguration(upgraders: [upgrader]) { [idleTimeout] channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                try channel.pipeline.syncOperations.addHandler(
                    HTTPConnectionStateHandler(idleTimeout: Duration(idleTimeout), logger: logger))
                let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                return upgradeAsked.value ? .refusedUpgrade(http) : .http(http)
            }
        }
        var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
        // As Hummingbird's own HTTP/1 channel: it pipelines, handles errors and validates headers itself.
        configuration.enablePipelining = false
        configuration.enableErrorHandling = false
        configuration.enableResponseHeaderValidation = false
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration()
        configuration.decoderConfiguration.maxHeaderFieldSize = decoder.maxHeaderFieldSize
        configuration.decoderConfiguration.maxHeaderListSize = decoder.maxHeaderListSize
        configuration.decoderConfiguration.maxHeaderFieldCount = decoder.maxHeaderFieldCount
        return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
    }

    func handle(value: Value, logger: Logger) async {
        guard case .admitted(let firstRequest, _) = value else { return }
        // This logger only reports how the upgrade decision ended; every connection closed
        // before its request head (by its peer or by `RequestHeadDeadline`) is an error line
        // there, which a slowloris would turn into a flood.
        var quiet = logger
        quiet.logLevel = .critical
        switch try? await firstRequest.get() {
        case .http(let http):
            await handleHTTP(asyncChannel: http, logger: quiet)
        case .refusedUpgrade(let http):
            try? await http.executeThenClose { _, outbound in
                try await outbound.write(contentsOf: [.head(HTTPResponse(status: .badRequest, headerFields: Self.shortResponseFields)),
                                                      .end(nil)])
            }
        case .session, nil:
            break
        }
    }

    private static let shortResponseFields = HTTPFields(headersOfShortResponse().compactMap { name, value in
        HTTPField.Name(name).map { HTTPField(name: $0, value: value) }
    })

    /// NIO can upgrade only a connection's first request: a later upgrade request on a
    /// kept-alive connection is sent to the same address on a new connection.
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct ClosingAfterRedirect: Error {}
        return { request, responseWriter, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                return try await responder(request, responseWriter, channel)
            }
            let location = request.uri.query.map { "\(request.uri.path)?\($0)" } ?? request.uri.path
            try await responseWriter.writeResponse(HTTPResponse(status: .temporaryRedirect,
                                                                headerFields: [.connection: "close", .location: location]))
            throw ClosingAfterRedirect()
        }
    }
}

/// Open connections on the chat port, in all and per source address.
final class ConnectionAdmission: Sendable {
    private let limits: ConnectionLimits
    private let counts = NIOLockedValueBox<(total: Int, byAddress: [String: Int])>((0, [:]))

    init(limits: ConnectionLimits) { self.limits = limits }

    enum Decision {
        /// Counted under this address key, to release when the connection closes.
        case admitted(String)
        /// `503` when the server is full, `429` when the address is.
        case refused(HTTPResponse.Status)
    }

    func admit(_ address: SocketAddress?) -> Decision {
        let key = Self.sourceKey(address)
        return counts.withLockedValue { counts in
            guard counts.total < limits.maxConnections else { return .refused(.serviceUnavailable) }
            guard counts.byAddress[key, default: 0] < limits.maxConnectionsPerAddress else { return .refused(.tooManyRequests) }
            counts.total += 1
            counts.byAddress[key, default: 0] += 1
            return .admitted(key)
        }
    }

    /// Whose connection this is, for the per-address cap: an IPv4 address as it is (also when
    /// it arrives IPv4-mapped on an IPv6 socket), an IPv6 address by its /64, since one host
    /// is usually given a whole /64 and could otherwise take a fresh address per connection.
    static func sourceKey(_ address: SocketAddress?) -> String {
        guard case .v6(let v6) = address else { return address?.ipAddress ?? "" }
        let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return bytes[12...].map(String.init).joined(separator: ".")
        }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
    }

    /// Returns the connections still open.
    @discardableResult
    func release(_ key: String) -> Int {
        counts.withLockedValue { counts in
            counts.total -= 1
            counts.byAddress[key, default: 1] -= 1
            if counts.byAddress[key] == 0 { counts.byAddress[key] = nil }
            return counts.total
        }
    }
}

/// Gives the heap's free memory back to the system once many connections have closed. glibc
/// keeps what a closed connection freed in its arenas, returning only a free top of a heap
/// above its trim threshold (and `scripts/serve` raises that threshold to 128 MiB), so a
/// server would otherwise keep its peak connection memory for good.
///
/// Some of what a crowd leaving frees comes after the last due trim: connections still
/// waiting for their peer's close frame, the work a close starts (saving what was delivered)
/// and the last closes, fewer than `minimumCloses`. So one more trim runs a `settleDelay`
/// after the last due one: 10,000 connections closing left 1.31× the idle baseline resident
/// 5 s after their sockets were gone, and 1.20× after it.
final class HeapTrimmer: Sendable {
    /// Closes since the last trim below which one is not worth a walk of the heap (a closed
    /// connection frees tens of KiB).
    static let minimumCloses = 64
    /// `generation` counts due trims, so that only the last one's settling trim runs.
    private let state = NIOLockedValueBox<(closes: Int, trimming: Bool, generation: Int)>((0, false, 0))
    private let trim: @Sendable () -> Void
    private let background: @Sendable (@escaping @Sendable () -> Void) -> Void
    private let settleDelay: Duration
    private let later: @Sendable (Duration, @escaping @Sendable () -> Void) -> Void

    /// `trim` gives the free memory back, run by `background`: off the event loop, since a trim
    /// walks every arena; `later` runs the settling trim after `settleDelay` (tests count the
    /// calls and run them when they choose).
    init(settleDelay: Duration,
         trim: @escaping @Sendable () -> Void = HeapTrimmer.trimHeap,
         background: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void = { DispatchQueue.global(qos: .utility).async(execute: $0) },
         later: @escaping @Sendable (Duration, @escaping @Sendable () -> Void) -> Void = HeapTrimmer.runLater) {
        self.trim = trim
        self.background = background
        self.settleDelay = settleDelay
        self.later = later
    }

    static func runLater(_ delay: Duration, _ job: @escaping @Sendable () -> Void) {
        DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + .nanoseconds(Int(delay / .nanoseconds(1))), execute: job)
    }

    /// A trim is due once at least as many connections have closed since the last one as are
    /// still open: as a crowd leaves, trims come at each halving of it, and a steady churn
    /// costs one trim per turnover of all the open connections.
    static func isDue(closesSinceTrim: Int, open: Int) -> Bool {
        closesSinceTrim >= max(minimumCloses, open)
    }

    func connectionClosed(open: Int) {
        let due: Int? = state.withLockedValue { state in
            state.closes += 1
            guard !state.trimming, Self.isDue(closesSinceTrim: state.closes, open: open) else { return nil }
            state = (0, true, state.generation + 1)
            return state.generation
        }
        guard let due else { return }
        background { [state, trim] in
            trim()
            state.withLockedValue { $0.trimming = false }
        }
        later(settleDelay) { [state, trim] in
            if state.withLockedValue({ $0.generation }) == due { trim() }
        }
    }

    static func trimHeap() { _ = mallocTrim?(0) }

    /// glibc's `malloc_trim`, which Swift's Glibc module does not export; nil on other C libraries.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()
}

/// The headers of every response the chat port writes itself, outside the router.
private func headersOfShortResponse() -> [(String, String)] {
    [("connection", "close"), ("content-length", "0")]
        + WebRoutes.securityHeaders().map { ($0.name.canonicalName, $0.value) }
}

/// Writes a response without a body (HTTP parts, for a handler behind the HTTP codec), then
/// closes the connection.
private func answerAndClose(_ context: ChannelHandlerContext, status: HTTPResponseStatus) {
    let head = HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headersOfShortResponse()))
    context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).assumeIsolated()
        .whenComplete { _ in context.close(promise: nil) }
}

/// Answers a connection over a cap and closes it at once, so that it holds its descriptor only
/// for that one write.
private final class Refusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let status: HTTPResponse.Status

    init(status: HTTPResponse.Status) { self.status = status }

    func channelActive(context: ChannelHandlerContext) {
        var text = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n"
        for (name, value) in headersOfShortResponse() { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }
}

/// Answers a WebSocket upgrade from a page the relay does not admit (`OriginGate`) `403` with the
/// security headers, and closes it. It sits before NIO's upgrade handler, which would otherwise
/// ask Hummingbird and answer a refusal with a bare `400`, and leaves after the first request
/// head: only a connection's first request can be an upgrade.
private final class OriginCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let gate: OriginGate
    /// Counts the connections this handler closes.
    private let refused: Counter
    private var answered = false

    init(gate: OriginGate, refused: Counter) {
        self.gate = gate
        self.refused = refused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }  // the rest of a refused request
        guard case .head(let head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade"),
              gate.verdict(origin: head.headers.first(name: "origin"), host: head.headers.first(name: "host")) == .refused else {
            context.fireChannelRead(data)
            return context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        answered = true
        refused.increment()
        answerAndClose(context, status: .forbidden)
    }
}

/// Closes a connection that has not sent a complete request head within `timeout` of its accept,
/// answers a malformed one `400` and closes it, and closes one still without a request when the
/// server quiesces. It leaves the pipeline once NIO's upgrade handler has decided: from then on
/// Hummingbird's idle timeout (HTTP) or the Secure Session handshake deadline (WebSocket) apply.
private final class RequestHeadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    // Untyped: after the decision, HTTP parts or WebSocket bytes pass until this handler is gone.
    typealias InboundIn = Any
    typealias OutboundOut = HTTPServerResponsePart

    private let timeout: TimeAmount
    /// Counts the connections this handler closes.
    private let closed: Counter
    private var deadline: Scheduled<Void>?
    private var answered = false

    init(timeout: TimeAmount, closed: Counter) {
        self.timeout = timeout
        self.closed = closed
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    /// The upgrade handler passes the request head on only once it has decided not to upgrade.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
        leave(context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is HTTPServerUpgradeEvents:
            context.fireUserInboundEventTriggered(event)
            leave(context)
        case is ChannelShouldQuiesceEvent:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        guard !answered else { return }
        answered = true
        closed.increment()
        answerAndClose(context, status: .badRequest)
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [closed] in
            closed.increment()
            context.close(promise: nil)
        }
    }

    private func leave(_ context: ChannelHandlerContext) {
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Stops accepting for a moment when `accept` fails for want of descriptors. NIO's
/// `AcceptBackoffHandler` cannot: the listening socket stays registered and readable, so the
/// event loop would call `accept` again at once, in a busy loop. Turning `autoRead` off
/// unregisters it.
final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = any Channel

    static let pause: TimeAmount = .milliseconds(500)
    private var resume: Scheduled<Void>?

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode), resume == nil {
            try? context.channel.syncOptions?.setOption(.autoRead, value: false)
            resume = context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) {
                self.resume = nil
                try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            }
        }
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
    }
}
