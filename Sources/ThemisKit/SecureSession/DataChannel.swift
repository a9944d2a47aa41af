import Crypto
import _CryptoExtras
import Foundation
import Synchronization

/// Data messages of an established Secure Session (wire format §6.5):
///
///     BE32(session id) ‖ IV (16) ‖ AES-256-GCM( BE32(len + 12) ‖ BE32(seq) ‖ BE64(time) ‖ message ) ‖ tag (16)
///
/// The GCM nonce is the first 12 IV bytes; the last 4 are unused filler (Themis hands a
/// 16-byte buffer to a 12-byte-IV cipher). There is no AAD, so the session id is not
/// authenticated — it only routes.
///
/// Deviations from Themis, all invisible to a correct Themis peer:
/// * The tag must end the message: Themis ignores bytes after it, we reject them
///   (`.trailingBytes`).
/// * Sequence numbers must increase (`SequenceWindow`): Themis accepts replays and reordering
///   within ±8.
/// * The message is authenticated before anything in it is trusted: a frame that fails GCM
///   reports `.authenticationFailed`, whatever it was (forged, cut short, bytes appended),
///   because nothing unauthenticated is decrypted to tell those apart.
/// * An authenticated message with an empty payload is rejected (`.emptyInput`); Themis never
///   produces one.
///
/// Sending, the IV field comes from `NonceSource`, which a copy of the channel shares, so two
/// copies of a session can never send under one GCM nonce. The receiver never interprets the
/// IV, so Themis peers are unaffected.
struct DataChannel: Sendable {
    static let overhead = 52
    static let ivCount = 16
    static let timeWindow: UInt64 = 86_400
    private static let headerCount = 20  // session id + IV, sent in clear
    private static let nonceCount = 12
    private static let tagCount = 16
    /// Length, sequence number and timestamp, encrypted in front of the message.
    private static let innerHeaderCount = 16

    let sessionIDOnWire: [UInt8]
    let sendKey: SymmetricKey
    let receiveKey: SymmetricKey
    private(set) var sendSequence: UInt32
    private(set) var receiveWindow: SequenceWindow
    private let nonces: NonceSource

    /// `nonces`: `.counter` under keys that are new to this channel (a handshake), `.random`
    /// under keys used before (a restored state), where a counter would start again at zero.
    init(sessionIDOnWire: [UInt8], sendKey: SymmetricKey, receiveKey: SymmetricKey,
         sendSequence: UInt32, receiveWindow: SequenceWindow, nonces: NonceSource) {
        self.sessionIDOnWire = sessionIDOnWire
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.sendSequence = sendSequence
        self.receiveWindow = receiveWindow
        self.nonces = nonces
    }

    /// Encrypts with the next IV field from the channel's nonce source.
    mutating func wrap(_ message: [UInt8], timestamp: UInt64) throws(ThemisError) -> [UInt8] {
        let nonces = nonces
        return try wrap(message, timestamp: timestamp) { nonces.appendNextIV(to: &$0) }
    }

    /// Encrypts with the given 16-byte IV field, to reproduce recorded messages.
    mutating func wrap(_ message: [UInt8], timestamp: UInt64, iv: [UInt8]) throws(ThemisError) -> [UInt8] {
        precondition(iv.count == Self.ivCount, "the session IV field is 16 bytes")
        return try wrap(message, timestamp: timestamp) { $0.append(contentsOf: iv) }
    }

    /// `appendIV` writes the 16-byte IV field straight into the output buffer.
    private mutating func wrap(
        _ message: [UInt8], timestamp: UInt64, appendIV: (inout [UInt8]) -> Void
    ) throws(ThemisError) -> [UInt8] {
        guard !message.isEmpty else { throw .emptyInput }
        guard message.count <= Int(UInt32.max) - 12 else { throw .invalidParameter }
        // Build the clear header and the plaintext in the output buffer, then encrypt the
        // plaintext region in place of itself: one allocation for the result.
        var out: [UInt8] = []
        out.reserveCapacity(Self.overhead + message.count)
        out.append(contentsOf: sessionIDOnWire)
        appendIV(&out)
        out.appendBE32(UInt32(message.count + 12))
        out.appendBE32(sendSequence)
        out.appendBE64(timestamp)
        out.append(contentsOf: message)
        do {
            let nonce = try AES.GCM.Nonce(data: out[4..<(4 + Self.nonceCount)])
            let sealed = try AES.GCM.seal(out[Self.headerCount...], using: sendKey, nonce: nonce)
            out.removeSubrange(Self.headerCount...)
            // Through raw buffers, so each is one copy whatever `Data` slice the box hands out.
            sealed.ciphertext.withUnsafeBytes { out.append(contentsOf: $0) }
            sealed.tag.withUnsafeBytes { out.append(contentsOf: $0) }
        } catch {
            throw .invalidKey
        }
        sendSequence &+= 1
        return out
    }

    /// Opens a data message. Throws without changing anything unless the message is
    /// authentic, in sequence and on time.
    mutating func unwrap(_ message: [UInt8], now: UInt64) throws(ThemisError) -> [UInt8] {
        guard message.count >= Self.overhead else { throw .truncated }
        guard message[..<4].elementsEqual(sessionIDOnWire) else { throw .sessionMismatch }
        let tagStart = message.count - Self.tagCount
        let plaintext: Data
        do {
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: message[4..<(4 + Self.nonceCount)]),
                ciphertext: message[Self.headerCount..<tagStart], tag: message[tagStart...])
            plaintext = try AES.GCM.open(box, using: receiveKey)
        } catch {
            throw .authenticationFailed
        }
        // Authentic from here on: a bad field means the peer framed it wrongly.
        guard Self.readBE(plaintext, 0, as: UInt32.self) == plaintext.count - 4 else { throw .lengthMismatch }
        guard plaintext.count > Self.innerHeaderCount else { throw .emptyInput }
        let sequence = Self.readBE(plaintext, 4, as: UInt32.self)
        try receiveWindow.check(sequence)
        let timestamp = Self.readBE(plaintext, 8, as: UInt64.self)
        guard (timestamp > now ? timestamp - now : now - timestamp) <= Self.timeWindow else {
            throw .timestampOutOfWindow
        }
        receiveWindow.accept(sequence)
        return Array(plaintext[(plaintext.startIndex + Self.innerHeaderCount)...])
    }

    private static func readBE<T: FixedWidthInteger, Bytes: Collection<UInt8>>(
        _ bytes: Bytes, _ offset: Int, as: T.Type
    ) -> T where Bytes.Index == Int {
        let start = bytes.startIndex + offset
        return bytes[start..<(start + T.bitWidth / 8)].reduce(0) { $0 << 8 | T($1) }
    }
}

/// Where a channel's GCM nonces come from. A reference, so that every copy of a channel (a
/// `SecureSession` is a value) draws from one source and no nonce is used twice under a key.
final class NonceSource: Sendable {
    enum Kind {
        /// `random(4) ‖ BE64(counter) ‖ random(4)`, the random bytes drawn once: a counter-based
        /// nonce (NIST SP 800-38D §8.2.1) that never repeats under a fresh key and costs no
        /// system call per message. Only the first 12 bytes are the nonce.
        case counter
        /// 16 random bytes per message (a 96-bit random nonce), for keys that may have been
        /// used before, as by a restored saved state.
        case random
    }

    private let kind: Kind
    private let salt: UInt64
    private let counter = Atomic<UInt64>(0)

    init(_ kind: Kind) {
        self.kind = kind
        var generator = SystemRandomNumberGenerator()
        salt = generator.next()
    }

    func appendNextIV(to out: inout [UInt8]) {
        switch kind {
        case .counter:
            let value = counter.wrappingAdd(1, ordering: .relaxed).oldValue
            out.appendBE32(UInt32(truncatingIfNeeded: salt >> 32))
            out.appendBE64(value)
            out.appendBE32(UInt32(truncatingIfNeeded: salt))
        case .random:
            var generator = SystemRandomNumberGenerator()
            out.appendBE64(generator.next())
            out.appendBE64(generator.next())
        }
    }
}

/// Which incoming sequence numbers a session accepts. Themis accepts anything within ±8 of
/// the last accepted number, replays included. We accept only numbers strictly after it and
/// at most 8 ahead (wrapping uint32 arithmetic), so replays and reordering are rejected while
/// up to 7 lost messages are tolerated. Before the first message, the peer's initial number
/// itself is acceptable, since Themis sends with it first.
struct SequenceWindow: Sendable, Equatable {
    static let size: UInt32 = 8

    private(set) var last: UInt32
    private var acceptedAny = false

    init(initial: UInt32) {
        last = initial
    }

    func check(_ sequence: UInt32) throws(ThemisError) {
        let ahead = sequence &- last
        if ahead <= Self.size && (ahead > 0 || !acceptedAny) { return }
        // Within 2^31 behind (or equal) reads as "already seen"; otherwise it is too far ahead.
        throw ahead == 0 || ahead > UInt32.max / 2 ? .replayedMessage : .sequenceOutOfWindow
    }

    mutating func accept(_ sequence: UInt32) {
        last = sequence
        acceptedAny = true
    }
}
