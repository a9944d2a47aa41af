import Crypto
import Foundation
import Testing
@testable import ThemisKit

/// Runs every entry of every vector file made with real Themis 0.15, positive and negative.
@Suite("Themis vectors", .timeLimit(.minutes(5)))
struct ThemisKitVectorTests {
    @Test("Soter KDF reproduces every recorded output")
    func soterKDF() throws {
        let vectors = try Vectors.entries("soter_kdf.json")
        for vector in vectors {
            let key = vector.bytes("key").map { SymmetricKey(data: $0) }
            let contexts = try #require(vector["contexts"] as? [String]).compactMap { [UInt8](hex: $0) }
            let expected = try #require(vector.bytes("output_32"))
            let label = try #require(vector.string("label"))
            #expect(SoterKDF.derive(key: key, label: label, contexts: contexts, outputByteCount: 32) == expected, "\(vector["id"]!)")
            #expect(SoterKDF.derive(key: key, label: label, contexts: contexts, outputByteCount: 4) == Array(expected.prefix(4)))
        }
        #expect(!vectors.isEmpty)
        VectorCounter.shared.add("soter_kdf.json", vectors.count)
    }

    @Test("key pairs parse, re-export byte-exactly and work in every accepted form")
    func keyPairs() throws {
        let pairs = try Vectors.entries("keys.json", "key_pairs")
        for pair in pairs {
            let privateBytes = try #require(pair.bytes("private_key"))
            let publicBytes = try #require(pair.bytes("public_key"))
            let privateKey = try ThemisPrivateKey(containerBytes: privateBytes)
            let publicKey = try ThemisPublicKey(containerBytes: publicBytes)
            #expect(privateKey.containerBytes == privateBytes)
            #expect(publicKey.containerBytes == publicBytes)
            #expect(privateKey.publicKey.containerBytes == publicBytes)
            #expect(Array(privateKey.signingKey.rawRepresentation) == pair.bytes("private_scalar"))
            #expect(Array(publicKey.signingKey.compressedRepresentation) == pair.bytes("public_point_compressed"))

            let uncompressed = try ThemisPublicKey(containerBytes: try #require(pair.bytes("public_key_uncompressed_container")))
            #expect(uncompressed == publicKey)
            #expect(uncompressed.containerBytes.count == 77)
            let shortPrivate = try ThemisPrivateKey(containerBytes: try #require(pair.bytes("private_key_32byte_container")))
            #expect(shortPrivate.containerBytes == privateBytes)

            let signed = try SecureMessage.sign(Array("key check".utf8), with: shortPrivate)
            #expect(try SecureMessage.verify(signed, with: uncompressed) == Array("key check".utf8))
            #expect(try SecureMessage.verify(signed, with: publicKey) == Array("key check".utf8))
        }
        VectorCounter.shared.add("keys.json", pairs.count)
    }

    @Test("every invalid key is refused in the role it was tried in")
    func invalidKeys() throws {
        let keys = try Vectors.entries("keys.json", "invalid_keys")
        let signer = try ThemisPrivateKey(containerBytes: try #require(
            try Vectors.entries("keys.json", "key_pairs").first?.bytes("private_key")))
        let validSigned = try SecureMessage.sign(Array("hello".utf8), with: signer)
        for entry in keys {
            let bytes = try #require(entry.bytes("key"))
            let id = entry.string("id") ?? "?"
            switch entry.string("used_as") {
            case "public":
                #expect(throws: ThemisError.self, "\(id)") {
                    _ = try SecureMessage.verify(validSigned, with: try ThemisPublicKey(containerBytes: bytes))
                }
            case "private":
                #expect(throws: ThemisError.self, "\(id)") {
                    _ = try SecureMessage.sign(Array("hello".utf8), with: try ThemisPrivateKey(containerBytes: bytes))
                }
            default:
                Issue.record("unknown role in \(id)")
            }
        }
        VectorCounter.shared.add("keys.json (invalid)", keys.count)
    }

    @Test("Secure Cell Seal and passphrase Seal: every vector")
    func seal() throws {
        let vectors = try Vectors.entries("secure_cell_seal.json")
        for vector in vectors {
            let id = vector.string("id") ?? "?"
            let expectation = vector.string("expect")
            let context = vector.context("context")
            let decryptContext = vector["decrypt_context"] == nil ? context : vector.context("decrypt_context")
            let passphraseMode = vector.string("mode") == "seal_passphrase"
            let message = vector.bytes("plaintext") ?? []
            let sealed = vector.bytes("ciphertext") ?? []

            func open() throws -> [UInt8] {
                if passphraseMode {
                    return try SecureCell.PassphraseSeal(passphrase: vector.passphrase).decrypt(sealed, context: decryptContext)
                }
                return try SecureCell.Seal(key: SymmetricKey(data: vector.bytes("key") ?? [])).decrypt(sealed, context: decryptContext)
            }

            switch (vector.string("operation"), expectation) {
            case ("encrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") {
                    if passphraseMode {
                        _ = try SecureCell.PassphraseSeal(passphrase: vector.passphrase).encrypt(message, context: context)
                    } else {
                        _ = try SecureCell.Seal(key: SymmetricKey(data: vector.bytes("key") ?? [])).encrypt(message, context: context)
                    }
                }
            case (_, "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try open() }
            case (let operation, "ok"):
                #expect(try open() == message, "\(id)")
                guard operation == nil else { break }
                // Re-encrypt with the recorded IV (and salt) and compare byte for byte.
                let (token, _) = try CellCore.splitSealed(sealed)
                let header = try CellHeader(parsing: token, messageLength: message.count, passphrase: passphraseMode)
                if let (iterations, salt) = header.pbkdf2 {
                    let again = try SecureCell.PassphraseSeal(passphrase: vector.passphrase).encrypt(
                        message, context: context, iv: Array(header.iv), salt: Array(salt), iterations: iterations)
                    #expect(again == sealed, "\(id)")
                } else {
                    let again = try SecureCell.Seal(key: SymmetricKey(data: try #require(vector.bytes("key"))))
                        .encrypt(message, context: context, iv: Array(header.iv))
                    #expect(again == sealed, "\(id)")
                }
            default:
                Issue.record("unhandled vector \(id)")
            }
        }
        VectorCounter.shared.add("secure_cell_seal.json", vectors.count)
    }

    @Test("Secure Cell Token Protect: every vector")
    func tokenProtect() throws {
        let vectors = try Vectors.entries("secure_cell_token_protect.json")
        for vector in vectors {
            let id = vector.string("id") ?? "?"
            let context = vector.context("context")
            let message = vector.bytes("plaintext") ?? []
            let ciphertext = vector.bytes("ciphertext") ?? []
            let token = vector.bytes("token") ?? []
            let cell = { () throws(ThemisError) in try SecureCell.TokenProtect(key: SymmetricKey(data: vector.bytes("key") ?? [])) }
            switch (vector.string("operation"), vector.string("expect")) {
            case ("encrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try cell().encrypt(message, context: context) }
            case ("decrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try cell().decrypt(ciphertext, token: token, context: context) }
            case (nil, "ok"):
                #expect(try cell().decrypt(ciphertext, token: token, context: context) == message, "\(id)")
                let iv = Array(token[16..<28])
                let again = try cell().encrypt(message, context: context, iv: iv)
                #expect(again.ciphertext == ciphertext && again.token == token, "\(id)")
            default:
                Issue.record("unhandled vector \(id)")
            }
        }
        VectorCounter.shared.add("secure_cell_token_protect.json", vectors.count)
    }

    @Test("Secure Cell Context Imprint: every vector, garbage included")
    func contextImprint() throws {
        let vectors = try Vectors.entries("secure_cell_context_imprint.json")
        for vector in vectors {
            let id = vector.string("id") ?? "?"
            let context = vector.context("context")
            let cell = { () throws(ThemisError) in try SecureCell.ContextImprint(key: SymmetricKey(data: vector.bytes("key") ?? [])) }
            switch (vector.string("operation"), vector.string("expect")) {
            case ("encrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try cell().encrypt(vector.bytes("plaintext") ?? [], context: context) }
            case ("decrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try cell().decrypt(vector.bytes("ciphertext") ?? [], context: context) }
            case ("decrypt", "garbage"):
                let ciphertext = try #require(vector.bytes("ciphertext"))
                let output = try cell().decrypt(ciphertext, context: context)
                #expect(output == vector.bytes("decrypted"), "\(id)")
                #expect(output != vector.bytes("plaintext_if_valid"), "\(id)")
            case (nil, "ok"):
                let message = try #require(vector.bytes("plaintext"))
                let ciphertext = try #require(vector.bytes("ciphertext"))
                #expect(try cell().encrypt(message, context: context) == ciphertext, "\(id)")
                #expect(try cell().decrypt(ciphertext, context: context) == message, "\(id)")
            default:
                Issue.record("unhandled vector \(id)")
            }
        }
        VectorCounter.shared.add("secure_cell_context_imprint.json", vectors.count)
    }

    @Test("Secure Message encrypt, decrypt, sign and verify: every vector")
    func secureMessage() throws {
        let vectors = try Vectors.entries("secure_message.json")
        for vector in vectors {
            let id = vector.string("id") ?? "?"
            let message = vector.bytes("plaintext") ?? vector.bytes("output") ?? []
            func privateKey(_ field: String) throws -> ThemisPrivateKey { try ThemisPrivateKey(containerBytes: vector.bytes(field) ?? []) }
            func publicKey(_ field: String) throws -> ThemisPublicKey { try ThemisPublicKey(containerBytes: vector.bytes(field) ?? []) }

            switch (vector.string("mode"), vector.string("operation"), vector.string("expect")) {
            case ("encrypt", "encrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") {
                    _ = try SecureMessage.encrypt(message, from: privateKey("sender_private"), to: publicKey("recipient_public"))
                }
            case ("sign", "sign", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try SecureMessage.sign(message, with: privateKey("signer_private")) }
            case ("encrypt", "decrypt", "error"):
                #expect(throws: ThemisError.self, "\(id)") {
                    _ = try SecureMessage.decrypt(vector.bytes("ciphertext") ?? [], by: privateKey("recipient_private"), from: publicKey("sender_public"))
                }
            case ("sign", "verify", "error"):
                #expect(throws: ThemisError.self, "\(id)") { _ = try SecureMessage.verify(vector.bytes("signed") ?? [], with: publicKey("signer_public")) }
            case ("encrypt", nil, "ok"):
                let encrypted = try #require(vector.bytes("ciphertext"))
                #expect(try SecureMessage.kind(of: encrypted) == .encrypted)
                #expect(try SecureMessage.decrypt(encrypted, by: privateKey("recipient_private"), from: publicKey("sender_public")) == message, "\(id)")
                // ECDH is symmetric: the sender can open it too.
                #expect(try SecureMessage.decrypt(encrypted, by: privateKey("sender_private"), from: publicKey("recipient_public")) == message, "\(id)")
                let again = try SecureMessage.encrypt(
                    message, from: privateKey("sender_private"), to: publicKey("recipient_public"), iv: Array(encrypted[24..<36]))
                #expect(again == encrypted, "\(id)")
            case ("sign", _, "ok"):
                let signed = try #require(vector.bytes("signed"))
                #expect(try SecureMessage.kind(of: signed) == .signed)
                #expect(try SecureMessage.verify(signed, with: publicKey("signer_public")) == message, "\(id)")
                if let signer = vector.bytes("signer_private") {
                    let fresh = try SecureMessage.sign(message, with: ThemisPrivateKey(containerBytes: signer))
                    #expect(try SecureMessage.verify(fresh, with: publicKey("signer_public")) == message, "\(id)")
                }
            default:
                Issue.record("unhandled vector \(id)")
            }
        }
        VectorCounter.shared.add("secure_message.json", vectors.count)
    }
}

extension Dictionary where Key == String, Value == Any {
    /// The vector files write "no context" as JSON null or the string "None"; both mean none,
    /// which Themis treats exactly like an empty context.
    func context(_ key: String) -> [UInt8] {
        guard let value = self[key] as? String, value != "None" else { return [] }
        return [UInt8](hex: value) ?? []
    }

    var passphrase: [UInt8] {
        bytes("passphrase_utf8") ?? Array((string("passphrase") ?? "").utf8)
    }
}
