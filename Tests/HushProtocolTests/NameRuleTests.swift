import Foundation
import HushProtocol
import Testing
import ThemisKit

/// Display names (docs/PROTOCOL.md §6.7) in `RoomState`: the one name rule against the shared
/// table Tests/Fixtures/names.json (the web client runs it through room.mjs `canonicalName`), then
/// names from `composeName` to `read`. The room scenario `09-names.json` pins what both clients read.
@Suite(.timeLimit(.minutes(2))) struct NameRuleTests {
    struct Table: Decodable {
        struct Case: Decodable {
            let input: String
            let name: String?
            let about: String
        }
        let cases: [Case]
    }

    @Test func everyCaseOfTheSharedTable() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/names.json")
        let table = try JSONDecoder().decode(Table.self, from: Data(contentsOf: file))
        #expect(table.cases.count >= 20)
        for entry in table.cases {
            let made = RoomState.canonicalName(entry.input)
            // Scalar for scalar: Swift's `==` would call a decomposed name equal to its NFC form.
            #expect(made.map { Array($0.unicodeScalars) } == entry.name.map { Array($0.unicodeScalars) }, "\(entry.about)")
            if let name = entry.name {
                #expect(RoomState.isCanonicalName(name), "\(entry.about): its result is canonical")
                if !name.unicodeScalars.elementsEqual(entry.input.unicodeScalars) {
                    #expect(!RoomState.isCanonicalName(entry.input), "\(entry.about): the input as read is refused")
                }
            }
        }
        print("name rule cases checked: \(table.cases.count)")
    }

    /// Three keys of one room, each with its own state: the owner, a member and another member.
    struct Room {
        let owner = ThemisPrivateKey()
        let member = ThemisPrivateKey()
        let other = ThemisPrivateKey()
        let room = Base64.encodeURL(RoomPayload.randomBytes(16))
        let key = RoomPayload.newRoomKey()

        func state(_ me: ThemisPrivateKey) throws -> RoomState {
            var state = RoomState(room: room, owner: owner.publicKey, me: me, epoch: 0, roomKey: key)
            for member in [member, other] {
                let json = KeyID.json(member.publicKey)
                let signature = try SecureMessage.sign(Statement.membership(room: room, key: json), with: owner)
                let admitted = state.admit(key: json, signature: signature)
                #expect(admitted)
            }
            return state
        }

        func envelope(_ seq: Int, from: ThemisPrivateKey, _ payload: [UInt8]) -> Envelope {
            Envelope(room: room, seq: seq, kind: "message", from: KeyID.json(from.publicKey), epoch: 0, at: 1, payload: payload, wrap: nil)
        }
    }

    static func change(_ reading: RoomState.Reading) -> RoomState.NameChange? {
        if case .name(let change) = reading { change } else { nil }
    }

    @Test func namesAreSetChangedAndMarkedTheLatestBySeqWins() throws {
        let room = Room()
        var owner = try room.state(room.owner)
        var member = try room.state(room.member)
        var other = try room.state(room.other)
        let ownerKey = KeyID.json(room.owner.publicKey), otherKey = KeyID.json(room.other.publicKey)

        let first = try #require(Self.change(member.read(room.envelope(1, from: room.owner, try owner.composeName("Alice", now: 10)))))
        #expect(first.name == "Alice" && first.previous == nil && first.inForce && !first.duplicate && first.counter == 1)
        #expect(owner.sentCounter == 1, "a name consumes a counter like a message")
        #expect(member.read(room.envelope(2, from: room.owner, try owner.compose(text: "hello", now: 11)))
                == .event(.chat(seq: 2, from: ownerKey, counter: 2, ts: 11, text: "hello")))

        _ = member.read(room.envelope(3, from: room.other, try other.composeName("Alice", now: 12)))
        #expect(member.sharesName(ownerKey) && member.sharesName(otherKey), "two keys called Alice are both marked")

        let later = try other.composeName("Olga", now: 13)
        let earlier = try other.composeName("Oscar", now: 14)
        #expect(Self.change(member.read(room.envelope(5, from: room.other, later)))?.previous == "Alice")
        let late = try #require(Self.change(member.read(room.envelope(4, from: room.other, earlier))))
        #expect(!late.inForce && late.previous == "Olga", "an earlier seq read late is not in force")
        #expect(member.name(of: otherKey) == "Olga" && !member.sharesName(ownerKey))
        #expect(Self.change(member.read(room.envelope(5, from: room.other, later)))?.duplicate == true)
        #expect(member.read(room.envelope(6, from: room.other, later)) == .event(.rejected(seq: 6, reason: .replay)))
        // The chat-only view sees no chat news in a name.
        #expect(member.receive(room.envelope(7, from: room.other, try other.composeName("Omar", now: 15))).isChat == false)

        let mine = try member.composeName("Mia", now: 16)
        member.recordSent(counter: member.sentCounter, seq: 8, name: "Mia")
        #expect(member.name(of: KeyID.json(room.member.publicKey)) == "Mia")
        #expect(Self.change(member.read(room.envelope(8, from: room.member, mine)))?.duplicate == true, "read back: a duplicate")
    }

    /// A joiner reads only the epoch it was let in at: a name sealed under an older epoch is
    /// owed again (both clients: `owesNameToJoiners`, room.mjs `owesName`), once.
    @Test func aNameSealedUnderAnOlderEpochIsOwedToAJoiner() throws {
        let room = Room()
        var owner = try room.state(room.owner)
        #expect(!owner.owesNameToJoiners, "no name, nothing owed")
        _ = try owner.composeName("Olivia", now: 1)
        owner.recordSent(counter: owner.sentCounter, seq: 1, name: "Olivia", epoch: 0)
        #expect(!owner.owesNameToJoiners, "a joiner at epoch 0 reads it")
        owner.install(try owner.makeRotation())
        #expect(owner.owesNameToJoiners, "a joiner at epoch 1 cannot read a name sealed under epoch 0")
        _ = try owner.composeName("Olivia", now: 2)
        owner.recordSent(counter: owner.sentCounter, seq: 3, name: "Olivia", epoch: 1)
        #expect(!owner.owesNameToJoiners, "sent again under the current epoch")
        var restored = try room.state(room.owner)
        restored.install(try restored.makeRotation())
        restored.restoreNames([KeyID.json(room.owner.publicKey): RoomState.Naming(name: "Olivia", seq: 3)])
        #expect(restored.owesNameToJoiners, "a name kept without its epoch (a store of before) is sent again")
    }

    @Test func namesOutsideTheRuleAreNeitherSealedNorTakenAndRestoredNamesAreChecked() throws {
        let room = Room()
        var owner = try room.state(room.owner)
        for refused in [" Alice", String(repeating: "x", count: 65), "Eve\u{7}"] {
            do {
                _ = try owner.composeName(refused, now: 1)
                Issue.record("sealed a name outside the rule: \(refused.debugDescription)")
            } catch {
                #expect(error as? PayloadError == .malformed)
            }
        }
        #expect(owner.sentCounter == 0, "a refused name consumes no counter")

        var member = try room.state(room.member)
        let memberKey = KeyID.json(room.member.publicKey)
        member.restoreNames([memberKey: .init(name: "Mia", seq: 3), KeyID.json(room.owner.publicKey): .init(name: "Bad\u{7}", seq: 2),
                             KeyID.json(room.other.publicKey): .init(name: "Zero", seq: 0)])
        #expect(member.names == [memberKey: .init(name: "Mia", seq: 3)], "a stored name outside the rule or at seq 0 is dropped")
        member.restoreNames([memberKey: .init(name: "Older", seq: 2)])
        #expect(member.name(of: memberKey) == "Mia", "restoring never goes back to an older name")
    }
}

private extension RoomState.Event {
    var isChat: Bool { if case .chat = self { true } else { false } }
}
