import Crypto

/// The secrets a Secure Session handshake agrees on (wire format §6.4): the 4 session-id bytes
/// and the master key. Everything else — the handshake MACs, both message keys and both
/// initial sequence numbers — is derived from these two, once.
struct SessionKeySchedule: Sendable {
    /// The raw Soter KDF output. Used as-is in KDF contexts and MACs; data messages carry it
    /// reversed (see `DataChannel.sessionIDOnWire`).
    let sessionIDBytes: [UInt8]
    let masterKey: SymmetricKey

    init(sessionIDBytes: [UInt8], masterKey: SymmetricKey) {
        self.sessionIDBytes = sessionIDBytes
        self.masterKey = masterKey
    }

    /// Runs the schedule from a completed handshake transcript and the raw ECDH output of the
    /// two ephemeral keys.
    init(transcript: HandshakeTranscript, sharedSecret: SymmetricKey) {
        sessionIDBytes = Self.sessionIDBytes(for: transcript)
        masterKey = SymmetricKey(data: SoterKDF.derive(
            key: sharedSecret, label: "Themis secure session master key",
            contexts: [sessionIDBytes], outputByteCount: 32))
    }

    /// Implicit-key Soter KDF over `Ceph, Seph, Cid, Sid`: public values only, so a passive
    /// observer (or a test) can compute it too.
    static func sessionIDBytes(for transcript: HandshakeTranscript) -> [UInt8] {
        SoterKDF.derive(key: nil, label: "Themis secure session unique identifier",
                        contexts: transcript.sessionIDContexts, outputByteCount: 4)
    }

    /// `HMAC(MK, ephemeral ‖ SID)`: message 3 carries it over the server's ephemeral key,
    /// message 4 over the client's.
    func finishMAC(over ephemeral: [UInt8]) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: masterKey)
        hmac.update(data: ephemeral)
        hmac.update(data: sessionIDBytes)
        return Array(hmac.finalize())
    }

    /// The data channel of an established session. `outgoing`/`incoming` override the initial
    /// sequence numbers when resuming a saved state.
    func dataChannel(isClient: Bool, outgoing: UInt32? = nil, incoming: UInt32? = nil) -> DataChannel {
        let clientKey = derive("Themis secure session client key", 32)
        let serverKey = derive("Themis secure session server key", 32)
        let clientSeq = readLE32(derive("Themis secure session client initial sequence number", 4))
        let serverSeq = readLE32(derive("Themis secure session server initial sequence number", 4))
        return DataChannel(
            sessionIDOnWire: sessionIDBytes.reversed(),
            sendKey: SymmetricKey(data: isClient ? clientKey : serverKey),
            receiveKey: SymmetricKey(data: isClient ? serverKey : clientKey),
            sendSequence: outgoing ?? (isClient ? clientSeq : serverSeq),
            receiveWindow: SequenceWindow(initial: incoming ?? (isClient ? serverSeq : clientSeq)),
            nonces: NonceSource(outgoing == nil ? .counter : .random))
    }

    private func derive(_ label: String, _ count: Int) -> [UInt8] {
        SoterKDF.derive(key: masterKey, label: label, contexts: [sessionIDBytes], outputByteCount: count)
    }

    /// Themis stores the raw KDF bytes into a native integer; on the little-endian hosts it
    /// runs on, that is a little-endian read.
    private func readLE32(_ bytes: [UInt8]) -> UInt32 {
        bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
}
