import Crypto
import Foundation

/// Themis Secure Message with EC keys: encryption between two key pairs (a Seal cell keyed by
/// the raw ECDH secret) and ECDSA signing. The first four bytes tell the two apart.
public enum SecureMessage {
    public enum Kind: Sendable, Equatable {
        case encrypted
        case signed
    }

    static let encryptedType: UInt32 = 0x2604_2720
    static let signedType: UInt32 = 0x2604_2620

    /// Which mode produced `message`, from its header alone.
    public static func kind<Message: DataProtocol>(of message: Message) throws(ThemisError) -> Kind {
        var reader = ByteReader(Array(message.prefix(4)))
        switch try reader.readLE32() {
        case encryptedType: return .encrypted
        case signedType: return .signed
        default: throw .unsupportedAlgorithm
        }
    }

    /// Encrypts `message` from `sender` to `recipient`. ECDH is symmetric, so either party can
    /// open it (Themis binds no direction).
    public static func encrypt<Message: DataProtocol>(
        _ message: Message, from sender: ThemisPrivateKey, to recipient: ThemisPublicKey
    ) throws(ThemisError) -> [UInt8] {
        try encrypt(message, from: sender, to: recipient, iv: CellCore.randomIV())
    }

    static func encrypt<Message: DataProtocol>(
        _ message: Message, from sender: ThemisPrivateKey, to recipient: ThemisPublicKey, iv: [UInt8]
    ) throws(ThemisError) -> [UInt8] {
        let cell = try SecureCell.Seal(key: sender.sharedSecret(with: recipient)).encrypt(message, context: [], iv: iv)
        var out: [UInt8] = []
        out.reserveCapacity(8 + cell.count)
        out.appendLE32(encryptedType)
        out.appendLE32(UInt32(8 + cell.count))
        return out + cell
    }

    /// Opens a message encrypted between `recipient` (our key) and `sender`. The length field
    /// must match the input exactly, as Themis requires.
    public static func decrypt<Message: DataProtocol>(
        _ message: Message, by recipient: ThemisPrivateKey, from sender: ThemisPublicKey
    ) throws(ThemisError) -> [UInt8] {
        let bytes = byteArray(message)
        guard !bytes.isEmpty else { throw .emptyInput }
        var reader = ByteReader(bytes)
        guard try reader.readLE32() == encryptedType else { throw .unsupportedAlgorithm }
        guard try reader.readLE32() == bytes.count else { throw .lengthMismatch }
        guard reader.remainingCount > 0 else { throw .truncated }
        return try SecureCell.Seal(key: recipient.sharedSecret(with: sender)).decrypt(reader.readRest())
    }

    /// Signs `message` (which travels in clear) with a DER ECDSA-SHA256 signature.
    public static func sign<Message: DataProtocol>(_ message: Message, with signer: ThemisPrivateKey) throws(ThemisError) -> [UInt8] {
        let message = byteArray(message)
        guard !message.isEmpty else { throw .emptyInput }
        guard message.count <= UInt32.max else { throw .invalidParameter }
        let signature: [UInt8]
        do {
            signature = Array(try signer.signingKey.signature(for: message).derRepresentation)
        } catch {
            throw .invalidKey
        }
        var out: [UInt8] = []
        out.reserveCapacity(12 + message.count + signature.count)
        out.appendLE32(signedType)
        out.appendLE32(UInt32(message.count))
        out.appendLE32(UInt32(signature.count))
        return out + message + signature
    }

    /// Verifies a signed message and returns its content. Bytes after the signature are
    /// ignored, as Themis does, for messages from old wrappers that appended two bytes.
    public static func verify<Message: DataProtocol>(_ signed: Message, with signer: ThemisPublicKey) throws(ThemisError) -> [UInt8] {
        let bytes = byteArray(signed)
        guard !bytes.isEmpty else { throw .emptyInput }
        var reader = ByteReader(bytes)
        guard try reader.readLE32() == signedType else { throw .unsupportedAlgorithm }
        let messageCount = Int(try reader.readLE32())
        let signatureCount = Int(try reader.readLE32())
        guard messageCount > 0 else { throw .emptyInput }
        // An empty signature is a signature that does not verify (as the JS client says).
        guard signatureCount > 0 else { throw .invalidSignature }
        let message = try reader.read(messageCount)
        let signatureBytes = try reader.read(signatureCount)
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: signatureBytes),
              signer.signingKey.isValidSignature(signature, for: message)
        else { throw .invalidSignature }
        return Array(message)
    }
}
