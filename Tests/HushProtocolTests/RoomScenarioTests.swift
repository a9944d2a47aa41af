import Crypto
import Foundation
import HushProtocol
import Testing
import ThemisKit

/// Runs every room scenario (Tests/Fixtures/room-scenarios, or the folder `HUSH_ROOM_SCENARIOS`
/// names) through `RoomState`. The web client runs the same files through web/app/room.mjs
/// (tests/js/scenarios.test.mjs); the format is described in the folder's README.md.
@Suite(.timeLimit(.minutes(5))) struct RoomScenarioTests {
    static var directory: URL {
        if let override = ProcessInfo.processInfo.environment["HUSH_ROOM_SCENARIOS"], !override.isEmpty {
            return URL(fileURLWithPath: override, isDirectory: true)
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/room-scenarios", isDirectory: true)
    }

    @Test func everyScenarioInTheFolder() throws {
        let files = try FileManager.default.contentsOfDirectory(at: Self.directory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
        try #require(!files.isEmpty, "no scenario files in \(Self.directory.path)")
        var steps = 0
        for file in files {
            let scenario = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: file))
            var run = try ScenarioRun(scenario, file: file.lastPathComponent)
            steps += try run.run()
        }
        print("room scenarios checked: \(files.count) cases, \(steps) steps (from \(Self.directory.path))")
    }
}

struct ScenarioFileError: Error, CustomStringConvertible {
    let description: String
}

/// One case: the starting state, then each step with the outcome and state it expects.
struct ScenarioRun {
    let file: String
    let scenario: JSONValue
    /// Public key (JSON form) → the name the case gives it.
    let names: [String: String]
    var state: RoomState

    init(_ scenario: JSONValue, file: String) throws {
        self.file = file
        self.scenario = scenario
        let fail = { (what: String) in ScenarioFileError(description: "\(file): \(what)") }
        guard let room = scenario["room"]?.string, let me = scenario["me"]?.string, let keyTexts = scenario["keys"]?.object,
              let start = scenario["start"], let epoch = start["epoch"]?.int, let epochKeys = start["keys"]?.object else {
            throw fail("room, me, keys or start missing")
        }
        var keys: [String: ThemisPrivateKey] = [:]
        for (name, text) in keyTexts {
            guard let bytes = text.string.flatMap(Base64.decode) else { throw fail("key of \(name) is not b64") }
            keys[name] = try ThemisPrivateKey(containerBytes: bytes)
        }
        var roomKeys: [Int: SymmetricKey] = [:]
        for (epoch, text) in epochKeys {
            guard let epoch = Int(epoch), let key = text.string.flatMap(Base64.decode) else { throw fail("bad start key \(epoch)") }
            roomKeys[epoch] = SymmetricKey(data: key)
        }
        guard let owner = keys["owner"], let mine = keys[me], roomKeys[epoch] != nil else { throw fail("no owner, me or current key") }
        names = Dictionary(uniqueKeysWithValues: keys.map { (KeyID.json($0.value.publicKey), $0.key) })
        state = RoomState(room: room, owner: owner.publicKey, me: mine, epoch: epoch, keys: roomKeys, lastSeq: 0, sentCounter: 0, accepted: [:])
        if let window = start["replayWindow"] {
            guard let window = window.int, window >= 1 else { throw fail("bad replayWindow") }
            state.replayWindow = window
        }
        for entry in try (start["members"] ?? []).decode([MemberEntry].self) where !state.admit(key: entry.key, signature: entry.signature.bytes) {
            throw fail("starting member \(name(entry.key)) does not verify")
        }
        for entry in try (start["formerMembers"] ?? []).decode([FormerMemberEntry].self) where !state.admitFormer(entry) {
            throw fail("starting former member \(name(entry.key)) does not verify")
        }
    }

    func name(_ key: String) -> String { names[key] ?? key }

    /// Runs every step and the final state check; returns the number of steps.
    mutating func run() throws -> Int {
        guard let steps = scenario["steps"]?.array, let final = scenario["state"] else {
            throw ScenarioFileError(description: "\(file): steps or state missing")
        }
        for (index, step) in steps.enumerated() {
            let label = "\(file) step \(index + 1) (\(step["note"]?.string ?? ""))"
            guard step["expect"] != nil || step["state"] != nil else { throw ScenarioFileError(description: "\(label): expects nothing") }
            let outcome = try perform(step, label: label)
            if let expected = step["expect"] {
                #expect(Self.comparable(outcome, to: expected) == expected, "\(label)")
            }
            if let expected = step["state"] {
                #expect(snapshot(like: expected) == expected, "\(label): state")
            }
        }
        #expect(snapshot(like: final) == final, "\(file): final state")
        return steps.count
    }

    /// What one step does to the state, as a JSON outcome (nil: a `hello`, which answers nothing).
    mutating func perform(_ step: JSONValue, label: String) throws -> JSONValue? {
        if let envelope = step["envelope"] {
            // The client decodes the envelope from the wire first; one that does not decode is malformed.
            guard let decoded = try? envelope.decode(Envelope.self) else { return ["outcome": "rejected", "reason": "malformed"] }
            return outcome(state.read(decoded))
        }
        if let hello = step["hello"] {
            state.sync(members: try (hello["members"] ?? []).decode([MemberEntry].self),
                       former: try (hello["formerMembers"] ?? []).decode([FormerMemberEntry].self))
            return nil
        }
        if let joined = step["memberJoined"] {
            let entry = try joined.decode(MemberEntry.self)
            return ["outcome": state.admit(key: entry.key, signature: entry.signature.bytes) ? "admitted" : "refused"]
        }
        if let push = step["departure"] {
            let departure = try push.decode(DeparturePush.self)
            let verified = state.depart(key: departure.key, until: departure.until, departure: departure.departure,
                                        signature: departure.signature.bytes)
            return ["outcome": verified ? "verified" : "unverified"]
        }
        throw ScenarioFileError(description: "\(label): no envelope, hello, memberJoined or departure")
    }

    /// `member_left` / `member_removed` as pushed (§4.2, §4.6).
    struct DeparturePush: Decodable {
        let key: String
        let departure: Departure
        let signature: Base64Bytes
        let until: Int
    }

    func outcome(_ reading: RoomState.Reading) -> JSONValue {
        let event: RoomState.Event
        switch reading {
        case .name(let change) where change.duplicate: return ["outcome": "duplicate", "seq": .int(change.seq)]
        case .name(let change):
            let out: JSONValue = ["outcome": "name", "seq": .int(change.seq), "from": .string(self.name(change.from)),
                                  "counter": .int(change.counter), "ts": .int(Int(change.ts)), "name": .string(change.name),
                                  "previous": change.previous.map(JSONValue.string) ?? .null, "inForce": .bool(change.inForce)]
            return out
        case .file(let shared) where shared.duplicate: return ["outcome": "duplicate", "seq": .int(shared.seq)]
        case .file(let shared):
            return ["outcome": "file", "seq": .int(shared.seq), "from": .string(self.name(shared.from)), "counter": .int(shared.counter),
                    "ts": .int(Int(shared.ts)), "name": .string(shared.file.name)]
        case .event(let read): event = read
        }
        return switch event {
        case .chat(let seq, let from, let counter, let ts, let text):
            ["outcome": "chat", "seq": .int(seq), "from": .string(name(from)), "counter": .int(counter), "ts": .int(Int(ts)), "text": .string(text)]
        case .duplicate(let seq, _, _, _, _): ["outcome": "duplicate", "seq": .int(seq)]
        case .rotated(let seq, let epoch): ["outcome": "rotation", "seq": .int(seq), "epoch": .int(epoch)]
        case .rejected(let seq, let reason): ["outcome": "rejected", "seq": .int(seq), "reason": .string(reason.rawValue)]
        }
    }

    /// A refusal expected without a seq (the envelope was not well formed) is compared without one.
    static func comparable(_ outcome: JSONValue?, to expected: JSONValue) -> JSONValue? {
        guard expected["outcome"] == "rejected", expected["seq"] == nil, case .object(var object) = outcome else { return outcome }
        object["seq"] = nil
        return .object(object)
    }

    /// The state as the case writes it; `names` (who is called what, and whether another key
    /// holds the same name) only when the expected state has it, as cases before names do not.
    func snapshot(like expected: JSONValue) -> JSONValue {
        guard expected["names"] != nil, case .object(var object) = snapshot else { return snapshot }
        object["names"] = .object(Dictionary(uniqueKeysWithValues: state.names.map { key, naming in
            (name(key), ["name": .string(naming.name), "shared": .bool(state.sharesName(key))] as JSONValue)
        }))
        return .object(object)
    }

    var snapshot: JSONValue {
        ["epoch": .int(state.epoch), "lastSeq": .int(state.lastSeq), "counter": .int(state.sentCounter),
         "keys": .object(Dictionary(uniqueKeysWithValues: state.keys.map { (String($0.key), .string(Base64.encode($0.value.bytes))) })),
         "members": .array(state.members.map(name).sorted().map(JSONValue.string)),
         "former": .object(Dictionary(uniqueKeysWithValues: state.former.map { key, former in
             (name(key), ["until": .int(former.until), "departure": former.departure.map { .string($0.rawValue) } ?? .null] as JSONValue)
         }))]
    }
}
