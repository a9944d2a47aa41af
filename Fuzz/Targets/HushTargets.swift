import Crypto
import Foundation
import HushClient
import HushProtocol
import ThemisKit

/// Hush's own decoders: wire JSON, invite links, envelopes into the room state machine,
/// sealed room payloads and the key-store file.
enum HushTargets {
    static let all: [FuzzTarget] = [wire, invite, envelope, payload, file, keyStore]

    /// A frame's JSON as both sides read it: `WireMessage`, then the fields a handler parses.
    static let wire = FuzzTarget(name: "wire", about: "wire JSON (requests and pushes)") { input in
        guard let message = try? WireMessage.decode(input) else { return .refused }
        precondition((try? WireMessage.decode(message.encoded())) == message, "a decoded wire message does not re-encode to itself")
        for key in [message.key, message.from].compactMap({ $0 }) + (message.wraps ?? []).map(\.key) {
            if let parsed = try? KeyID.key(fromJSON: key) {
                precondition(KeyID.json(parsed) == key, "a key id is accepted in a non-canonical form")
            }
        }
        if let envelope = Envelope(push: message) { precondition(envelope.push.room == message.room, "an envelope lost its room") }
        return .accepted
    } seeds: { fixtures in
        let envelopes = try RoomFixture.envelopes(fixtures).map { Array(RoomPayload.json($0.push)) }
        var send = WireMessage(type: "send", id: "7")
        send.room = "Jd7NeG0366hu3LTUT1LpWA"
        send.epoch = 3
        send.payload = Base64Bytes([1, 2, 3])
        send.messageId = Base64Bytes(Array(repeating: 9, count: 16))
        var stale = WireMessage.error(HushError(.staleEpoch, "the room is at epoch 4", epoch: 4), id: "7")
        stale.room = send.room
        var hello = WireMessage(type: "hello_ok", id: "1")
        hello.rooms = [RoomSummary(room: "r", role: "owner", owner: "k", epoch: 0, lastSeq: 9, floor: 0, delivered: 3,
                                   rotateEvery: 100, sinceRotation: 9, wrapRequired: false, members: [], formerMembers: [])]
        return envelopes + [send.encoded(), stale.encoded(), hello.encoded(), Array(#"{"type":"ping"}"#.utf8)]
    }

    static let invite = FuzzTarget(name: "invite", about: "invite links") { input in
        guard let (server, invite) = try? InviteLink.parse(String(decoding: input, as: UTF8.self)) else { return .refused }
        let again = try? InviteLink.parse(invite.link(serverURL: server))
        precondition(again?.invite == invite, "an invite link does not survive being written again")
        return .accepted
    } seeds: { _ in
        let owner = try ThemisPrivateKey(containerBytes: RoomFixture.ownerKeyBytes)
        let invite = InviteLink(room: "Jd7NeG0366hu3LTUT1LpWA", token: Array(repeating: 7, count: 32),
                                owner: KeyID.json(owner.publicKey), server: owner.publicKey.fingerprint)
        return [Array(invite.link(serverURL: "http://127.0.0.1:8080").utf8), Array(invite.link(serverURL: "https://hush.example/").utf8)]
    }

    /// An envelope (JSON) delivered to a member's room state, after the scenario's own steps.
    /// A refused envelope never changes the epoch or the keys (its sequence number may still
    /// count as seen when only its content was refused, as the shared scenarios pin).
    static let envelope = FuzzTarget(name: "envelope", about: "envelopes into the room state machine") { input in
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(input)) else { return .refused }
        var state = RoomFixture.state
        let before = (state.epoch, state.keys)
        switch state.receive(envelope) {
        case .rejected:
            precondition(before == (state.epoch, state.keys), "a refused envelope changed the room's keys")
            return .refused
        case .chat, .duplicate, .rotated: return .accepted
        }
    } seeds: { fixtures in
        try RoomFixture.envelopes(fixtures).map { Array(RoomPayload.json($0)) }
    }

    /// Fields: the sealed bytes, then a selector: a chat payload, a plain rotation, a wrap, or
    /// a join grant, each opened with the scenario's keys.
    static let payload = FuzzTarget(name: "payload", about: "sealed room payloads (chat, rotation, wrap, join grant)") { input in
        let fields = Fields.split(input, count: 2)
        let state = RoomFixture.state
        let sealed = fields[1]
        let opened: Bool
        switch fields[0].first ?? 0 {
        case 0:
            opened = state.keys.contains { epoch, key in
                RoomFixture.senders.contains { (try? RoomPayload.open(sealed, roomKey: key, room: state.room, epoch: epoch, sender: $0)) != nil }
            }
        case 1:
            opened = state.keys.contains { epoch, key in
                (try? RoomPayload.openRotation(payload: sealed, oldKey: key, room: state.room, newEpoch: epoch + 1, owner: state.owner)) != nil
            }
        case 2:
            opened = (try? RoomPayload.openRotation(wrap: sealed, me: state.me, room: state.room, newEpoch: state.epoch + 1,
                                                     owner: state.owner)) != nil
        default:
            opened = (try? RoomPayload.openJoinGrant(sealed, joiningKey: RoomFixture.joiningKey, token: RoomFixture.token,
                                                      room: state.room)) != nil
        }
        return opened ? .accepted : .refused
    } seeds: { fixtures in
        let payloads = try RoomFixture.envelopes(fixtures).flatMap { envelope -> [[UInt8]] in
            let kind: UInt8 = envelope.kind == "rotation" ? 1 : 0
            return [envelope.payload.map { Fields.join([[kind], $0.bytes]) }, envelope.wrap.map { Fields.join([[2], $0.bytes]) }]
                .compactMap { $0 }
        }
        let state = RoomFixture.state
        let grant = try RoomPayload.sealJoinGrant(room: state.room, epoch: state.epoch, roomKey: state.currentKey,
                                                  joiningKey: RoomFixture.joiningKey, token: RoomFixture.token)
        // The scenarios' messages were sealed before padding (§6.1): one padded message too.
        let padded = try RoomPayload.seal(ChatMessage(room: state.room, epoch: state.epoch, counter: 1, ts: 0, text: "padded"),
                                          roomKey: state.currentKey, signer: try ThemisPrivateKey(containerBytes: RoomFixture.ownerKeyBytes))
        return payloads + [Fields.join([[3], grant]), Fields.join([[0], padded])]
    }

    /// Fields: a selector, then either the `file` object of a file message (decoded with every
    /// §6.8 rule) or sealed chunks opened against the shared vector's file (`files.json`).
    static let file = FuzzTarget(name: "file", about: "file descriptions and sealed file chunks") { input in
        let fields = Fields.split(input, count: 2)
        if fields[0].first ?? 0 == 0 {
            return (try? JSONDecoder().decode(RoomFile.self, from: Data(fields[1]))) != nil ? .accepted : .refused
        }
        guard let vector = FileFixture.vector else { return .refused }
        let chunks = Fields.split(fields[1], count: 2)
        return (try? vector.file.open(chunks, room: vector.room)) != nil ? .accepted : .refused
    } seeds: { fixtures in
        let object = try fixtures.json("files.json")
        let descriptions = (object["messages"] as? [[String: Any]] ?? []).compactMap { $0["file"] }
            .compactMap { try? JSONSerialization.data(withJSONObject: $0) }
            .map { Fields.join([[0], Array($0)]) }
        let sealed = object["sealed"] as? [String: String] ?? [:]
        let good = ["good0", "good1"].compactMap { sealed[$0].flatMap(Base64.decode) }
        return descriptions + [Fields.join([[1], Fields.join(good)])]
    }

    static let keyStorePassphrase = "fuzz"

    /// A key-store file opened with its passphrase; the PBKDF2 count in the sealed store key
    /// (or, in the first format, the whole cell) is folded as in `cell-passphrase`.
    static let keyStore = FuzzTarget(name: "keystore", about: "the key-store file (both formats)") { input in
        var bytes = input
        let cellStart = bytes.starts(with: KeyStoreFile.magic) ? KeyStoreFile.magic.count + 4 : KeyStoreFile.magic.count
        if bytes.count > cellStart {
            bytes = Array(bytes[..<cellStart]) + ThemisTargets.foldingIterations(Array(bytes[cellStart...]))
        }
        guard let store = try? KeyStoreFile.open(bytes, passphrase: keyStorePassphrase) else { return .refused }
        for room in store.rooms { _ = try? room.roomState() }
        return .accepted
    } seeds: { _ in
        let owner = try ThemisPrivateKey(containerBytes: RoomFixture.ownerKeyBytes)
        var record = StoredRoom(room: "Jd7NeG0366hu3LTUT1LpWA", name: "lobby", server: "http://127.0.0.1:8080",
                                serverKey: KeyID.json(owner.publicKey), role: .owner, status: .active,
                                privateKey: owner, owner: KeyID.json(owner.publicKey), rotateEvery: 5)
        record.absorb(RoomState(room: record.room, owner: owner.publicKey, me: owner, epoch: 0, roomKey: SymmetricKey(data: Array(repeating: UInt8(1), count: 32))))
        var store = KeyStore()
        store.upsert(record)
        let storeKey = SymmetricKey(data: Array(repeating: UInt8(5), count: 32))
        let sealedKey = try KeyStoreFile.sealStoreKey(storeKey, passphrase: keyStorePassphrase, iterations: 3)
        return [try KeyStoreFile.seal(store, storeKey: storeKey, sealedKey: sealedKey),
                try KeyStoreFile.seal(KeyStore(), storeKey: storeKey, sealedKey: sealedKey)]
    }
}

/// The room of a shared scenario (Tests/Fixtures/room-scenarios/05-rotation-wrapped.json),
/// as its member holds it after the scenario's steps: keys of several epochs, members, a
/// departed member. Built once per process.
enum RoomFixture {
    static let scenarioFile = "room-scenarios/05-rotation-wrapped.json"
    static let joiningKey = SymmetricKey(data: Array(repeating: UInt8(3), count: 32))
    static let token = Array(repeating: UInt8(4), count: 32)

    /// The scenario's private keys by name ("owner", "bob", …).
    static let privateKeys: [String: [UInt8]] = {
        let texts = (try? Fixtures.repository.json(scenarioFile))?["keys"] as? [String: String] ?? [:]
        return texts.compactMapValues { Base64.decode($0) }
    }()

    static var ownerKeyBytes: [UInt8] { privateKeys["owner"] ?? [] }

    static let senders: [ThemisPublicKey] = privateKeys.values.compactMap { try? ThemisPrivateKey(containerBytes: $0).publicKey }

    static let state: RoomState = {
        guard let scenario = try? Fixtures.repository.json(scenarioFile),
              let room = scenario["room"] as? String, let me = scenario["me"] as? String,
              let start = scenario["start"] as? [String: Any], let epoch = start["epoch"] as? Int,
              let keyTexts = start["keys"] as? [String: String],
              let owner = try? ThemisPrivateKey(containerBytes: ownerKeyBytes),
              let mine = try? ThemisPrivateKey(containerBytes: privateKeys[me] ?? []) else {
            preconditionFailure("\(scenarioFile) has no room, me, owner or start")
        }
        let keys = Dictionary(uniqueKeysWithValues: keyTexts.compactMap { epoch, text in
            Int(epoch).flatMap { epoch in Base64.decode(text).map { (epoch, SymmetricKey(data: $0)) } }
        })
        var state = RoomState(room: room, owner: owner.publicKey, me: mine, epoch: epoch, keys: keys, lastSeq: 0,
                              sentCounter: 0, accepted: [:])
        let members = (try? JSONSerialization.data(withJSONObject: start["members"] ?? [])).flatMap {
            try? JSONDecoder().decode([MemberEntry].self, from: $0)
        } ?? []
        for member in members { _ = state.admit(key: member.key, signature: member.signature.bytes) }
        for envelope in (try? envelopes(.repository)) ?? [] { _ = state.receive(envelope) }
        return state
    }()

    /// Every envelope of every scenario file.
    static func envelopes(_ fixtures: Fixtures) throws -> [Envelope] {
        let folder = fixtures.folder.appendingPathComponent("room-scenarios")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".json") }.sorted()
        return try files.flatMap { file -> [Envelope] in
            let steps = try fixtures.json("room-scenarios/\(file)")["steps"] as? [[String: Any]] ?? []
            return steps.compactMap { step in
                step["envelope"].flatMap { try? JSONSerialization.data(withJSONObject: $0) }
                    .flatMap { try? JSONDecoder().decode(Envelope.self, from: $0) }
            }
        }
    }
}

/// The shared file vector (`Tests/Fixtures/files.json`): its room and its file, described.
enum FileFixture {
    static let vector: (room: String, file: RoomFile)? = {
        guard let object = try? Fixtures.repository.json("files.json"), let room = object["room"] as? String,
              let file = object["file"] as? [String: Any], let id = (file["id"] as? String).flatMap(Base64.decode),
              let key = (file["key"] as? String).flatMap(Base64.decode), let size = file["size"] as? Int,
              let sha256 = (file["sha256"] as? String).flatMap(Base64.decode),
              let described = try? RoomFile(id: id, key: SymmetricKey(data: key), size: size, sha256: sha256, name: "fuzz.bin", type: RoomFile.unknownType)
        else { return nil }
        return (room, described)
    }()
}
