import Crypto
import Foundation

/// A Themis EC P-256 public key (`UEC2` container). Accepts the 45-byte compressed and the
/// 77-byte uncompressed forms Themis accepts; always exports the 45-byte compressed form
/// Themis generates.
public struct ThemisPublicKey: Sendable, Hashable {
    let signingKey: P256.Signing.PublicKey
    /// The key exactly as received or generated (a 77-byte key stays 77 bytes).
    public let containerBytes: [UInt8]

    public init<Bytes: DataProtocol>(containerBytes bytes: Bytes) throws(ThemisError) {
        let bytes = Array(bytes)
        let container = try SoterContainer(parsing: bytes)
        guard container.hasTag("UEC2") else {
            throw container.tag.starts(with: Array("UEC".utf8)) ? .unsupportedAlgorithm : .unexpectedTag
        }
        do {
            switch container.payload.count {
            case 33: signingKey = try P256.Signing.PublicKey(compressedRepresentation: container.payload)
            case 65 where container.payload.first == 0x04:
                signingKey = try P256.Signing.PublicKey(x963Representation: container.payload)
            default: throw ThemisError.invalidKey
            }
        } catch {
            throw .invalidKey
        }
        containerBytes = bytes
    }

    init(_ key: P256.Signing.PublicKey) {
        signingKey = key
        containerBytes = SoterContainer(tag: "UEC2", payload: Array(key.compressedRepresentation)).serialized
    }

    var agreementKey: P256.KeyAgreement.PublicKey {
        // Same point, another swift-crypto type: Themis uses one key for ECDSA and ECDH.
        try! P256.KeyAgreement.PublicKey(x963Representation: signingKey.x963Representation)
    }

    /// A short, human-comparable digest of the key: the first 10 bytes of SHA-256 over the
    /// container, as five space-separated groups of four hex digits. The web client computes
    /// the same string.
    public var fingerprint: String { Self.fingerprint(of: containerBytes) }

    static func fingerprint(of bytes: [UInt8]) -> String {
        let digest = Array(SHA256.hash(data: bytes).prefix(10))
        return stride(from: 0, to: 10, by: 2)
            .map { String(format: "%02x%02x", digest[$0], digest[$0 + 1]) }
            .joined(separator: " ")
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.signingKey.x963Representation == rhs.signingKey.x963Representation
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(signingKey.x963Representation)
    }
}

/// A Themis EC P-256 private key (`REC2` container). The same scalar serves ECDSA and ECDH.
public struct ThemisPrivateKey: Sendable {
    let signingKey: P256.Signing.PrivateKey
    let agreementKey: P256.KeyAgreement.PrivateKey

    /// A fresh random key: a uniformly random scalar in [1, n−1] from the system CSPRNG.
    ///
    /// Drawn here rather than by `P256.Signing.PrivateKey()`, which runs a FIPS pairwise
    /// consistency test and retries for "compact representable" keys: ten times the cost, for
    /// properties Hush does not use (it always exports compressed points). Out-of-range draws
    /// (probability ≈ 2⁻³²) are rejected and drawn again.
    public init() {
        var generator = SystemRandomNumberGenerator()
        while true {
            var scalar: [UInt8] = []
            for _ in 0..<4 { scalar.appendBE64(generator.next()) }
            guard Self.isValidScalar(scalar[...]),
                  let signing = try? P256.Signing.PrivateKey(rawRepresentation: scalar),
                  let agreement = try? P256.KeyAgreement.PrivateKey(rawRepresentation: scalar)
            else { continue }
            signingKey = signing
            agreementKey = agreement
            return
        }
    }

    /// Parses a 45-byte (`00 ‖ d`) or 44-byte (`d`) `REC2` container. Stricter than Themis: the
    /// padding byte must be zero and `d` must lie in [1, n−1].
    public init<Bytes: DataProtocol>(containerBytes bytes: Bytes) throws(ThemisError) {
        let container = try SoterContainer(parsing: Array(bytes))
        guard container.hasTag("REC2") else {
            throw container.tag.starts(with: Array("REC".utf8)) ? .unsupportedAlgorithm : .unexpectedTag
        }
        let scalar: ArraySlice<UInt8>
        switch container.payload.count {
        case 33 where container.payload[0] == 0: scalar = container.payload[1...]
        case 32: scalar = container.payload[...]
        default: throw .invalidKey
        }
        guard Self.isValidScalar(scalar) else { throw .invalidKey }
        do {
            signingKey = try P256.Signing.PrivateKey(rawRepresentation: scalar)
            agreementKey = try P256.KeyAgreement.PrivateKey(rawRepresentation: scalar)
        } catch {
            throw .invalidKey
        }
    }

    /// The 45-byte container Themis generates.
    public var containerBytes: [UInt8] {
        SoterContainer(tag: "REC2", payload: [0] + Array(signingKey.rawRepresentation)).serialized
    }

    public var publicKey: ThemisPublicKey { ThemisPublicKey(signingKey.publicKey) }

    private static let groupOrder: [UInt8] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
    ]

    private static func isValidScalar(_ scalar: ArraySlice<UInt8>) -> Bool {
        guard scalar.contains(where: { $0 != 0 }) else { return false }
        return scalar.lexicographicallyPrecedes(groupOrder)
    }

    /// The raw ECDH output Themis uses: the 32-byte X coordinate, with no KDF applied.
    func sharedSecret(with peer: ThemisPublicKey) throws(ThemisError) -> SymmetricKey {
        do {
            let secret = try agreementKey.sharedSecretFromKeyAgreement(with: peer.agreementKey)
            return secret.withUnsafeBytes { SymmetricKey(data: $0) }
        } catch {
            throw .invalidKey
        }
    }
}
