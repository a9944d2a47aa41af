import Crypto

/// An established session as Themis' `secure_session_save` writes it (wire format §6.6): a
/// `TSSC` container whose 48-byte payload is
/// `BE32(session id) ‖ BE32(is client) ‖ MK (32) ‖ BE32(out seq) ‖ BE32(in seq)`.
/// The message keys are not stored; they are re-derived from MK and the session id.
struct SavedSessionState: Sendable {
    static let tag = "TSSC"
    private static let payloadCount = 48

    let keySchedule: SessionKeySchedule
    let isClient: Bool
    let outgoingSequence: UInt32
    let incomingSequence: UInt32

    init(parsing blob: [UInt8]) throws(ThemisError) {
        let container = try SoterContainer(parsing: blob)
        guard container.hasTag(Self.tag) else { throw .unexpectedTag }
        guard container.payload.count == Self.payloadCount else { throw .lengthMismatch }
        var reader = ByteReader(container.payload)
        // The stored id is the big-endian numeric id, i.e. the KDF bytes reversed.
        let sessionIDBytes = Array(try reader.read(4).reversed())
        switch try reader.readBE32() {
        case 0: isClient = false
        case 1: isClient = true
        default: throw .invalidParameter
        }
        let masterKey = SymmetricKey(data: try reader.read(32))
        outgoingSequence = try reader.readBE32()
        incomingSequence = try reader.readBE32()
        keySchedule = SessionKeySchedule(sessionIDBytes: sessionIDBytes, masterKey: masterKey)
    }

    /// Themis saves the last *accepted* incoming number, or the peer's initial one if nothing
    /// arrived yet, and the blob does not say which; the restored window treats it as not yet
    /// received. Exact for a state saved right after the handshake (as in the recorded vectors);
    /// for a later save it would let the last message before the save be delivered once more.
    var dataChannel: DataChannel {
        keySchedule.dataChannel(isClient: isClient, outgoing: outgoingSequence, incoming: incomingSequence)
    }
}
