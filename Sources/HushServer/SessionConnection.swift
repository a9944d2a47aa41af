import Foundation
import HushProtocol
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ThemisKit

/// One WebSocket at `/ws`: the Secure Session handshake, then requests in and replies and
/// pushes out. Everything decided lives in `Relay`; this type only moves frames.
struct SessionConnection: Sendable {
    let identity: ServerIdentity
    let relay: Relay
    let hub: Hub
    let limits: Limits
    let metrics: ServerMetrics
    let requestClock: @Sendable () -> ContinuousClock.Instant
    let logger: Logger

    /// Serves one upgraded connection; `channel` is its NIO channel, which the writer of its
    /// replies and pushes works on directly (`FrameWriter`).
    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel) async {
        var frames = inbound.messages(maxSize: limits.maxFrameBytes).makeAsyncIterator()
        guard let (session, key, lastHandshakeMessage) = await handshake(&frames, outbound) else {
            metrics.closed.increment()
            try? await outbound.close(.policyViolation, reason: "handshake failed")
            return
        }
        let keyID = KeyID.json(key)
        let box = SharedSession(session)
        if await Self.shortLived({ [relay] in (try? await relay.store.isRetired(keyID)) == true }) {
            if let lastHandshakeMessage { try? await outbound.write(.binary(ByteBuffer(bytes: lastHandshakeMessage))) }
            if let frame = try? box.wrap(WireMessage.error(HushError(.removed, "this key was removed from its room"), id: nil).encoded()) {
                try? await outbound.write(.binary(ByteBuffer(bytes: frame)))
            }
            try? await outbound.close(.policyViolation, reason: "removed")
            return
        }
        let closed = metrics.closed
        guard let (writer, outbox) = try? await FrameWriter.install(
            on: channel, session: box, lastHandshakeMessage: lastHandshakeMessage,
            register: { [hub] wake in hub.register(key: keyID, wake: wake) },
            close: { reason in
                if reason == FrameWriter.slowReader { closed.increment() }
                Task { try? await outbound.close(.policyViolation, reason: reason) }
            }) else { return }
        metrics.connections.increment()
        defer { metrics.connections.decrement() }
        await readLoop(&frames, box: box, outbox: outbox, key: keyID)
        hub.unregister(outbox)
        for (room, seq) in await writer.delivered() {
            try? await relay.store.saveDelivered(room: room, key: keyID, seq: seq)
        }
        try? await outbound.close(.normalClosure, reason: nil)
    }

    /// Runs the handshake under a deadline; returns the session, the peer's proven key and the
    /// server's last handshake message, which `run` sends once the connection is online.
    private func handshake(_ frames: inout WebSocketInboundMessageStream.AsyncIterator,
                           _ outbound: WebSocketOutboundWriter) async -> (SecureSession, ThemisPublicKey, [UInt8]?)? {
        var session = SecureSession(id: Array(identity.serverID.utf8), privateKey: identity.privateKey,
                                    peerKeyLookup: { KeyID.key(fromSessionID: $0) })
        let deadline = Task { [limits] in
            try await Task.sleep(for: limits.handshakeTimeout)
            try? await outbound.close(.policyViolation, reason: "handshake timeout")
        }
        defer { deadline.cancel() }
        do {
            while let frame = try await frames.next() {
                guard case .binary(let buffer) = frame else { return nil }
                switch try session.receive(Array(buffer.readableBytesView)) {
                case .reply(let bytes):
                    try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                case .established(let reply):
                    guard let key = session.peerPublicKey else { return nil }
                    return (session, key, reply)
                case .data:
                    return nil
                }
            }
        } catch {
            logger.debug("handshake refused", metadata: ["error": "\(error)"])
        }
        return nil
    }

    private func readLoop(_ frames: inout WebSocketInboundMessageStream.AsyncIterator, box: SharedSession,
                          outbox: Outbox, key: String) async {
        var limiter = RateLimiter(rate: limits.requestsPerSecond, burst: limits.requestBurst, now: requestClock())
        // File chunks have their own budget (§4.9): a file moves fast, chat stays bounded.
        var fileLimiter = RateLimiter(rate: limits.fileRequestsPerSecond, burst: limits.fileRequestBurst, now: requestClock())
        do {
            while let frame = try await frames.next() {
                // Only the frame's bytes and the handling task live across the awaits here: a
                // task keeps the memory of its deepest await chain while it lives, and this one
                // lives as long as the connection.
                guard let handling = try admit(frame, box: box, outbox: outbox, key: key,
                                               limiter: &limiter, fileLimiter: &fileLimiter) else { continue }
                await withTaskCancellationHandler { await handling.value } onCancel: { handling.cancel() }
            }
        } catch {
            // An invalid frame or a transport error ends this connection only.
            metrics.closed.increment()
            logger.debug("connection closed", metadata: ["reason": "\(error)"])
        }
    }

    /// Opens, decodes and meters one request frame, answering a refused one itself; returns the
    /// task that handles an admitted one and queues its replies. The relay's work runs in that
    /// short-lived task so that its call chain's memory goes when it ends, instead of staying
    /// with the connection's long-lived reader. Not inlined: its locals (a decoded request is
    /// large) would otherwise become part of the reader's frame.
    @inline(never)
    private func admit(_ frame: WebSocketMessage, box: SharedSession, outbox: Outbox, key: String,
                       limiter: inout RateLimiter, fileLimiter: inout RateLimiter) throws -> Task<Void, Never>? {
        guard case .binary(let buffer) = frame,
              case .data(let plaintext) = try box.receive(Array(buffer.readableBytesView)) else {
            throw HushError(.badRequest, "not a Secure Session data message")
        }
        let decoded: Result<WireMessage, HushError>? = plaintext.count <= limits.maxRequestBytes
            ? Result { () throws(HushError) in try WireMessage.decode(plaintext) } : nil
        let isFileRequest = ["file_put", "file_get"].contains(try? decoded?.get().type)
        let allowed = isFileRequest ? fileLimiter.allow(now: requestClock()) : limiter.allow(now: requestClock())
        guard allowed else {
            metrics.rateLimited.increment()
            outbox.send(.error(HushError(.rateLimited, "too many requests; slow down"), id: Self.peekID(plaintext)))
            return nil
        }
        guard let decoded else {
            outbox.send(.error(HushError(.tooLarge, "request larger than \(limits.maxRequestBytes) bytes"), id: nil))
            return nil
        }
        switch decoded {
        case .success(let request):
            return Task { [relay] in
                for reply in await relay.handle(request, from: key, outbox: outbox) { outbox.send(reply) }
            }
        case .failure(let error):
            outbox.send(.error(error, id: Self.peekID(plaintext)))
            return nil
        }
    }

    /// Runs `work` in a task of its own, which frees its memory when it ends (see `admit`).
    private static func shortLived<T: Sendable>(_ work: @escaping @Sendable () async -> T) async -> T {
        await Task { await work() }.value
    }

    /// The request id of a request we refuse without decoding it fully, when it has one.
    static func peekID(_ plaintext: [UInt8]) -> String? {
        struct IDOnly: Decodable { var id: String? }
        return (try? JSONDecoder().decode(IDOnly.self, from: Data(plaintext)))?.id
    }
}

/// Writes a connection's replies and pushes on its channel's event loop, straight from its
/// `Outbox`: a batch is wrapped and written frame by frame and flushed once (one `writev`),
/// with no task between the relay and the socket. While the socket cannot take more, the
/// outbox fills; when it overflows, the connection is closed ("slow reader").
final class FrameWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let slowReader = "slow reader"

    private let session: SharedSession
    private let close: @Sendable (String) -> Void
    private var context: ChannelHandlerContext?
    /// Set in `install`, in the same event-loop turn as the registration that creates it.
    private var outbox: Outbox?
    private var closed = false
    /// The highest `message` push written per room, saved as delivered when the connection ends.
    private var deliveredSeq: [String: Int] = [:]

    private init(session: SharedSession, close: @escaping @Sendable (String) -> Void) {
        self.session = session
        self.close = close
    }

    /// A handle that other threads use: it only ever touches the writer on its event loop.
    struct Handle: Sendable {
        let writer: NIOLoopBound<FrameWriter>

        /// Called by `Outbox` when a batch starts, from any thread.
        func wake() {
            writer.eventLoop.execute { writer.value.drain() }
        }

        /// What was written, by room; the connection is over.
        func delivered() async -> [String: Int] {
            (try? await writer.eventLoop.submit { writer.value.finish() }.get()) ?? [:]
        }
    }

    /// Adds a writer at the end of the upgraded WebSocket pipeline, puts the connection online
    /// with `register` and sends the server's last handshake message, in one event-loop turn:
    /// the client is established only once every later push reaches this connection, and no
    /// push can go out before that message. `close` is called once, with the reason, when an
    /// outbox closes the connection or overflows.
    static func install(on channel: any Channel, session: SharedSession, lastHandshakeMessage: [UInt8]?,
                        register: @escaping @Sendable (_ wake: @escaping @Sendable () -> Void) -> Outbox,
                        close: @escaping @Sendable (String) -> Void) async throws -> (Handle, Outbox) {
        try await channel.eventLoop.submit {
            let writer = FrameWriter(session: session, close: close)
            try channel.pipeline.syncOperations.addHandler(writer)
            let handle = Handle(writer: NIOLoopBound(writer, eventLoop: channel.eventLoop))
            let outbox = register { handle.wake() }
            writer.outbox = outbox
            if let lastHandshakeMessage, let context = writer.context {
                context.writeAndFlush(writer.binaryFrame(lastHandshakeMessage), promise: nil)
            }
            return (handle, outbox)
        }.get()
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// The async channel before this handler forwards every frame it read; the reader has it.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    /// Also drops the outbox, whose wake closure holds this writer: the cycle ends with the channel.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        outbox = nil
    }

    /// A drain that found the socket full left the batch queued; this one sends it.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    private func drain() {
        guard !closed, let context, let outbox else { return }
        if outbox.didOverflow {
            shut(Self.slowReader, context: context)
            return
        }
        // Left queued (and the outbox not woken again) until the socket can take more.
        guard context.channel.isWritable else { return }
        let items = outbox.take()
        guard !items.isEmpty else { return }
        for item in items {
            switch item {
            case .message(let message):
                guard let frame = try? session.wrap(message.json) else { continue }
                context.write(binaryFrame(frame), promise: nil)
                if let (room, seq) = message.delivery { deliveredSeq[room] = max(deliveredSeq[room] ?? 0, seq) }
            case .close(let reason):
                shut(reason, context: context)
                return
            }
        }
        context.flush()
    }

    /// Sends what was written, then has the WebSocket layer close with `reason` (its close
    /// frame follows these frames on the same event loop).
    private func shut(_ reason: String, context: ChannelHandlerContext) {
        closed = true
        context.flush()
        close(reason)
    }

    private func binaryFrame(_ bytes: [UInt8]) -> NIOAny {
        wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: bytes)))
    }

    private func finish() -> [String: Int] {
        closed = true
        outbox = nil
        return deliveredSeq
    }
}
