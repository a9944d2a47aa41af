import Crypto
import Foundation
import Testing
@testable import ThemisKit

/// Random round trips for every mode, and random damage to valid cells and messages, which
/// must always throw a `ThemisError` — never crash, never decrypt.
@Suite("Themis properties", .timeLimit(.minutes(5)))
struct ThemisKitPropertyTests {
    static func randomBytes(_ range: ClosedRange<Int>) -> [UInt8] {
        CellCore.randomBytes(Int.random(in: range))
    }

    /// Every single-bit flip position is too many for large inputs; a random sample plus the
    /// header bytes (where parsing decisions are made) covers what matters.
    static func damaged(_ valid: [UInt8], samples: Int = 40) -> [[UInt8]] {
        var out: [[UInt8]] = []
        let headerPositions = Array(0..<min(valid.count, 72))
        let positions = headerPositions + (0..<samples).map { _ in Int.random(in: 0..<valid.count) }
        for position in positions {
            var flipped = valid
            flipped[position] ^= UInt8(1) << UInt8.random(in: 0...7)
            out.append(flipped)
        }
        for _ in 0..<8 { out.append(Array(valid.prefix(Int.random(in: 0..<valid.count)))) }
        out.append(valid + [0])
        out.append(valid + randomBytes(1...32))
        return out
    }

    @Test("Seal round trips and rejects every damaged cell")
    func seal() throws {
        for _ in 0..<60 {
            let key = SymmetricKey(data: Self.randomBytes(1...64))
            let context = Bool.random() ? Self.randomBytes(1...40) : []
            let message = Self.randomBytes(1...2048)
            let cell = try SecureCell.Seal(key: key)
            let sealed = try cell.encrypt(message, context: context)
            #expect(sealed.count == message.count + 44)
            #expect(try cell.decrypt(sealed, context: context) == message)
            for bad in Self.damaged(sealed) {
                #expect(throws: ThemisError.self) { _ = try cell.decrypt(bad, context: context) }
            }
            #expect(throws: ThemisError.authenticationFailed) { _ = try cell.decrypt(sealed, context: context + [1]) }
        }
    }

    @Test("Token Protect round trips and rejects damaged tokens and ciphertexts")
    func tokenProtect() throws {
        for _ in 0..<40 {
            let cell = try SecureCell.TokenProtect(key: SymmetricKey(size: .bits256))
            let context = Bool.random() ? Self.randomBytes(1...40) : []
            let message = Self.randomBytes(1...1024)
            let (ciphertext, token) = try cell.encrypt(message, context: context)
            #expect(ciphertext.count == message.count && token.count == 44)
            #expect(try cell.decrypt(ciphertext, token: token, context: context) == message)
            for bad in Self.damaged(token) {
                #expect(throws: ThemisError.self) { _ = try cell.decrypt(ciphertext, token: bad, context: context) }
            }
            for bad in Self.damaged(ciphertext, samples: 10) {
                #expect(throws: ThemisError.self) { _ = try cell.decrypt(bad, token: token, context: context) }
            }
        }
    }

    @Test("Context Imprint is deterministic, length-preserving and reversible")
    func contextImprint() throws {
        for _ in 0..<60 {
            let cell = try SecureCell.ContextImprint(key: SymmetricKey(data: Self.randomBytes(1...64)))
            let context = Self.randomBytes(1...40)
            let message = Self.randomBytes(1...2048)
            let encrypted = try cell.encrypt(message, context: context)
            #expect(encrypted.count == message.count)
            #expect(try cell.encrypt(message, context: context) == encrypted)
            #expect(try cell.decrypt(encrypted, context: context) == message)
            #expect(try cell.decrypt(encrypted, context: context + [0]) != message)
        }
    }

    @Test("passphrase Seal round trips and rejects damaged cells")
    func passphraseSeal() throws {
        // Few rounds keep the test fast; the vectors cover the real 314,110-round cells.
        for _ in 0..<12 {
            let cell = try SecureCell.PassphraseSeal(passphrase: String(decoding: Self.randomBytes(1...20).map { 0x61 + $0 % 26 }, as: UTF8.self))
            let message = Self.randomBytes(1...512)
            let sealed = try cell.encrypt(message, context: [], iv: CellCore.randomIV(), salt: CellCore.randomBytes(16), iterations: 1000)
            #expect(sealed.count == message.count + 70)
            #expect(try cell.decrypt(sealed) == message)
            for bad in Self.damaged(sealed, samples: 8) {
                #expect(throws: ThemisError.self) { _ = try cell.decrypt(bad) }
            }
        }
        let sealed = try SecureCell.PassphraseSeal(passphrase: "default rounds").encrypt(Array("x".utf8))
        #expect(Array(sealed[48..<52]) == [UInt8].le32(314_110))
    }

    @Test("an iteration count beyond the cap is refused without deriving")
    func iterationCap() throws {
        let cell = try SecureCell.PassphraseSeal(passphrase: "p")
        var sealed = try cell.encrypt(Array("x".utf8), context: [], iv: CellCore.randomIV(), salt: CellCore.randomBytes(16), iterations: 1000)
        sealed.replaceSubrange(48..<52, with: [UInt8].le32(SecureCell.PassphraseSeal.maximumIterations + 1))
        #expect(throws: ThemisError.invalidParameter) { _ = try cell.decrypt(sealed) }
    }

    @Test("Secure Message encrypt and sign round trip and reject damage")
    func secureMessage() throws {
        for _ in 0..<20 {
            let alice = ThemisPrivateKey()
            let bob = ThemisPrivateKey()
            let message = Self.randomBytes(1...1024)
            let encrypted = try SecureMessage.encrypt(message, from: alice, to: bob.publicKey)
            #expect(encrypted.count == message.count + 52)
            #expect(try SecureMessage.decrypt(encrypted, by: bob, from: alice.publicKey) == message)
            #expect(throws: ThemisError.self) { _ = try SecureMessage.decrypt(encrypted, by: ThemisPrivateKey(), from: alice.publicKey) }
            for bad in Self.damaged(encrypted, samples: 10) {
                #expect(throws: ThemisError.self) { _ = try SecureMessage.decrypt(bad, by: bob, from: alice.publicKey) }
            }

            let signed = try SecureMessage.sign(message, with: alice)
            #expect(try SecureMessage.verify(signed, with: alice.publicKey) == message)
            #expect(throws: ThemisError.invalidSignature) { _ = try SecureMessage.verify(signed, with: bob.publicKey) }
            // Bytes past the signature are tolerated (Themis compatibility); everything else must fail.
            let bodyEnd = signed.count
            for position in (0..<bodyEnd).shuffled().prefix(60) {
                var flipped = signed
                flipped[position] ^= 0x01
                #expect(throws: ThemisError.self) { _ = try SecureMessage.verify(flipped, with: alice.publicKey) }
            }
            for length in [0, 4, 11, 12, signed.count - 1] {
                #expect(throws: ThemisError.self) { _ = try SecureMessage.verify(Array(signed.prefix(length)), with: alice.publicKey) }
            }
        }
    }

    @Test("generated keys round trip through their containers")
    func keys() throws {
        for _ in 0..<50 {
            let key = ThemisPrivateKey()
            #expect(key.containerBytes.count == 45 && key.containerBytes[12] == 0)
            #expect(key.publicKey.containerBytes.count == 45)
            let parsed = try ThemisPrivateKey(containerBytes: key.containerBytes)
            #expect(parsed.publicKey == key.publicKey)
            #expect(try ThemisPublicKey(containerBytes: key.publicKey.containerBytes).containerBytes == key.publicKey.containerBytes)
            for bad in Self.damaged(key.publicKey.containerBytes, samples: 0) {
                #expect(throws: ThemisError.self) { _ = try ThemisPublicKey(containerBytes: bad) }
            }
        }
    }

    @Test("fingerprints are short, stable and distinct")
    func fingerprint() {
        let key = ThemisPrivateKey().publicKey
        #expect(key.fingerprint.count == 24)
        #expect(key.fingerprint.split(separator: " ").count == 5)
        #expect(key.fingerprint == ThemisPublicKey(key.signingKey).fingerprint)
        #expect(key.fingerprint != ThemisPrivateKey().publicKey.fingerprint)
    }

    @Test("CRC-32C and container encoding match the known answers")
    func containers() throws {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        let container = SoterContainer(tag: "TSID", payload: Array("client".utf8))
        #expect(container.serialized == [UInt8](hex: "54534944000000124a5d0d03636c69656e74"))
        #expect(try SoterContainer(parsing: container.serialized) == container)
        var shortSize = container.serialized
        shortSize[7] = 11
        #expect(throws: ThemisError.lengthMismatch) { _ = try SoterContainer(parsing: shortSize) }
        #expect(throws: ThemisError.badChecksum) { _ = try SoterContainer(parsing: Array(container.serialized.dropLast()) + [0x75]) }
        #expect(throws: ThemisError.trailingBytes) { _ = try SoterContainer(parsing: container.serialized + [0]) }
    }

    @Test("empty inputs are refused the way Themis refuses them")
    func emptyInputs() throws {
        #expect(throws: ThemisError.emptyInput) { _ = try SecureCell.Seal(key: SymmetricKey(data: [UInt8]())) }
        #expect(throws: ThemisError.emptyInput) { _ = try SecureCell.PassphraseSeal(passphrase: "") }
        let seal = try SecureCell.Seal(key: SymmetricKey(size: .bits256))
        #expect(throws: ThemisError.emptyInput) { _ = try seal.encrypt([UInt8]()) }
        #expect(throws: ThemisError.emptyInput) { _ = try seal.decrypt([UInt8]()) }
        #expect(throws: ThemisError.emptyInput) { _ = try SecureMessage.sign([UInt8](), with: ThemisPrivateKey()) }
        #expect(throws: ThemisError.emptyInput) { _ = try SecureMessage.encrypt([UInt8](), from: ThemisPrivateKey(), to: ThemisPrivateKey().publicKey) }
    }
}
