import Foundation
import HushProtocol
import Logging
import NIOCore
import NIOWebSocket
import ThemisKit

/// What every connection at `/ws` shares: the server's identity, the relay and the limits.
/// Each connection is served by a `SessionHandler` of its own.
struct SessionConnection: Sendable {
    let identity: ServerIdentity
    let relay: Relay
    let hub: Hub
    let limits: Limits
    let metrics: ServerMetrics
    let requestClock: @Sendable () -> ContinuousClock.Instant
    let logger: Logger
    /// A ping goes out after this long; a peer that sent nothing since the last one is closed.
    let pingPeriod: TimeAmount
    /// How long a close waits for the peer's close frame before it drops the connection.
    let closeTimeout: TimeAmount

    func makeHandler() -> SessionHandler { SessionHandler(self) }

    /// The request id of a request we refuse without decoding it fully, when it has one.
    static func peekID(_ plaintext: [UInt8]) -> String? {
        struct IDOnly: Decodable { var id: String? }
        return (try? JSONDecoder().decode(IDOnly.self, from: Data(plaintext)))?.id
    }
}

/// Serves one upgraded `/ws` connection on its channel's event loop, at the end of NIO's
/// WebSocket pipeline: it reassembles messages, answers pings and closes, runs the Secure
/// Session handshake, hands each request to the relay in a short-lived task, and writes
/// replies and pushes straight from the connection's `Outbox`. Everything decided lives in
/// `Relay`; this type only moves frames.
///
/// No task lives as long as the connection: a task keeps the memory of its deepest await chain
/// while it lives, so an idle connection is only this handler, its channel and its session.
/// Requests are handled one at a time, in order; while one is, reading from the socket waits.
final class SessionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let slowReader = "slow reader"

    private enum State: Equatable {
        case handshaking
        /// Established; the store is asked whether the key was removed before it goes online.
        case checkingKey
        case open
        /// Our close frame went out; waiting for the peer's (or `closeTimeout`).
        case closing
        case closed
    }

    private let shared: SessionConnection
    private var state = State.handshaking
    private var context: ChannelHandlerContext?
    private var session: SecureSession
    private var keyID = ""
    /// The server's last handshake message, sent once the connection is online.
    private var lastHandshakeMessage: [UInt8]?
    /// Set when the connection goes online; the hub holds it too until the channel closes.
    private var outbox: Outbox?
    /// A message whose frames have not all arrived.
    private var partial: ByteBuffer?
    /// Messages read and not yet handled.
    private var pending = CircularBuffer<[UInt8]>()
    /// A request (or the key check) is being handled: reading waits.
    private var busy = false
    /// A read the channel asked for while busy, passed on once the request is handled.
    private var heldRead = false
    private var heardSincePing = true
    private var timer: Scheduled<Void>?
    private var limiter: RateLimiter
    // File chunks have their own budget (§4.9): a file moves fast, chat stays bounded.
    private var fileLimiter: RateLimiter
    /// The highest `message` push written per room, saved as delivered when the connection ends.
    private var deliveredSeq: [String: Int] = [:]

    fileprivate init(_ shared: SessionConnection) {
        self.shared = shared
        session = SecureSession(id: Array(shared.identity.serverID.utf8), privateKey: shared.identity.privateKey,
                                peerKeyLookup: { KeyID.key(fromSessionID: $0) })
        let limits = shared.limits
        limiter = RateLimiter(rate: limits.requestsPerSecond, burst: limits.requestBurst, now: shared.requestClock())
        fileLimiter = RateLimiter(rate: limits.fileRequestsPerSecond, burst: limits.fileRequestBurst, now: shared.requestClock())
    }

    /// Lets tasks and the outbox reach this handler, always on its event loop.
    private var loopBound: NIOLoopBound<SessionHandler> { NIOLoopBound(self, eventLoop: context!.eventLoop) }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The handshake must finish within its deadline; pings start once it has.
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(shared.limits.handshakeTimeout)) {
            self.shared.metrics.closed.increment()
            self.startClose(.policyViolation, reason: "handshake timeout")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { end() }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    // MARK: Frames in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        heardSincePing = true
        // Clients mask every frame (RFC 6455 §5.1) and no extension was negotiated.
        guard frame.maskKey != nil, !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return refuse(.protocolError, reason: "unmasked or reserved frame")
        }
        switch frame.opcode {
        case .ping:
            // Only while the socket takes more (RFC 6455 §5.5.3 lets a pong answer the latest
            // ping only): a peer that pings and never reads cannot grow our buffers.
            guard state != .closing, state != .closed, context.channel.isWritable else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                                  promise: nil)
        case .pong:
            break
        case .connectionClose:
            peerClosed(frame, context: context)
        case .binary, .continuation:
            messageFrame(frame)
        default:
            refuse(.unacceptableData, reason: "binary frames only")
        }
    }

    private func messageFrame(_ frame: WebSocketFrame) {
        guard state != .closing, state != .closed else { return }
        if frame.opcode == .binary {
            guard partial == nil else { return refuse(.protocolError, reason: "a new message inside a fragmented one") }
            partial = frame.unmaskedData
        } else {
            guard partial != nil else { return refuse(.protocolError, reason: "a continuation without a message") }
            var data = frame.unmaskedData
            partial!.writeBuffer(&data)
        }
        guard partial!.readableBytes <= shared.limits.maxFrameBytes else {
            return refuse(.messageTooLarge, reason: "message larger than \(shared.limits.maxFrameBytes) bytes")
        }
        guard frame.fin, let message = partial else { return }
        partial = nil
        received(Array(message.readableBytesView))
    }

    private func received(_ bytes: [UInt8]) {
        switch state {
        case .handshaking:
            handshake(bytes)
        case .checkingKey, .open:
            pending.append(bytes)
            serveNext()
        case .closing, .closed:
            break
        }
    }

    /// The peer closes: answer with its code (the server closes the TCP connection first,
    /// RFC 6455 §7.1.1), or drop the connection if we had closed already.
    private func peerClosed(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        guard state != .closing, state != .closed else { return context.close(promise: nil) }
        state = .closing
        var payload = frame.unmaskedData
        var reply = context.channel.allocator.buffer(capacity: 2)
        if let code = payload.readWebSocketErrorCode() { reply.write(webSocketErrorCode: code) }
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply)))
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    // MARK: The handshake

    private func handshake(_ bytes: [UInt8]) {
        do {
            switch try session.receive(bytes) {
            case .reply(let reply):
                write(reply, flush: true)
            case .established(let reply):
                guard let key = session.peerPublicKey else { throw HushError(.badRequest, "no peer key") }
                keyID = KeyID.json(key)
                lastHandshakeMessage = reply
                checkKey()
            case .data:
                throw HushError(.badRequest, "data before the handshake ended")
            }
        } catch {
            shared.logger.debug("handshake refused", metadata: ["error": "\(error)"])
            shared.metrics.closed.increment()
            startClose(.policyViolation, reason: "handshake failed")
        }
    }

    /// Asks the store whether the key was removed; the answer comes back on the event loop.
    private func checkKey() {
        state = .checkingKey
        busy = true
        timer?.cancel()
        let handler = loopBound
        let eventLoop = context!.eventLoop
        Task { [relay = shared.relay, keyID] in
            let retired = (try? await relay.store.isRetired(keyID)) == true
            eventLoop.execute { handler.value.keyChecked(retired: retired) }
        }
    }

    /// Puts the connection online and sends the server's last handshake message in one
    /// event-loop turn (PROTOCOL §3): the client is established only once every later push
    /// reaches this connection, and no push can go out before that message.
    private func keyChecked(retired: Bool) {
        guard state == .checkingKey, let context else { return }
        if let lastHandshakeMessage { write(lastHandshakeMessage, flush: false) }
        lastHandshakeMessage = nil
        guard !retired else {
            if let frame = try? session.wrap(WireMessage.error(HushError(.removed, "this key was removed from its room"), id: nil).encoded()) {
                write(frame, flush: false)
            }
            return startClose(.policyViolation, reason: "removed")
        }
        let handler = loopBound
        let eventLoop = context.eventLoop
        outbox = shared.hub.register(key: keyID) { eventLoop.execute { handler.value.drain() } }
        context.flush()
        state = .open
        shared.metrics.connections.increment()
        schedulePing()
        requestHandled()
    }

    // MARK: Requests

    /// Holds the channel's reads while a request is handled, so that a client cannot queue
    /// more than one read's worth of requests.
    func read(context: ChannelHandlerContext) {
        if busy, state == .checkingKey || state == .open {
            heldRead = true
        } else {
            context.read()
        }
    }

    private func serveNext() {
        while !busy, state == .open, let outbox, let bytes = pending.popFirst() {
            do {
                guard let request = try admit(bytes, outbox: outbox) else { continue }
                busy = true
                let handler = loopBound
                let eventLoop = context!.eventLoop
                Task { [relay = shared.relay, keyID] in
                    for reply in await relay.handle(request, from: keyID, outbox: outbox) { outbox.send(reply) }
                    eventLoop.execute { handler.value.requestHandled() }
                }
            } catch {
                // An invalid request ends this connection only.
                shared.logger.debug("connection closed", metadata: ["reason": "\(error)"])
                shared.metrics.closed.increment()
                startClose(.policyViolation, reason: "not a Secure Session data message")
            }
        }
    }

    private func requestHandled() {
        busy = false
        serveNext()
        if !busy, heldRead, let context {
            heldRead = false
            context.read()
        }
    }

    /// Opens, decodes and meters one request, answering a refused one itself; returns an
    /// admitted request for the relay.
    private func admit(_ bytes: [UInt8], outbox: Outbox) throws -> WireMessage? {
        guard case .data(let plaintext) = try session.receive(bytes) else {
            throw HushError(.badRequest, "not a Secure Session data message")
        }
        let limits = shared.limits
        let decoded: Result<WireMessage, HushError>? = plaintext.count <= limits.maxRequestBytes
            ? Result { () throws(HushError) in try WireMessage.decode(plaintext) } : nil
        let isFileRequest = ["file_put", "file_get"].contains(try? decoded?.get().type)
        let now = shared.requestClock()
        guard isFileRequest ? fileLimiter.allow(now: now) : limiter.allow(now: now) else {
            shared.metrics.rateLimited.increment()
            outbox.send(.error(HushError(.rateLimited, "too many requests; slow down"), id: SessionConnection.peekID(plaintext)))
            return nil
        }
        guard let decoded else {
            outbox.send(.error(HushError(.tooLarge, "request larger than \(limits.maxRequestBytes) bytes"), id: nil))
            return nil
        }
        switch decoded {
        case .success(let request):
            return request
        case .failure(let error):
            outbox.send(.error(error, id: SessionConnection.peekID(plaintext)))
            return nil
        }
    }

    // MARK: Frames out

    /// Writes what the outbox holds, flushed once (one `writev`). While the socket cannot take
    /// more, the outbox fills; when it overflows, the connection is closed ("slow reader").
    private func drain() {
        guard state == .open, let context, let outbox else { return }
        if outbox.didOverflow {
            shared.metrics.closed.increment()
            return startClose(.policyViolation, reason: Self.slowReader)
        }
        // Left queued (and the outbox not woken again) until the socket can take more.
        guard context.channel.isWritable else { return }
        let items = outbox.take()
        guard !items.isEmpty else { return }
        for item in items {
            switch item {
            case .message(let message):
                guard let frame = try? session.wrap(message.json) else { continue }
                write(frame, flush: false)
                if let (room, seq) = message.delivery { deliveredSeq[room] = max(deliveredSeq[room] ?? 0, seq) }
            case .close(let reason):
                return startClose(.policyViolation, reason: reason)
            }
        }
        context.flush()
    }

    /// A drain that found the socket full left the batch queued; this one sends it.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    private func write(_ bytes: [UInt8], flush: Bool) {
        guard let context else { return }
        let frame = wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: context.channel.allocator.buffer(bytes: bytes)))
        if flush { context.writeAndFlush(frame, promise: nil) } else { context.write(frame, promise: nil) }
    }

    // MARK: Liveness and closing

    private func schedulePing() {
        timer = context?.eventLoop.assumeIsolated().scheduleTask(in: shared.pingPeriod) { self.ping() }
    }

    /// A peer that sent nothing for a whole period, not even the pong to the last ping, is gone.
    private func ping() {
        guard state == .open, let context else { return }
        guard heardSincePing else {
            shared.metrics.closed.increment()
            return context.close(promise: nil)
        }
        heardSincePing = false
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
        schedulePing()
    }

    /// A protocol breach: counted, then closed.
    private func refuse(_ code: WebSocketErrorCode, reason: String) {
        shared.logger.debug("connection closed", metadata: ["reason": "\(reason)"])
        shared.metrics.closed.increment()
        startClose(code, reason: reason)
    }

    /// Sends what was written and a close frame, then waits for the peer's close frame, but
    /// no longer than `closeTimeout`. Reading goes on, so that the peer's close is seen.
    private func startClose(_ code: WebSocketErrorCode, reason: String) {
        guard state != .closing, state != .closed, let context else { return }
        state = .closing
        var payload = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        payload.write(webSocketErrorCode: code)
        payload.writeString(reason)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)), promise: nil)
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: shared.closeTimeout) { context.close(promise: nil) }
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            startClose(.goingAway, reason: "server shutting down")
        case ChannelEvent.inputClosed:
            // Hummingbird's channels allow half-closure: a peer that is gone sends nothing more.
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// The channel is gone: the connection goes offline and what it delivered is saved. Also
    /// drops the outbox, whose wake closure holds this handler.
    private func end() {
        guard state != .closed else { return }
        state = .closed
        timer?.cancel()
        timer = nil
        context = nil
        guard let outbox else { return }
        self.outbox = nil
        shared.hub.unregister(outbox)
        shared.metrics.connections.decrement()
        let delivered = deliveredSeq
        guard !delivered.isEmpty else { return }
        Task { [store = shared.relay.store, keyID] in
            for (room, seq) in delivered { try? await store.saveDelivered(room: room, key: keyID, seq: seq) }
        }
    }
}
