import Foundation

/// Themis Secure Session (wire format §6), byte-compatible with Themis 0.15, as a sans-IO
/// state machine: feed it every frame the peer sends, send back what it returns.
///
/// A new session is a potential server; `connectRequest()` makes it a client. The handshake
/// is four `TSPM` messages (client 1 → server, 2 ←, 3 →, 4 ←); after it both sides exchange
/// data messages with `wrap(_:)` and `receive(_:)`.
///
/// It is a value with no I/O, threads or global state; the clock (and, for tests, the
/// ephemeral key and IVs) are injected. Copies share the source of sending nonces, so no GCM
/// nonce is ever used twice, but each keeps its own sequence numbers: use one per connection. Any frame that fails — malformed, forged, replayed,
/// or arriving in the wrong state — throws a specific `ThemisError` and leaves the session
/// exactly as it was, so a bad frame from an attacker cannot desynchronise a good session.
///
/// Where Themis is lax this implementation is stricter, without rejecting anything a correct
/// Themis peer sends: see `HandshakeFrame` (parsing), `DataChannel` and `SequenceWindow`
/// (data messages), and `docs/SECURE_SESSION.md`.
public struct SecureSession: Sendable {
    /// Returns the long-term public key of the peer with this id, or nil if it is unknown.
    /// The server asks with the client's id (message 1), the client with the server's (message 2).
    public typealias PeerKeyLookup = @Sendable (_ peerID: [UInt8]) -> ThemisPublicKey?

    public enum Event: Sendable, Equatable {
        /// Handshake bytes to send to the peer (messages 2 and 3).
        case reply([UInt8])
        /// The handshake is complete. Server: message 4, to send; client: nil.
        case established(reply: [UInt8]?)
        /// A decrypted data message.
        case data([UInt8])
    }

    private enum State: Sendable {
        case accepting
        /// Client, message 1 sent.
        case awaitingServerHello
        /// Client, message 3 sent: message 4 must carry `expectedMAC`.
        case awaitingServerFinish(expectedMAC: [UInt8], channel: DataChannel)
        /// Server, message 2 sent.
        case awaitingClientFinish(transcript: HandshakeTranscript, clientEphemeral: ThemisPublicKey, clientKey: ThemisPublicKey)
        case established(DataChannel)
    }

    private let id: [UInt8]
    private let privateKey: ThemisPrivateKey
    private let peerKeyLookup: PeerKeyLookup
    private let clock: @Sendable () -> UInt64
    /// One ephemeral ECDH key per session object, made when it is created (as Themis does).
    private let ephemeralKey: ThemisPrivateKey
    private let ephemeralContainer: [UInt8]
    private var state: State

    public private(set) var isClient: Bool
    /// The peer's id, once message 1 (on the server) or message 2 (on the client) has verified.
    public private(set) var peerID: [UInt8]?
    public private(set) var peerPublicKey: ThemisPublicKey?

    /// - Parameters:
    ///   - id: this side's non-empty id, sent in clear in the handshake.
    ///   - clock: Unix time in seconds, stamped into data messages and checked (±1 day) on receipt.
    public init(
        id: [UInt8], privateKey: ThemisPrivateKey, peerKeyLookup: @escaping PeerKeyLookup,
        clock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970) }
    ) {
        self.init(id: id, privateKey: privateKey, peerKeyLookup: peerKeyLookup, clock: clock,
                  ephemeralKey: ThemisPrivateKey())
    }

    /// With a chosen ephemeral key, to replay a recorded handshake.
    init(
        id: [UInt8], privateKey: ThemisPrivateKey, peerKeyLookup: @escaping PeerKeyLookup,
        clock: @escaping @Sendable () -> UInt64, ephemeralKey: ThemisPrivateKey
    ) {
        precondition(!id.isEmpty, "a Secure Session id must not be empty")
        self.id = id
        self.privateKey = privateKey
        self.peerKeyLookup = peerKeyLookup
        self.clock = clock
        self.ephemeralKey = ephemeralKey
        ephemeralContainer = ephemeralKey.publicKey.containerBytes
        state = .accepting
        isClient = false
    }

    /// An established session resumed from a Themis `TSSC` saved state (see `SavedSessionState`
    /// for how the incoming window is restored). The peer's id and key are not part of it.
    init(
        restoring savedState: [UInt8], id: [UInt8], privateKey: ThemisPrivateKey,
        peerKeyLookup: @escaping PeerKeyLookup, clock: @escaping @Sendable () -> UInt64
    ) throws(ThemisError) {
        let saved = try SavedSessionState(parsing: savedState)
        self.init(id: id, privateKey: privateKey, peerKeyLookup: peerKeyLookup, clock: clock)
        state = .established(saved.dataChannel)
        isClient = saved.isClient
    }

    public var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    /// Starts the handshake as the client and returns message 1. Only valid on a fresh session.
    public mutating func connectRequest() throws(ThemisError) -> [UInt8] {
        guard case .accepting = state else { throw .invalidState }
        let signature = try HandshakeTranscript.sign(ephemeralContainer, with: privateKey)
        let message = HandshakeHello.serialize(id: id, ephemeral: ephemeralContainer, signature: signature)
        isClient = true
        state = .awaitingServerHello
        return message
    }

    /// Handles any frame from the peer: the next handshake message, or (once established) a
    /// data message.
    public mutating func receive(_ message: [UInt8]) throws(ThemisError) -> Event {
        switch state {
        case .established(var channel):
            let plaintext = try channel.unwrap(message, now: clock())
            state = .established(channel)
            return .data(plaintext)
        case .accepting:
            return .reply(try acceptClientHello(HandshakeFrame(parsing: message)))
        case .awaitingServerHello:
            return .reply(try acceptServerHello(HandshakeFrame(parsing: message)))
        case let .awaitingClientFinish(transcript, clientEphemeral, clientKey):
            let reply = try acceptClientFinish(
                HandshakeFrame(parsing: message), transcript: transcript,
                clientEphemeral: clientEphemeral, clientKey: clientKey)
            return .established(reply: reply)
        case let .awaitingServerFinish(expectedMAC, channel):
            let frame = try HandshakeFrame(parsing: message)
            guard !frame.isHello else { throw .unexpectedMessage }
            guard constantTimeEquals(try HandshakeServerFinish(frame).mac, expectedMAC) else { throw .invalidMAC }
            state = .established(channel)
            return .established(reply: nil)
        }
    }

    /// Encrypts a non-empty data message for the peer. Throws `.invalidState` before the
    /// handshake has completed.
    public mutating func wrap(_ plaintext: [UInt8]) throws(ThemisError) -> [UInt8] {
        let now = clock()
        return try withEstablishedChannel { channel throws(ThemisError) in try channel.wrap(plaintext, timestamp: now) }
    }

    /// With a chosen 16-byte IV field, to reproduce recorded messages.
    mutating func wrap(_ plaintext: [UInt8], iv: [UInt8]) throws(ThemisError) -> [UInt8] {
        let now = clock()
        return try withEstablishedChannel { channel throws(ThemisError) in try channel.wrap(plaintext, timestamp: now, iv: iv) }
    }

    private mutating func withEstablishedChannel(
        _ body: (inout DataChannel) throws(ThemisError) -> [UInt8]
    ) throws(ThemisError) -> [UInt8] {
        guard case .established(var channel) = state else { throw .invalidState }
        let message = try body(&channel)
        state = .established(channel)
        return message
    }

    // MARK: Handshake steps. Each computes everything first and changes state last.

    /// Server, message 1 → message 2.
    private mutating func acceptClientHello(_ frame: HandshakeFrame) throws(ThemisError) -> [UInt8] {
        guard frame.isHello else { throw .unexpectedMessage }
        let hello = try HandshakeHello(frame)
        guard let clientKey = peerKeyLookup(hello.id) else { throw .unknownPeer }
        let transcript = HandshakeTranscript(
            clientID: hello.id, serverID: id,
            clientEphemeral: hello.ephemeral.containerBytes, serverEphemeral: ephemeralContainer)
        try HandshakeTranscript.verify(hello.signature, over: transcript.clientHelloSigned, with: clientKey)
        let signature = try HandshakeTranscript.sign(transcript.serverHelloSigned, with: privateKey)
        let reply = HandshakeHello.serialize(id: id, ephemeral: ephemeralContainer, signature: signature)
        peerID = hello.id
        peerPublicKey = clientKey
        state = .awaitingClientFinish(transcript: transcript, clientEphemeral: hello.ephemeral, clientKey: clientKey)
        return reply
    }

    /// Client, message 2 → message 3.
    private mutating func acceptServerHello(_ frame: HandshakeFrame) throws(ThemisError) -> [UInt8] {
        guard frame.isHello else { throw .unexpectedMessage }
        let hello = try HandshakeHello(frame)
        guard let serverKey = peerKeyLookup(hello.id) else { throw .unknownPeer }
        let transcript = HandshakeTranscript(
            clientID: id, serverID: hello.id,
            clientEphemeral: ephemeralContainer, serverEphemeral: hello.ephemeral.containerBytes)
        try HandshakeTranscript.verify(hello.signature, over: transcript.serverHelloSigned, with: serverKey)
        let keys = try SessionKeySchedule(transcript: transcript, sharedSecret: ephemeralKey.sharedSecret(with: hello.ephemeral))
        let signature = try HandshakeTranscript.sign(transcript.clientFinishSigned, with: privateKey)
        let reply = HandshakeClientFinish.serialize(signature: signature, mac: keys.finishMAC(over: transcript.serverEphemeral))
        peerID = hello.id
        peerPublicKey = serverKey
        state = .awaitingServerFinish(
            expectedMAC: keys.finishMAC(over: transcript.clientEphemeral), channel: keys.dataChannel(isClient: true))
        return reply
    }

    /// Server, message 3 → message 4; established.
    private mutating func acceptClientFinish(
        _ frame: HandshakeFrame, transcript: HandshakeTranscript,
        clientEphemeral: ThemisPublicKey, clientKey: ThemisPublicKey
    ) throws(ThemisError) -> [UInt8] {
        guard !frame.isHello else { throw .unexpectedMessage }
        let finish = try HandshakeClientFinish(frame)
        try HandshakeTranscript.verify(finish.signature, over: transcript.clientFinishSigned, with: clientKey)
        let keys = try SessionKeySchedule(transcript: transcript, sharedSecret: ephemeralKey.sharedSecret(with: clientEphemeral))
        guard constantTimeEquals(finish.mac, keys.finishMAC(over: transcript.serverEphemeral)) else { throw .invalidMAC }
        let reply = HandshakeServerFinish.serialize(mac: keys.finishMAC(over: transcript.clientEphemeral))
        state = .established(keys.dataChannel(isClient: false))
        return reply
    }
}
