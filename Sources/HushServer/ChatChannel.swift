import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import Prometheus

/// The chat port's connections: Hummingbird's HTTP/1 + WebSocket upgrade channel behind the
/// request-head deadline of `ConnectionLimits`.
struct ChatChannel: ServerChildChannel {
    typealias Value = HTTP1WebSocketUpgradeChannel.Value

    let base: HTTP1WebSocketUpgradeChannel
    let requestHeadTimeout: TimeAmount
    let metrics: ServerMetrics

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let value = base.setup(channel: channel, logger: logger).flatMapThrowing { [requestHeadTimeout, metrics] value in
            // Behind NIO's upgrade handler, so that it sees the request head and parse errors.
            try channel.pipeline.syncOperations.addHandler(RequestHeadDeadline(timeout: requestHeadTimeout,
                                                                               closed: metrics.closed))
            return value
        }
        // NIO leaves a channel whose setup failed open and unregistered: closing it is ours to do.
        value.whenFailure { _ in channel.close(promise: nil) }
        return value
    }

    func handle(value: Value, logger: Logger) async {
        // This logger only reports how the upgrade decision ended; every connection closed
        // before its request head (by its peer or by `RequestHeadDeadline`) is an error line
        // there, which a slowloris would turn into a flood. The WebSocket and HTTP handlers log
        // through their own loggers.
        var quiet = logger
        quiet.logLevel = .critical
        await base.handle(value: value, logger: quiet)
    }
}

/// The headers of every response the chat port writes itself, outside the router.
private func headersOfShortResponse() -> [(String, String)] {
    [("connection", "close"), ("content-length", "0")]
        + WebRoutes.securityHeaders.map { ($0.name.canonicalName, $0.value) }
}

/// Closes a connection that has not sent a complete request head within `timeout` of its accept,
/// and answers a malformed one `400` and closes it. It leaves the pipeline once NIO's upgrade
/// handler has decided: from then on Hummingbird's idle timeout (HTTP) or the Secure Session
/// handshake deadline (WebSocket) apply.
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
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        guard !answered else { return }
        answered = true
        closed.increment()
        let head = HTTPResponseHead(version: .http1_1, status: .badRequest, headers: HTTPHeaders(headersOfShortResponse()))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
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

