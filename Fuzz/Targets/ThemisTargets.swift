import Crypto
import Foundation
import ThemisKit

/// The Themis decoders: key containers, Secure Cell in every mode, Secure Message, and
/// Secure Session in both roles. Each input carries its own key material (see `Fields`), so
/// the seeds from the Themis vectors open, and the fuzzer mutates from inputs that get past
/// every check.
enum ThemisTargets {
    static let all: [FuzzTarget] = [keys, cellSeal, cellTokenProtect, cellContextImprint, cellPassphrase, message,
                                    sessionServer, sessionClient, sessionData]

    static let keys = FuzzTarget(name: "keys", about: "EC key containers (public and private)") { input in
        .either(parseKeys(input), parseKeys(ContainerChecksums.repaired(input)))
    } seeds: { fixtures in
        let file = try fixtures.json("themis-vectors/keys.json")
        let pairs = file["key_pairs"] as? [[String: Any]] ?? []
        let invalid = file["invalid_keys"] as? [[String: Any]] ?? []
        return pairs.flatMap {
            [hex($0["private_key"]), hex($0["public_key"]), hex($0["public_key_uncompressed_container"]),
             hex($0["private_key_32byte_container"])]
        } + invalid.map { hex($0["key"]) }
    }

    static func parseKeys(_ input: [UInt8]) -> FuzzTarget.Outcome {
        var accepted = false
        if let key = try? ThemisPublicKey(containerBytes: input) {
            precondition((try? ThemisPublicKey(containerBytes: key.containerBytes)) == key, "a parsed public key does not reparse to itself")
            accepted = true
        }
        if let key = try? ThemisPrivateKey(containerBytes: input) {
            precondition((try? ThemisPrivateKey(containerBytes: key.containerBytes))?.publicKey == key.publicKey,
                         "a parsed private key does not reparse to itself")
            accepted = true
        }
        return accepted ? .accepted : .refused
    }

    /// Fields: key, context, sealed cell.
    static let cellSeal = FuzzTarget(name: "cell-seal", about: "Secure Cell Seal, key mode") { input in
        let fields = Fields.split(input, count: 3)
        guard let cell = try? SecureCell.Seal(key: SymmetricKey(data: fields[0])),
              let plaintext = try? cell.decrypt(fields[2], context: fields[1]) else { return .refused }
        precondition(!plaintext.isEmpty, "Seal opened to an empty message")
        return .accepted
    } seeds: { fixtures in
        try fixtures.vectors("secure_cell_seal.json").filter { $0["mode"] as? String == "seal" }.map {
            Fields.join([hex($0["key"]), hex($0["context"]), hex($0["ciphertext"])])
        }
    }

    /// Fields: key, context, token, ciphertext.
    static let cellTokenProtect = FuzzTarget(name: "cell-token", about: "Secure Cell Token Protect") { input in
        let fields = Fields.split(input, count: 4)
        guard let cell = try? SecureCell.TokenProtect(key: SymmetricKey(data: fields[0])),
              let plaintext = try? cell.decrypt(fields[3], token: fields[2], context: fields[1]) else { return .refused }
        precondition(plaintext.count == fields[3].count, "Token Protect changed the message length")
        return .accepted
    } seeds: { fixtures in
        try fixtures.vectors("secure_cell_token_protect.json").map {
            Fields.join([hex($0["key"]), hex($0["context"]), hex($0["token"]), hex($0["ciphertext"])])
        }
    }

    /// Fields: key, context, ciphertext. Context Imprint has no integrity: every well-sized
    /// input opens, to bytes of the same length.
    static let cellContextImprint = FuzzTarget(name: "cell-imprint", about: "Secure Cell Context Imprint") { input in
        let fields = Fields.split(input, count: 3)
        guard let cell = try? SecureCell.ContextImprint(key: SymmetricKey(data: fields[0])),
              let plaintext = try? cell.decrypt(fields[2], context: fields[1]) else { return .refused }
        precondition(plaintext.count == fields[2].count, "Context Imprint changed the message length")
        return .accepted
    } seeds: { fixtures in
        try fixtures.vectors("secure_cell_context_imprint.json").map {
            Fields.join([hex($0["key"]), hex($0["context"]), hex($0["ciphertext"])])
        }
    }

    /// Fields: passphrase, context, sealed cell. The header's PBKDF2 count is folded into
    /// 1…`iterationBound` before decrypting, so an execution costs microseconds, not seconds;
    /// the bound on real counts (`maximumIterations`) is a unit test.
    static let cellPassphrase = FuzzTarget(name: "cell-passphrase", about: "Secure Cell Seal, passphrase mode") { input in
        let fields = Fields.split(input, count: 3)
        guard let cell = try? SecureCell.PassphraseSeal(passphrase: fields[0]),
              let plaintext = try? cell.decrypt(foldingIterations(fields[2]), context: fields[1]) else { return .refused }
        precondition(!plaintext.isEmpty, "passphrase Seal opened to an empty message")
        return .accepted
    } seeds: { fixtures in
        let vectors = try fixtures.vectors("secure_cell_seal.json").filter { $0["mode"] as? String == "seal_passphrase" }
        let fromVectors = vectors.map {
            Fields.join([Array(($0["passphrase_utf8"] as? String ?? "").utf8), hex($0["context"]), hex($0["ciphertext"])])
        }
        // Cells this code makes with small counts, which open after folding.
        let made = try [(1 as UInt32, "x"), (7, "correct horse"), (iterationBound, "пароль")].map { iterations, passphrase in
            Fields.join([Array(passphrase.utf8), Array("ctx".utf8),
                         try SecureCell.PassphraseSeal(passphrase: passphrase)
                             .encrypt(Array("fuzz seed".utf8), context: Array("ctx".utf8), iterations: iterations)])
        }
        return fromVectors + made
    }

    static let iterationBound: UInt32 = 64
    /// Offset of the PBKDF2 count in a passphrase cell: five 32-bit header fields, the 12-byte
    /// IV and the 16-byte tag precede it (wire format, passphrase Seal).
    static let iterationOffset = 48

    static func foldingIterations(_ sealed: [UInt8]) -> [UInt8] {
        guard sealed.count >= iterationOffset + 4 else { return sealed }
        var folded = sealed
        let range = iterationOffset..<(iterationOffset + 4)
        let count = folded[range].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let bounded = count <= iterationBound ? count : 1 + count % iterationBound
        for (index, at) in range.enumerated() { folded[at] = UInt8(truncatingIfNeeded: bounded >> (8 * index)) }
        return folded
    }

    /// Fields: own private key, peer public key, message (encrypted or signed).
    static let message = FuzzTarget(name: "message", about: "Secure Message (encrypt and sign modes)") { input in
        let fields = Fields.split(input, count: 3)
        guard let kind = try? SecureMessage.kind(of: fields[2]) else { return .refused }
        guard let me = try? ThemisPrivateKey(containerBytes: fields[0]),
              let peer = try? ThemisPublicKey(containerBytes: fields[1]) else { return .refused }
        switch kind {
        case .encrypted:
            return (try? SecureMessage.decrypt(fields[2], by: me, from: peer)) == nil ? .refused : .accepted
        case .signed:
            return (try? SecureMessage.verify(fields[2], with: peer)) == nil ? .refused : .accepted
        }
    } seeds: { fixtures in
        try fixtures.vectors("secure_message.json").map { vector in
            vector["mode"] as? String == "sign"
                ? Fields.join([hex(vector["signer_private"]), hex(vector["signer_public"]), hex(vector["signed"])])
                : Fields.join([hex(vector["recipient_private"]), hex(vector["sender_public"]), hex(vector["encrypted"] ?? vector["ciphertext"])])
        }
    }

    /// Seconds since 1970 in the session vectors' time, so their data messages are in the
    /// ±1 day window.
    static let sessionClock: @Sendable () -> UInt64 = { 1_795_920_569 }

    /// Byte 0 picks the server's state: even, a fresh server given a client hello (message 1);
    /// odd, a server that answered a genuine hello, given the client's finish (message 3).
    static let sessionServer = handshakeTarget(name: "session-server", role: "server",
                                               states: { [$0.freshServer, $0.serverAfterHello] }, steps: (1, 3))

    /// Byte 0 picks the client's state: even, after its hello, given the server's answer
    /// (message 2); odd, after its finish, given the server's finish (message 4).
    static let sessionClient = handshakeTarget(name: "session-client", role: "client",
                                               states: { [$0.clientAfterHello, $0.clientAfterFinish] }, steps: (2, 4))

    /// A target that gives handshake message `steps.0` (byte 0 even) or `steps.1` (odd) to a
    /// copy of the matching state of `Handshake.recorded`. Seeds: this process's genuine
    /// messages and the recorded Themis ones at those steps.
    static func handshakeTarget(name: String, role: String, states: @escaping @Sendable (Handshake) -> [SecureSession],
                                steps: (Int, Int)) -> FuzzTarget {
        FuzzTarget(name: name, about: "Secure Session handshake, \(role) role") { input in
            guard let step = input.first else { return .refused }
            return receive(Array(input.dropFirst()), by: states(Handshake.recorded)[Int(step % 2)])
        } seeds: { fixtures in
            let recorded = Handshake.recorded.messages
            let transcripts = try fixtures.vectors("secure_session.json", list: "transcripts")
            return [[0] + recorded[steps.0 - 1], [1] + recorded[steps.1 - 1]]
                + transcripts.flatMap { [[0] + handshake($0, step: steps.0), [1] + handshake($0, step: steps.1)] }
        }
    }

    /// A handshake frame given to a copy of `session`, as it came and with its checksums made right.
    static func receive(_ frame: [UInt8], by session: SecureSession) -> FuzzTarget.Outcome {
        var asItCame = session, repaired = session
        return .either((try? asItCame.receive(frame)) == nil ? .refused : .accepted,
                       (try? repaired.receive(ContainerChecksums.repaired(frame))) == nil ? .refused : .accepted)
    }

    /// An established pair (`Handshake.recorded`). Input byte 0 chooses: even, the rest goes
    /// to the server as a raw frame; odd, the client wraps the rest and bytes 1–2 pick a bit of
    /// the frame to flip, which the server must refuse, and the untouched frame must still
    /// open afterwards (a bad frame changes nothing).
    static let sessionData = FuzzTarget(name: "session-data", about: "Secure Session data messages (established)") { input in
        guard let mode = input.first else { return .refused }
        var (client, server) = (Handshake.recorded.establishedClient, Handshake.recorded.establishedServer)
        let rest = Array(input.dropFirst(3))
        if mode % 2 == 0 {
            guard case .data = try? server.receive(Array(input.dropFirst())) else { return .refused }
            return .accepted
        }
        guard !rest.isEmpty, let frame = try? client.wrap(rest) else { return .refused }
        let bit = (input.count > 2 ? Int(input[1]) << 8 | Int(input[2]) : 0) % (frame.count * 8)
        var flipped = frame
        flipped[bit / 8] ^= 1 << UInt8(bit % 8)
        let fillerBits = 16 * 8..<20 * 8  // IV bytes that are not part of the GCM nonce (kept for Themis)
        if !fillerBits.contains(bit) {
            precondition((try? server.receive(flipped)) == nil, "a data frame with a flipped bit was accepted")
        }
        guard case .data(let plaintext) = try? server.receive(frame) else {
            preconditionFailure("a refused frame changed the session: the good frame no longer opens")
        }
        precondition(plaintext == rest, "a data frame opened to other bytes")
        return .accepted
    } seeds: { fixtures in
        var client = Handshake.recorded.establishedClient
        let frames = try ["hello", String(repeating: "x", count: 300)].map { try client.wrap(Array($0.utf8)) }
        let recorded: [[UInt8]] = try fixtures.vectors("secure_session.json", list: "transcripts").flatMap { transcript in
            (transcript["messages"] as? [[String: Any]] ?? []).map { [UInt8(0)] + hex($0["wrapped"]) }
        }
        let flips: [[UInt8]] = [[1, 0, 0] + Array("hello".utf8), [1, 0x01, 0x37] + Array("bits".utf8)]
        return frames.map { [0] + $0 } + recorded + flips
    }


    static func handshake(_ transcript: [String: Any], step: Int) -> [UInt8] {
        let steps = transcript["handshake"] as? [[String: Any]] ?? []
        return hex(steps.first { $0["step"] as? Int == step }?["message"])
    }

}

/// One handshake between two sessions of this process, kept at every step: each fuzz input
/// starts from a copy of the state it needs (a `SecureSession` is a value), so a run costs one
/// receive, not a handshake. Seeds made from `messages` are genuine for this process only,
/// which is why the driver writes the seed corpus from the fuzzing process itself.
struct Handshake: Sendable {
    let freshServer: SecureSession
    let clientAfterHello: SecureSession
    let serverAfterHello: SecureSession
    let clientAfterFinish: SecureSession
    let establishedClient: SecureSession
    let establishedServer: SecureSession
    /// Messages 1–4.
    let messages: [[UInt8]]

    static let recorded: Handshake = {
        let clientKey = ThemisPrivateKey(), serverKey = ThemisPrivateKey()
        var client = SecureSession(id: Array("client".utf8), privateKey: clientKey, peerKeyLookup: { _ in serverKey.publicKey },
                                   clock: ThemisTargets.sessionClock)
        var server = SecureSession(id: Array("server".utf8), privateKey: serverKey, peerKeyLookup: { _ in clientKey.publicKey },
                                   clock: ThemisTargets.sessionClock)
        do {
            let freshServer = server
            let hello = try client.connectRequest()
            let clientAfterHello = client
            guard case .reply(let answer) = try server.receive(hello) else { preconditionFailure("no answer to the hello") }
            let serverAfterHello = server
            guard case .reply(let finish) = try client.receive(answer) else { preconditionFailure("no client finish") }
            let clientAfterFinish = client
            guard case .established(let confirm?) = try server.receive(finish),
                  case .established = try client.receive(confirm) else { preconditionFailure("handshake did not complete") }
            return Handshake(freshServer: freshServer, clientAfterHello: clientAfterHello, serverAfterHello: serverAfterHello,
                             clientAfterFinish: clientAfterFinish, establishedClient: client, establishedServer: server,
                             messages: [hello, answer, finish, confirm])
        } catch {
            preconditionFailure("handshake failed: \(error)")
        }
    }()
}
