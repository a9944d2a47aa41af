import Crypto

/// The four values both sides of a Secure Session handshake agree on, and the byte strings the
/// handshake signs. The concatenation orders differ per message (wire format §6.2, §7 item 14);
/// keeping them here, side by side, is the point of this type.
struct HandshakeTranscript: Sendable {
    let clientID: [UInt8]
    let serverID: [UInt8]
    /// Full `UEC2` container bytes as sent, not bare points.
    let clientEphemeral: [UInt8]
    let serverEphemeral: [UInt8]

    /// Message 1's signature covers only the client's ephemeral key.
    var clientHelloSigned: [UInt8] { clientEphemeral }
    /// Message 2: `Seph ‖ Ceph ‖ Sid ‖ Cid`.
    var serverHelloSigned: [UInt8] { serverEphemeral + clientEphemeral + serverID + clientID }
    /// Message 3: `Ceph ‖ Seph ‖ Cid ‖ Sid`.
    var clientFinishSigned: [UInt8] { clientEphemeral + serverEphemeral + clientID + serverID }

    /// The session-id KDF contexts: `Ceph, Seph, Cid, Sid`.
    var sessionIDContexts: [[UInt8]] { [clientEphemeral, serverEphemeral, clientID, serverID] }

    static func sign(_ data: [UInt8], with key: ThemisPrivateKey) throws(ThemisError) -> [UInt8] {
        do {
            return Array(try key.signingKey.signature(for: data).derRepresentation)
        } catch {
            throw .invalidKey
        }
    }

    static func verify(_ signature: [UInt8], over data: [UInt8], with key: ThemisPublicKey) throws(ThemisError) {
        guard let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature),
              key.signingKey.isValidSignature(parsed, for: data)
        else { throw .invalidSignature }
    }
}
