// themis-interop: a tiny JSON-over-stdio front end to ThemisKit, used by
// tests/js/interop.test.mjs to check that the Swift and JavaScript Themis implementations
// produce and open each other's bytes. See docs/themis-js.md, "Cross-implementation tests".
//
// Input (stdin): one JSON value, either a single operation object or an array of them.
// Output (stdout): one JSON value: the answer object, or an array of answers in order.
// Bytes are standard base64 (with padding) in both directions.
//
// An operation that fails inside ThemisKit answers {"error": "<ThemisError case>"} (for that
// element only, in a batch) and the process still exits 0. A request that cannot be understood
// (bad JSON, unknown op, missing field, bad base64) answers
// {"error": "badRequest", "message": "..."} and the process exits 2.
import Crypto
import Foundation
import ThemisKit

struct BadRequest: Error {
    let message: String
}

typealias JSONObject = [String: Any]

extension JSONObject {
    func string(_ name: String) throws(BadRequest) -> String {
        guard let value = self[name] as? String else { throw BadRequest(message: "missing string field '\(name)'") }
        return value
    }

    func bytes(_ name: String) throws(BadRequest) -> [UInt8] {
        let text = try string(name)
        guard let data = Data(base64Encoded: text) else { throw BadRequest(message: "field '\(name)' is not base64") }
        return Array(data)
    }

    /// An optional byte field: absent or null means "no context" (an empty context in ThemisKit).
    func optionalBytes(_ name: String) throws(BadRequest) -> [UInt8] {
        if self[name] == nil || self[name] is NSNull { return [] }
        return try bytes(name)
    }

    func key(_ name: String) throws(BadRequest) -> SymmetricKey {
        SymmetricKey(data: try bytes(name))
    }

    /// A passphrase as `passphrase` (a string, UTF-8 encoded) or `passphraseBytes` (base64).
    func passphrase() throws(BadRequest) -> [UInt8] {
        if let text = self["passphrase"] as? String { return Array(text.utf8) }
        return try bytes("passphraseBytes")
    }
}

func b64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

/// Runs one operation. ThemisError escapes as is; request problems as BadRequest.
func perform(_ request: JSONObject) throws -> JSONObject {
    let op = try request.string("op")
    switch op {
    case "generateKeyPair":
        let key = ThemisPrivateKey()
        return ["privateKey": b64(key.containerBytes), "publicKey": b64(key.publicKey.containerBytes),
                "fingerprint": key.publicKey.fingerprint]

    case "parsePublicKey":
        let key = try ThemisPublicKey(containerBytes: try request.bytes("key"))
        return ["fingerprint": key.fingerprint, "publicKey": b64(key.containerBytes)]

    case "parsePrivateKey":
        let key = try ThemisPrivateKey(containerBytes: try request.bytes("key"))
        return ["privateKey": b64(key.containerBytes), "publicKey": b64(key.publicKey.containerBytes),
                "fingerprint": key.publicKey.fingerprint]

    case "sealEncrypt":
        let cell = try SecureCell.Seal(key: try request.key("key"))
        return ["sealed": b64(try cell.encrypt(try request.bytes("message"), context: try request.optionalBytes("context")))]

    case "sealDecrypt":
        let cell = try SecureCell.Seal(key: try request.key("key"))
        return ["message": b64(try cell.decrypt(try request.bytes("sealed"), context: try request.optionalBytes("context")))]

    case "tokenProtectEncrypt":
        let cell = try SecureCell.TokenProtect(key: try request.key("key"))
        let (ciphertext, token) = try cell.encrypt(try request.bytes("message"), context: try request.optionalBytes("context"))
        return ["encrypted": b64(ciphertext), "token": b64(token)]

    case "tokenProtectDecrypt":
        let cell = try SecureCell.TokenProtect(key: try request.key("key"))
        let message = try cell.decrypt(
            try request.bytes("encrypted"), token: try request.bytes("token"), context: try request.optionalBytes("context"))
        return ["message": b64(message)]

    case "contextImprintEncrypt":
        let cell = try SecureCell.ContextImprint(key: try request.key("key"))
        return ["encrypted": b64(try cell.encrypt(try request.bytes("message"), context: try request.bytes("context")))]

    case "contextImprintDecrypt":
        let cell = try SecureCell.ContextImprint(key: try request.key("key"))
        return ["message": b64(try cell.decrypt(try request.bytes("encrypted"), context: try request.bytes("context")))]

    case "passphraseSealEncrypt":
        // ThemisKit's public API writes Themis' default PBKDF2 count and has no override, so
        // an `iterations` field is accepted only when it names that count. (Opening honours
        // whatever count the header carries, so cells made elsewhere with fewer rounds open.)
        if let iterations = request["iterations"], !(iterations is NSNull) {
            guard let count = iterations as? Int, count == Int(SecureCell.PassphraseSeal.defaultIterations) else {
                throw BadRequest(message:
                    "ThemisKit writes \(SecureCell.PassphraseSeal.defaultIterations) PBKDF2 rounds; no other count can be produced")
            }
        }
        let cell = try SecureCell.PassphraseSeal(passphrase: try request.passphrase())
        return ["sealed": b64(try cell.encrypt(try request.bytes("message"), context: try request.optionalBytes("context"))),
                "iterations": Int(SecureCell.PassphraseSeal.defaultIterations)]

    case "passphraseSealDecrypt":
        let cell = try SecureCell.PassphraseSeal(passphrase: try request.passphrase())
        return ["message": b64(try cell.decrypt(try request.bytes("sealed"), context: try request.optionalBytes("context")))]

    case "messageEncrypt":
        let sender = try ThemisPrivateKey(containerBytes: try request.bytes("privateKey"))
        let recipient = try ThemisPublicKey(containerBytes: try request.bytes("publicKey"))
        return ["encrypted": b64(try SecureMessage.encrypt(try request.bytes("message"), from: sender, to: recipient))]

    case "messageDecrypt":
        let recipient = try ThemisPrivateKey(containerBytes: try request.bytes("privateKey"))
        let sender = try ThemisPublicKey(containerBytes: try request.bytes("publicKey"))
        return ["message": b64(try SecureMessage.decrypt(try request.bytes("encrypted"), by: recipient, from: sender))]

    case "messageSign":
        let signer = try ThemisPrivateKey(containerBytes: try request.bytes("privateKey"))
        return ["signed": b64(try SecureMessage.sign(try request.bytes("message"), with: signer))]

    case "messageVerify":
        let signer = try ThemisPublicKey(containerBytes: try request.bytes("publicKey"))
        return ["message": b64(try SecureMessage.verify(try request.bytes("signed"), with: signer))]

    case "messageKind":
        switch try SecureMessage.kind(of: try request.bytes("message")) {
        case .encrypted: return ["kind": "encrypted"]
        case .signed: return ["kind": "signed"]
        }

    default:
        throw BadRequest(message: "unknown op '\(op)'")
    }
}

func answer(_ request: Any) throws(BadRequest) -> JSONObject {
    guard let object = request as? JSONObject else { throw BadRequest(message: "an operation must be a JSON object") }
    do {
        return try perform(object)
    } catch let error as ThemisError {
        return ["error": "\(error)"]
    } catch let error as BadRequest {
        throw error
    } catch {
        throw BadRequest(message: "\(error)")
    }
}

func write(_ value: Any) {
    let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data("{}".utf8)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

let input = FileHandle.standardInput.readDataToEndOfFile()
do {
    guard let request = try? JSONSerialization.jsonObject(with: input) else {
        throw BadRequest(message: "stdin is not one JSON value")
    }
    if let batch = request as? [Any] {
        write(try batch.map { (element) throws(BadRequest) in try answer(element) })
    } else {
        write(try answer(request))
    }
} catch let error as BadRequest {
    write(["error": "badRequest", "message": error.message])
    exit(2)
}
