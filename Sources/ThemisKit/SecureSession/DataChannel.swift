import Crypto
import _CryptoExtras
import Foundation

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
/// * The message is authenticated before its sequence number and timestamp are trusted, so a
///   forged frame always reports `.authenticationFailed` (or the length it claims), never a
///   window error.
/// * An authenticated message with an empty payload is rejected (`.emptyInput`); Themis never
///   produces one.
///
/// Sending, the IV field is `random(4) ‖ BE64(counter) ‖ random(4)`, the random bytes drawn once
/// per session: a counter-based GCM nonce (NIST SP 800-38D §8.2.1) never repeats under the
/// session's fresh key, and costs no system call per message as 16 random bytes would. The
/// receiver never interprets the IV, so Themis peers are unaffected.
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
    private let ivSalt: UInt64
    private var ivCounter: UInt64 = 0

    init(sessionIDOnWire: [UInt8], sendKey: SymmetricKey, receiveKey: SymmetricKey,
         sendSequence: UInt32, receiveWindow: SequenceWindow) {
        self.sessionIDOnWire = sessionIDOnWire
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.sendSequence = sendSequence
        self.receiveWindow = receiveWindow
        var generator = SystemRandomNumberGenerator()
        ivSalt = generator.next()
    }

    /// Encrypts with the next counter-based IV field.
    mutating func wrap(_ message: [UInt8], timestamp: UInt64) throws(ThemisError) -> [UInt8] {
        let (salt, counter) = (ivSalt, ivCounter)
        let out = try wrap(message, timestamp: timestamp) { out in
            out.appendBE32(UInt32(truncatingIfNeeded: salt >> 32))
            out.appendBE64(counter)
            out.appendBE32(UInt32(truncatingIfNeeded: salt))
        }
        ivCounter += 1
        return out
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
            throw failureReason(message)
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

    /// Names why a message failed GCM verification. The (unauthenticated) length field says
    /// where the tag should be; if that is not at the end, the frame was cut short or has bytes
    /// appended. GCM's first data block is encrypted with counter block `nonce ‖ 00000002`.
    private func failureReason(_ message: [UInt8]) -> ThemisError {
        var keystream = Array(message[4..<(4 + Self.nonceCount)]) + [0, 0, 0, 2]
        guard (try? AES.permute(&keystream, key: receiveKey)) != nil else { return .authenticationFailed }
        let field = (0..<4).map { keystream[$0] ^ message[Self.headerCount + $0] }
        let announced = Int(Self.readBE(field, 0, as: UInt32.self))
        let carried = message.count - Self.overhead + 12
        if announced > carried { return .truncated }
        if announced < carried { return .trailingBytes }
        return .authenticationFailed
    }

    private static func readBE<T: FixedWidthInteger, Bytes: Collection<UInt8>>(
        _ bytes: Bytes, _ offset: Int, as: T.Type
    ) -> T where Bytes.Index == Int {
        let start = bytes.startIndex + offset
        return bytes[start..<(start + T.bitWidth / 8)].reduce(0) { $0 << 8 | T($1) }
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
