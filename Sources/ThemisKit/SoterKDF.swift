import Crypto

/// Themis' key derivation: one HMAC-SHA-256 block over `00000001 ‖ label ‖ 00 ‖ contexts…`,
/// truncated. Not HKDF and without RFC 6189's trailing length.
///
/// A value holds the HMAC state after the key and the label are absorbed, so a Secure Cell
/// deriving one key per message pays for the key setup once, not per message.
struct SoterKDF: Sendable {
    private let keyedPrefix: HMAC<SHA256>

    init(key: SymmetricKey, label: String) {
        var hmac = HMAC<SHA256>(key: key)
        Self.absorbPrefix(label, into: &hmac)
        keyedPrefix = hmac
    }

    /// The first `outputByteCount` (1 to 32) bytes for these contexts, concatenated in order.
    func derive(_ contexts: [UInt8]..., outputByteCount: Int) -> [UInt8] {
        precondition((1...32).contains(outputByteCount), "Soter KDF yields 1 to 32 bytes")
        var hmac = keyedPrefix
        for context in contexts { hmac.update(data: context) }
        return Array(hmac.finalize().prefix(outputByteCount))
    }

    /// A Secure Cell message key: contexts `LE32(length)` and `context`, without building
    /// either into an array (this runs once per cell).
    func messageKey(length: UInt32, context: [UInt8], byteCount: Int) -> SymmetricKey {
        precondition((1...32).contains(byteCount), "Soter KDF yields 1 to 32 bytes")
        var hmac = keyedPrefix
        withUnsafeBytes(of: length.littleEndian) { hmac.update(data: $0) }
        hmac.update(data: context)
        let output = hmac.finalize()
        return byteCount == 32 ? SymmetricKey(data: output) : output.withUnsafeBytes { SymmetricKey(data: $0.prefix(byteCount)) }
    }

    /// One derivation; without a key, the implicit-key mode used only for the Secure Session id.
    static func derive(
        key: SymmetricKey?, label: String, contexts: [[UInt8]], outputByteCount: Int
    ) -> [UInt8] {
        precondition((1...32).contains(outputByteCount), "Soter KDF yields 1 to 32 bytes")
        var hmac = HMAC<SHA256>(key: key ?? implicitKey(label: label, contexts: contexts))
        absorbPrefix(label, into: &hmac)
        for context in contexts { hmac.update(data: context) }
        return Array(hmac.finalize().prefix(outputByteCount))
    }

    private static func absorbPrefix(_ label: String, into hmac: inout HMAC<SHA256>) {
        hmac.update(data: [0, 0, 0, 1])
        hmac.update(data: Array(label.utf8))
        hmac.update(data: [0])
    }

    /// Without a key, Themis XORs the label and the first 32 bytes of each context into a
    /// 32-byte key.
    private static func implicitKey(label: String, contexts: [[UInt8]]) -> SymmetricKey {
        var key = [UInt8](repeating: 0, count: 32)
        for (index, byte) in label.utf8.prefix(32).enumerated() { key[index] = byte }
        for context in contexts {
            for (index, byte) in context.prefix(32).enumerated() { key[index] ^= byte }
        }
        return SymmetricKey(data: key)
    }
}
