import Foundation
import HushProtocol
import HummingbirdWebSocket
import Logging
import NIOCore
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

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        var frames = inbound.messages(maxSize: limits.maxFrameBytes).makeAsyncIterator()
        guard let (session, key) = await handshake(&frames, outbound) else {
            metrics.closed.increment()
            try? await outbound.close(.policyViolation, reason: "handshake failed")
            return
        }
        let keyID = KeyID.json(key)
        let box = SharedSession(session)
        if await Self.shortLived({ [relay] in (try? await relay.store.isRetired(keyID)) == true }) {
            if let frame = try? box.wrap(WireMessage.error(HushError(.removed, "this key was removed from its room"), id: nil).encoded()) {
                try? await outbound.write(.binary(ByteBuffer(bytes: frame)))
            }
            try? await outbound.close(.policyViolation, reason: "removed")
            return
        }
        let outbox = hub.register(key: keyID)
        metrics.connections.increment()
        defer { metrics.connections.decrement() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await writeLoop(outbox: outbox, box: box, outbound: outbound, key: keyID) }
            await readLoop(&frames, box: box, outbox: outbox, key: keyID)
            hub.unregister(outbox)
            await group.waitForAll()
        }
        try? await outbound.close(.normalClosure, reason: nil)
    }

    /// Runs the handshake under a deadline; returns the session and the peer's proven key.
    private func handshake(_ frames: inout WebSocketInboundMessageStream.AsyncIterator,
                           _ outbound: WebSocketOutboundWriter) async -> (SecureSession, ThemisPublicKey)? {
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
                    if let reply { try await outbound.write(.binary(ByteBuffer(bytes: reply))) }
                    guard let key = session.peerPublicKey else { return nil }
                    return (session, key)
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

    private func writeLoop(outbox: Outbox, box: SharedSession, outbound: WebSocketOutboundWriter, key: String) async {
        var delivered: [String: Int] = [:]
        drain: for await item in outbox.stream {
            switch item {
            case .message(let message):
                guard let frame = try? box.wrap(message.json) else { continue }
                do {
                    try await outbound.write(.binary(ByteBuffer(bytes: frame)))
                } catch {
                    break drain
                }
                if let (room, seq) = message.delivery { delivered[room] = max(delivered[room] ?? 0, seq) }
            case .close(let reason):
                try? await outbound.close(.policyViolation, reason: reason)
            }
        }
        if outbox.didOverflow {
            metrics.closed.increment()
            try? await outbound.close(.policyViolation, reason: "slow reader")
        }
        for (room, seq) in delivered { try? await relay.store.saveDelivered(room: room, key: key, seq: seq) }
    }

    /// The request id of a request we refuse without decoding it fully, when it has one.
    static func peekID(_ plaintext: [UInt8]) -> String? {
        struct IDOnly: Decodable { var id: String? }
        return (try? JSONDecoder().decode(IDOnly.self, from: Data(plaintext)))?.id
    }
}
