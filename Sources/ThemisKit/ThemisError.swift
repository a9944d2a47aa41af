/// Every way a Themis operation can fail. Each malformed input maps to one specific case,
/// so callers (and tests) can tell a truncated cell from a forged one.
public enum ThemisError: Error, Equatable, Sendable {
    /// A required input (message, key, passphrase, context where mandatory) was empty.
    case emptyInput
    /// The input ends before a structure it announces.
    case truncated
    /// A length field disagrees with the bytes actually present.
    case lengthMismatch
    /// Bytes follow the end of a structure where none are allowed.
    case trailingBytes
    /// A Soter container carries an unexpected tag.
    case unexpectedTag
    /// A Soter container's CRC-32C does not match its contents.
    case badChecksum
    /// A key container is structurally valid but not a usable P-256 key of the wanted kind.
    case invalidKey
    /// The header names an algorithm, key size or message type this implementation does not handle.
    case unsupportedAlgorithm
    /// A header field holds a value outside what the format allows (e.g. a PBKDF2 iteration count of zero).
    case invalidParameter
    /// AES-GCM authentication failed: wrong key or context, or tampered data.
    case authenticationFailed
    /// An ECDSA signature did not verify, or is not well-formed DER.
    case invalidSignature
    /// A Secure Session handshake MAC did not verify.
    case invalidMAC
    /// A Secure Session message arrived in a state that does not expect it.
    case unexpectedMessage
    /// The peer-key lookup did not know the id presented in a Secure Session handshake.
    case unknownPeer
    /// A Secure Session data message carries another session's id.
    case sessionMismatch
    /// A Secure Session data message repeats or goes back before an accepted sequence number.
    case replayedMessage
    /// A Secure Session data message's sequence number is too far ahead.
    case sequenceOutOfWindow
    /// A Secure Session data message's timestamp is outside the accepted window.
    case timestampOutOfWindow
    /// A Secure Session call its state does not allow: `wrap` before the handshake has
    /// completed, or `connectRequest` on a session that has already started one.
    case invalidState
}
