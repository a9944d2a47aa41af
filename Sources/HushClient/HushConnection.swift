import Foundation
import HummingbirdWSClient
import HushProtocol
import Logging
import NIOCore
import NIOConcurrencyHelpers
import Synchronization
import ThemisKit

/// One WebSocket + Secure Session to a Hush server, acting for one key: requests with replies
/// matched by id, and a stream of pushes. It holds no room logic.
public final class HushConnection: Sendable {
    public let key: ThemisPrivateKey
    public let server: ServerInfo
    /// Server pushes, in order.
    public let pushes: AsyncStream<WireMessage>
    private let pushSink: AsyncStream<WireMessage>.Continuation
    private let outgoing: AsyncStream<Outgoing>.Continuation
    private let outgoingStream: AsyncStream<Outgoing>
    /// Replies awaited by id, and whether the connection has ended: one lock, so that a
    /// request racing the close is either answered by `finish` or never registered.
    private let pending = NIOLockedValueBox<(waiters: [String: CheckedContinuation<WireMessage, any Error>], closed: Bool)>(([:], false))
    private let nextID = Atomic<Int>(1)
    /// The largest frame accepted from the server: a history page holds up to 1 MiB of
    /// payloads (docs/PROTOCOL.md §7), about 1.4 MiB as base64 JSON, plus the session's framing.
    public static let maxFrameBytes = 4 << 20
    /// How long a request waits for its reply before it fails with `timedOut`.
    public static let requestTimeout: Duration = .seconds(30)
    private let closedSignal = AsyncStream<Void>.makeStream()
    private let ready = NIOLockedValueBox<CheckedContinuation<Void, any Error>?>(nil)

    enum Outgoing: Sendable {
        case plaintext([UInt8])
        case raw([UInt8])
        case close
    }

    private init(key: ThemisPrivateKey, server: ServerInfo) {
        self.key = key
        self.server = server
        (pushes, pushSink) = AsyncStream.makeStream(of: WireMessage.self)
        (outgoingStream, outgoing) = AsyncStream.makeStream(of: Outgoing.self)
    }

    /// Connects and completes the handshake against the pinned server key. `sessionID`
    /// overrides the id derived from `key` (only tests want that).
    public static func open(server: ServerInfo, key: ThemisPrivateKey, sessionID: [UInt8]? = nil,
                            logger: Logger = Logger(label: "hush.client")) async throws -> HushConnection {
        let connection = HushConnection(key: key, server: server)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            connection.ready.withLockedValue { $0 = continuation }
            Task {
                do {
                    try await WebSocketClient.connect(url: server.webSocketURL,
                                                      configuration: .init(maxFrameSize: Self.maxFrameBytes), logger: logger) {
                        inbound, outbound, _ in
                        try await connection.run(inbound: inbound, outbound: outbound, sessionID: sessionID)
                    }
                } catch {
                    connection.finish(error)
                }
                connection.finish(ClientError.connectionClosed)
            }
        }
        return connection
    }

    private func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, sessionID: [UInt8]?) async throws {
        let server = self.server
        var session = SecureSession(id: sessionID ?? KeyID.sessionID(key.publicKey), privateKey: key,
                                    peerKeyLookup: { id in id == Array(server.wellKnown.serverId.utf8) ? server.publicKey : nil })
        var frames = inbound.messages(maxSize: Self.maxFrameBytes).makeAsyncIterator()
        try await outbound.write(.binary(ByteBuffer(bytes: try session.connectRequest())))
        while !session.isEstablished {
            guard case .binary(let buffer)? = try await frames.next() else { throw ClientError.handshakeFailed }
            switch try session.receive(Array(buffer.readableBytesView)) {
            case .reply(let bytes): try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
            case .established(let reply):
                if let reply { try await outbound.write(.binary(ByteBuffer(bytes: reply))) }
            case .data: throw ClientError.handshakeFailed
            }
        }
        let box = SharedSession(session)
        ready.withLockedValue { $0?.resume(); $0 = nil }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await item in self.outgoingStream {
                    switch item {
                    case .plaintext(let bytes):
                        let frame = try box.wrap(bytes)
                        try await outbound.write(.binary(ByteBuffer(bytes: frame)))
                    case .raw(let bytes):
                        try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                    case .close:
                        try await outbound.close(.normalClosure, reason: nil)
                        return
                    }
                }
            }
            defer { group.cancelAll() }
            while let frame = try await frames.next() {
                guard case .binary(let buffer) = frame,
                      case .data(let plaintext) = try box.receive(Array(buffer.readableBytesView)) else { throw ClientError.unexpectedReply("not a data message") }
                switch try ServerFrame(plaintext) {
                case .message(let message):
                    if let id = message.id, let waiter = pending.withLockedValue({ $0.waiters.removeValue(forKey: id) }) {
                        waiter.resume(returning: message)
                    } else {
                        pushSink.yield(message)
                    }
                case .refused(let id):
                    if let id, let waiter = pending.withLockedValue({ $0.waiters.removeValue(forKey: id) }) {
                        waiter.resume(throwing: ClientError.unexpectedReply("a reply of the wrong shape"))
                    }
                }
            }
        }
    }

    private func finish(_ error: any Error) {
        ready.withLockedValue { $0?.resume(throwing: error); $0 = nil }
        let waiters = pending.withLockedValue { table in
            defer { table = ([:], true) }
            return Array(table.waiters.values)
        }
        for waiter in waiters { waiter.resume(throwing: ClientError.connectionClosed) }
        pushSink.finish()
        outgoing.finish()
        closedSignal.continuation.finish()
    }

    /// Sends `request` with a fresh id; returns the reply, or throws the server's `HushError`.
    @discardableResult
    public func request(_ request: WireMessage) async throws -> WireMessage {
        let reply = try await exchange(request)
        if reply.type == "error" {
            throw HushError(ErrorCode(rawValue: reply.code ?? "") ?? .internal, reply.message ?? "", epoch: reply.epoch)
        }
        return reply
    }

    /// Like `request` but returns an `error` reply as it is. Fails with `timedOut` when no
    /// reply comes within `timeout`, and with `connectionClosed` when the connection ends first.
    public func exchange(_ request: WireMessage, timeout: Duration = HushConnection.requestTimeout) async throws -> WireMessage {
        var request = request
        let id = request.id ?? "r\(nextID.wrappingAdd(1, ordering: .relaxed).oldValue)"
        request.id = id
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.pending.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume(throwing: ClientError.timedOut)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let registered = pending.withLockedValue { table in
                guard !table.closed else { return false }
                table.waiters[id] = continuation
                return true
            }
            guard registered else { return continuation.resume(throwing: ClientError.connectionClosed) }
            outgoing.yield(.plaintext(request.encoded()))
        }
    }

    /// Sends a plaintext inside the session without waiting for a reply (tests).
    public func sendPlaintext(_ bytes: [UInt8]) { outgoing.yield(.plaintext(bytes)) }

    /// Sends a frame as it is, outside the session (tests).
    public func sendRawFrame(_ bytes: [UInt8]) { outgoing.yield(.raw(bytes)) }

    public func close() { outgoing.yield(.close) }

    /// Waits until the connection has ended.
    public func waitUntilClosed() async {
        for await _ in closedSignal.stream {}
    }

    public var isClosed: Bool { pending.withLockedValue { $0.closed } }
}
