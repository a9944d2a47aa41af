import Crypto
import _CryptoExtras
import Foundation

/// Themis Secure Cell: symmetric encryption in Seal, Token Protect and Context Imprint modes,
/// and Seal with a passphrase. Encryption always writes Themis 0.15's defaults (AES-256-GCM,
/// 12-byte IV, 16-byte tag); decryption honours the AES-128/192 key sizes and the PBKDF2
/// parameters a header may carry.
public enum SecureCell {}

extension SecureCell {
    /// Seal mode: `header ‖ ciphertext`, authenticated, with an optional context as AAD.
    public struct Seal: Sendable {
        let kdf: SoterKDF

        public init(key: SymmetricKey) throws(ThemisError) {
            guard key.bitCount > 0 else { throw .emptyInput }
            kdf = SoterKDF(key: key, label: CellCore.keyLabel)
        }

        public func encrypt<Message: DataProtocol>(_ message: Message, context: [UInt8] = []) throws(ThemisError) -> [UInt8] {
            try encrypt(message, context: context, iv: CellCore.randomIV())
        }

        func encrypt<Message: DataProtocol>(_ message: Message, context: [UInt8], iv: [UInt8]) throws(ThemisError) -> [UInt8] {
            try CellCore.seal(
                byteArray(message), kdf: kdf, algorithm: CellCore.masterKeyAlgorithm, context: context, iv: iv
            ).sealed
        }

        public func decrypt<Sealed: DataProtocol>(_ sealed: Sealed, context: [UInt8] = []) throws(ThemisError) -> [UInt8] {
            let (token, ciphertext) = try CellCore.splitSealed(byteArray(sealed))
            let header = try CellHeader(parsing: token, messageLength: ciphertext.count, passphrase: false)
            return try CellCore.open(ciphertext, header: header, kdf: kdf, context: context)
        }
    }

    /// Token Protect mode: the Seal header is returned separately as an authentication token
    /// and the ciphertext keeps the plaintext's length.
    public struct TokenProtect: Sendable {
        let kdf: SoterKDF

        public init(key: SymmetricKey) throws(ThemisError) {
            guard key.bitCount > 0 else { throw .emptyInput }
            kdf = SoterKDF(key: key, label: CellCore.keyLabel)
        }

        public func encrypt<Message: DataProtocol>(
            _ message: Message, context: [UInt8] = []
        ) throws(ThemisError) -> (ciphertext: [UInt8], token: [UInt8]) {
            try encrypt(message, context: context, iv: CellCore.randomIV())
        }

        func encrypt<Message: DataProtocol>(
            _ message: Message, context: [UInt8], iv: [UInt8]
        ) throws(ThemisError) -> (ciphertext: [UInt8], token: [UInt8]) {
            let (sealed, tokenCount) = try CellCore.seal(
                byteArray(message), kdf: kdf, algorithm: CellCore.masterKeyAlgorithm, context: context, iv: iv)
            return (Array(sealed[tokenCount...]), Array(sealed[..<tokenCount]))
        }

        public func decrypt<Ciphertext: DataProtocol, Token: DataProtocol>(
            _ ciphertext: Ciphertext, token: Token, context: [UInt8] = []
        ) throws(ThemisError) -> [UInt8] {
            let ciphertext = byteArray(ciphertext)
            guard !ciphertext.isEmpty else { throw .emptyInput }
            let header = try CellHeader(parsing: byteArray(token)[...], messageLength: ciphertext.count, passphrase: false)
            return try CellCore.open(ciphertext[...], header: header, kdf: kdf, context: context)
        }
    }

    /// Context Imprint mode: deterministic, length-preserving and **unauthenticated**
    /// (AES-256-CTR). A wrong key or context yields garbage, not an error.
    public struct ContextImprint: Sendable {
        let kdf: SoterKDF

        public init(key: SymmetricKey) throws(ThemisError) {
            guard key.bitCount > 0 else { throw .emptyInput }
            kdf = SoterKDF(key: key, label: CellCore.keyLabel)
        }

        public func encrypt<Message: DataProtocol>(_ message: Message, context: [UInt8]) throws(ThemisError) -> [UInt8] {
            let message = byteArray(message)
            guard !message.isEmpty, !context.isEmpty else { throw .emptyInput }
            guard message.count <= UInt32.max else { throw .invalidParameter }
            let key = kdf.derive(.le32(UInt32(message.count)), outputByteCount: 32)
            let iv = SoterKDF.derive(
                key: SymmetricKey(data: key), label: "Themis secure cell message iv", contexts: [context], outputByteCount: 16)
            do {
                return Array(try AES._CTR.encrypt(message, using: SymmetricKey(data: key), nonce: .init(nonceBytes: iv)))
            } catch {
                throw .invalidParameter
            }
        }

        /// Decryption is the same keystream applied again.
        public func decrypt<Ciphertext: DataProtocol>(_ ciphertext: Ciphertext, context: [UInt8]) throws(ThemisError) -> [UInt8] {
            try encrypt(ciphertext, context: context)
        }
    }

    /// Seal mode keyed by a passphrase through PBKDF2-HMAC-SHA256.
    public struct PassphraseSeal: Sendable {
        /// What Themis 0.15 writes into new cells.
        public static let defaultIterations: UInt32 = 314_110
        static let saltCount = 16
        /// Iteration counts come from untrusted headers; more than this is refused to bound CPU.
        public static let maximumIterations: UInt32 = 5_000_000

        let passphrase: [UInt8]

        public init<Passphrase: DataProtocol>(passphrase: Passphrase) throws(ThemisError) {
            self.passphrase = byteArray(passphrase)
            guard !self.passphrase.isEmpty else { throw .emptyInput }
        }

        /// String passphrases are UTF-8 encoded, as every Themis wrapper does.
        public init(passphrase: String) throws(ThemisError) {
            try self.init(passphrase: Array(passphrase.utf8))
        }

        public func encrypt<Message: DataProtocol>(_ message: Message, context: [UInt8] = []) throws(ThemisError) -> [UInt8] {
            try encrypt(message, context: context, iterations: Self.defaultIterations)
        }

        /// With a chosen PBKDF2 iteration count (1…`maximumIterations`); the header carries it,
        /// so any Themis decrypts the cell.
        public func encrypt<Message: DataProtocol>(_ message: Message, context: [UInt8] = [],
                                                   iterations: UInt32) throws(ThemisError) -> [UInt8] {
            guard (1...Self.maximumIterations).contains(iterations) else { throw .invalidParameter }
            return try encrypt(message, context: context, iv: CellCore.randomIV(),
                               salt: CellCore.randomBytes(Self.saltCount), iterations: iterations)
        }

        func encrypt<Message: DataProtocol>(
            _ message: Message, context: [UInt8], iv: [UInt8], salt: [UInt8], iterations: UInt32
        ) throws(ThemisError) -> [UInt8] {
            let prekey = try derivePrekey(salt: salt[...], iterations: iterations)
            return try CellCore.seal(
                byteArray(message), kdf: SoterKDF(key: prekey, label: CellCore.keyLabel),
                algorithm: CellCore.passphraseAlgorithm, context: context, iv: iv, pbkdf2: (iterations, salt[...])
            ).sealed
        }

        public func decrypt<Sealed: DataProtocol>(_ sealed: Sealed, context: [UInt8] = []) throws(ThemisError) -> [UInt8] {
            let (token, ciphertext) = try CellCore.splitSealed(byteArray(sealed))
            let header = try CellHeader(parsing: token, messageLength: ciphertext.count, passphrase: true)
            guard let (iterations, salt) = header.pbkdf2 else { throw .invalidParameter }
            let prekey = try derivePrekey(salt: salt, iterations: iterations)
            return try CellCore.open(ciphertext, header: header, kdf: SoterKDF(key: prekey, label: CellCore.keyLabel), context: context)
        }

        private func derivePrekey(salt: ArraySlice<UInt8>, iterations: UInt32) throws(ThemisError) -> SymmetricKey {
            guard iterations > 0, iterations <= Self.maximumIterations else { throw .invalidParameter }
            do {
                // swift-crypto refuses fewer than 210,000 rounds; Themis 0.13–0.14 cells carry 200,000.
                return try KDF.Insecure.PBKDF2.deriveKey(
                    from: passphrase, salt: salt, using: .sha256, outputByteCount: 32,
                    unsafeUncheckedRounds: Int(iterations))
            } catch {
                throw .invalidParameter
            }
        }
    }
}

/// The authentication token of Seal, Token Protect and passphrase Seal.
struct CellHeader {
    var algorithm: UInt32
    var iv: ArraySlice<UInt8>
    var tag: ArraySlice<UInt8>
    var messageLength: UInt32
    var pbkdf2: (iterations: UInt32, salt: ArraySlice<UInt8>)?

    init(algorithm: UInt32, iv: ArraySlice<UInt8>, tag: ArraySlice<UInt8>, messageLength: UInt32) {
        self.algorithm = algorithm
        self.iv = iv
        self.tag = tag
        self.messageLength = messageLength
    }

    /// Parses a token strictly: it must be exactly what Themis writes in shape (12-byte IV,
    /// 16-byte tag, nothing after), for the expected key kind, and name `messageLength` bytes.
    init(parsing token: ArraySlice<UInt8>, messageLength: Int, passphrase: Bool) throws(ThemisError) {
        var reader = ByteReader(token)
        algorithm = try reader.readLE32()
        let ivCount = try reader.readLE32()
        let tagCount = try reader.readLE32()
        self.messageLength = try reader.readLE32()
        let kdfCount = passphrase ? try reader.readLE32() : 0
        guard Int(self.messageLength) == messageLength else { throw .lengthMismatch }
        keyByteCount = try Self.validate(algorithm: algorithm, passphrase: passphrase)
        guard ivCount == CellCore.ivCount, tagCount == CellCore.tagCount else { throw .invalidParameter }
        iv = try reader.read(Int(ivCount))
        tag = try reader.read(Int(tagCount))
        if passphrase {
            var kdf = ByteReader(try reader.read(Int(kdfCount)))
            let iterations = try kdf.readLE32()
            let saltCount = try kdf.readLE16()
            let salt = try kdf.read(Int(saltCount))
            guard kdf.remainingCount == 0 else { throw .trailingBytes }
            pbkdf2 = (iterations, salt)
        }
        guard reader.remainingCount == 0 else { throw .trailingBytes }
    }

    private(set) var keyByteCount = 32

    /// Checks an algorithm id the way Themis decodes it and returns the AES key length.
    static func validate(algorithm: UInt32, passphrase: Bool) throws(ThemisError) -> Int {
        guard algorithm & 0x00F0_F000 == 0, algorithm & 0xF00F_0000 == 0x4001_0000 else { throw .unsupportedAlgorithm }
        guard (algorithm >> 24) & 0xF == (passphrase ? 1 : 0) else { throw .unsupportedAlgorithm }
        switch algorithm & 0xFFF {
        case 128, 192, 256: return Int(algorithm & 0xFFF) / 8
        default: throw .unsupportedAlgorithm
        }
    }

    var count: Int { 16 + (pbkdf2.map { 4 + 6 + $0.salt.count } ?? 0) + iv.count + tag.count }

    func append(to out: inout [UInt8]) {
        out.appendLE32(algorithm)
        out.appendLE32(UInt32(iv.count))
        out.appendLE32(UInt32(tag.count))
        out.appendLE32(messageLength)
        if let (iterations, salt) = pbkdf2 {
            out.appendLE32(UInt32(4 + 2 + salt.count))
            out += iv
            out += tag
            out.appendLE32(iterations)
            out.appendLE16(UInt16(salt.count))
            out += salt
        } else {
            out += iv
            out += tag
        }
    }
}

/// The AES-GCM core shared by every authenticated cell mode.
enum CellCore {
    static let masterKeyAlgorithm: UInt32 = 0x4001_0100
    static let passphraseAlgorithm: UInt32 = 0x4101_0100
    static let ivCount: UInt32 = 12
    static let tagCount: UInt32 = 16
    static let keyLabel = "Themis secure cell message key"

    /// Eight bytes per draw: each draw is a system call, so drawing byte by byte cost more
    /// than encrypting a small cell.
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count + 7)
        while bytes.count < count { bytes.appendBE64(generator.next()) }
        bytes.removeLast(bytes.count - count)
        return bytes
    }

    static func randomIV() -> [UInt8] { randomBytes(Int(ivCount)) }

    /// Encrypts into one buffer, `token ‖ ciphertext`, and says where the token ends.
    static func seal(
        _ message: [UInt8], kdf: SoterKDF, algorithm: UInt32, context: [UInt8], iv: [UInt8],
        pbkdf2: (iterations: UInt32, salt: ArraySlice<UInt8>)? = nil
    ) throws(ThemisError) -> (sealed: [UInt8], tokenCount: Int) {
        guard !message.isEmpty else { throw .emptyInput }
        guard message.count <= UInt32.max else { throw .invalidParameter }
        let key = kdf.messageKey(length: UInt32(message.count), context: context, byteCount: 32)
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(message, using: key, nonce: AES.GCM.Nonce(data: iv), authenticating: context)
        } catch {
            throw .invalidParameter
        }
        var header = CellHeader(algorithm: algorithm, iv: iv[...], tag: Array(box.tag)[...], messageLength: UInt32(message.count))
        header.pbkdf2 = pbkdf2
        var sealed: [UInt8] = []
        sealed.reserveCapacity(header.count + message.count)
        header.append(to: &sealed)
        box.ciphertext.withUnsafeBytes { sealed.append(contentsOf: $0) }
        return (sealed, header.count)
    }

    /// Themis finds the ciphertext from the end, using the header's message length.
    static func splitSealed(_ sealed: [UInt8]) throws(ThemisError) -> (token: ArraySlice<UInt8>, ciphertext: ArraySlice<UInt8>) {
        guard !sealed.isEmpty else { throw .emptyInput }
        var reader = ByteReader(sealed, offset: 12)
        let messageLength = Int(try reader.readLE32())
        guard messageLength > 0 else { throw .emptyInput }
        guard messageLength <= sealed.count - 16 else { throw .truncated }
        let split = sealed.count - messageLength
        return (sealed[..<split], sealed[split...])
    }

    static func open(
        _ ciphertext: ArraySlice<UInt8>, header: CellHeader, kdf: SoterKDF, context: [UInt8]
    ) throws(ThemisError) -> [UInt8] {
        let key = kdf.messageKey(length: UInt32(ciphertext.count), context: context, byteCount: header.keyByteCount)
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: header.iv), ciphertext: ciphertext, tag: header.tag)
            return try AES.GCM.open(box, using: key, authenticating: context).withUnsafeBytes { Array($0) }
        } catch {
            throw .authenticationFailed
        }
    }
}
