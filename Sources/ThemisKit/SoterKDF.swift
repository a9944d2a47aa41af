import Crypto

/// Themis' key derivation: one HMAC-SHA-256 block over `00000001 ‖ label ‖ 00 ‖ contexts…`,
/// truncated. Not HKDF and without RFC 6189's trailing length.
enum SoterKDF {
    static func derive(
        key: SymmetricKey?, label: String, contexts: [[UInt8]], outputByteCount: Int
    ) -> [UInt8] {
        precondition((1...32).contains(outputByteCount), "Soter KDF yields 1 to 32 bytes")
        var hmac = HMAC<SHA256>(key: key ?? implicitKey(label: label, contexts: contexts))
        hmac.update(data: [0, 0, 0, 1])
        hmac.update(data: Array(label.utf8))
        hmac.update(data: [0])
        for context in contexts { hmac.update(data: context) }
        return Array(hmac.finalize().prefix(outputByteCount))
    }

    /// Without a key, Themis XORs the label and the first 32 bytes of each context into a
    /// 32-byte key. Only the Secure Session id uses this.
    private static func implicitKey(label: String, contexts: [[UInt8]]) -> SymmetricKey {
        var key = [UInt8](repeating: 0, count: 32)
        for (index, byte) in label.utf8.prefix(32).enumerated() { key[index] = byte }
        for context in contexts {
            for (index, byte) in context.prefix(32).enumerated() { key[index] ^= byte }
        }
        return SymmetricKey(data: key)
    }
}
