import Crypto
import Foundation
@testable import HushProtocol
import Testing
import ThemisKit

/// Makes the room scenario files once: real keys, signatures and ciphertext from our own Swift
/// code, with every expected outcome written out by hand below (never read back from
/// `RoomState`). Run with `HUSH_WRITE_SCENARIOS=1 swift test --filter RoomScenarioWriter`, then
/// run both runners and commit the files. Writing again replaces every byte (fresh keys).
@Suite struct RoomScenarioWriter {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["HUSH_WRITE_SCENARIOS"] == "1"))
    func writeScenarios() throws {
        let directory = RoomScenarioTests.directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let cases = [try chat(), try membership(), try departures(), try plainRotations(), try wrappedRotations(),
                     try ownersOwnWrap(), try envelopeBounds(), try payloads(), try names(), try replayWindow()]
        for (index, scenario) in cases.enumerated() {
            let name = String(format: "%02d-%@.json", index + 1, scenario["name"]?.string ?? "case")
            try encoder.encode(scenario).write(to: directory.appendingPathComponent(name))
        }
        print("room scenarios written: \(cases.count) files to \(directory.path)")
    }

    // MARK: cases

    func chat() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol"])
        let k0 = cast.roomKey()
        let hello = try cast.message(seq: 1, from: "carol", epoch: 0, key: k0, counter: 1, text: "hello from carol")
        let owner = "hello from the owner — ünïcödé ✓"
        let again = try cast.message(seq: 4, from: "carol", epoch: 0, key: k0, counter: 2, text: "again")
        let mine = try cast.message(seq: 5, from: "bob", epoch: 0, key: k0, counter: 7, text: "mine, from my other client")
        return cast.scenario("chat", "Messages, a duplicate (the same message at the same seq) and replays (the same counter at another seq)",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob", "carol"], steps: [
            step("carol's first message", envelope: hello, expect: chatOut(1, "carol", 1, "hello from carol")),
            step("the same message again, as history after the push: a duplicate", envelope: hello, expect: duplicate(1)),
            step("the same payload at another seq: a replay", envelope: hello.with("seq", 2), expect: rejected(2, .replay)),
            step("counters are per sender", envelope: try cast.message(seq: 3, from: "owner", epoch: 0, key: k0, counter: 1, text: owner),
                 expect: chatOut(3, "owner", 1, owner)),
            step("carol's second message", envelope: again, expect: chatOut(4, "carol", 2, "again")),
            step("my own message sent from another client raises my counter", envelope: mine,
                 expect: chatOut(5, "bob", 7, "mine, from my other client"), state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 5, counter: 7, members: ["bob", "carol"])),
            step("carol's second message replayed at a later seq", envelope: again.with("seq", 6), expect: rejected(6, .replay)),
            step("the first message once more, long after: still a duplicate", envelope: hello, expect: duplicate(1)),
            step("my own message read back: a duplicate too", envelope: mine, expect: duplicate(5)),
        ], state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 6, counter: 7, members: ["bob", "carol"]))
    }

    func membership() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol", "dave", "mallory"])
        let k0 = cast.roomKey()
        let first = try cast.message(seq: 1, from: "carol", epoch: 0, key: k0, counter: 1, text: "carol, a member")
        let mallory = try cast.message(seq: 2, from: "mallory", epoch: 0, key: k0, counter: 1, text: "let me in")
        let impostor = try cast.message(seq: 4, from: "mallory", epoch: 0, key: k0, counter: 9, text: "signed by mallory")
            .with("from", .string(cast.pub("carol")))
        return cast.scenario("membership", "Who may speak: members admitted by the owner's signature; forged and borrowed signatures, the owner's key, and hello's member list",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob", "carol"], steps: [
            step("a member's message", envelope: first, expect: chatOut(1, "carol", 1, "carol, a member")),
            step("a sender never admitted", envelope: mallory, expect: rejected(2, .notMember)),
            step("a membership signed by mallory herself", memberJoined: cast.member("mallory", signer: "mallory"), expect: refused),
            step("carol's valid membership signature presented for mallory's key",
                 memberJoined: ["key": .string(cast.pub("mallory")), "signature": cast.member("carol")["signature"]!], expect: refused),
            step("so mallory is still no member", envelope: mallory.with("seq", 3), expect: rejected(3, .notMember)),
            step("a message from carol's key signed by mallory", envelope: impostor, expect: rejected(4, .badSignature)),
            step("the owner's key is never a member, even with a membership the owner signed",
                 memberJoined: cast.member("owner"), expect: refused),
            step("a sender that names an object property", envelope: mallory.with("seq", 5).with("from", "__proto__"),
                 expect: rejected(5, .notMember)),
            step("dave is admitted by the owner", memberJoined: cast.member("dave"), expect: admitted,
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 5, members: ["bob", "carol", "dave"])),
            step("dave's message", envelope: try cast.message(seq: 6, from: "dave", epoch: 0, key: k0, counter: 1, text: "dave here"),
                 expect: chatOut(6, "dave", 1, "dave here")),
            step("hello no longer lists carol: she is gone, unexplained, as of the last seq seen",
                 hello: ["members": [cast.member("bob"), cast.member("dave")], "formerMembers": []],
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 6, members: ["bob", "dave"], former: ["carol": (6, nil)])),
            step("carol's later message is from a non-member",
                 envelope: try cast.message(seq: 7, from: "carol", epoch: 0, key: k0, counter: 2, text: "still here?"),
                 expect: rejected(7, .notMember)),
            step("her earlier message stays valid", envelope: first, expect: duplicate(1)),
            step("her old signature cannot bring her back", memberJoined: cast.member("carol"), expect: refused),
            step("nor can hello listing her again",
                 hello: ["members": [cast.member("bob"), cast.member("carol"), cast.member("dave")], "formerMembers": []],
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 7, members: ["bob", "dave"], former: ["carol": (6, nil)])),
        ], state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 7, members: ["bob", "dave"], former: ["carol": (6, nil)]))
    }

    func departures() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol", "dave", "erin", "frank", "gina"])
        let k0 = cast.roomKey()
        let bob = cast.former("bob", until: 3, .left)
        let members = ["carol", "dave", "erin"].map { cast.member($0) }
        let late = try cast.message(seq: 4, from: "bob", epoch: 0, key: k0, counter: 3, text: "after leaving")
        return cast.scenario("departures", "Former members: messages up to `until` count, later ones do not; `until` never widens; retired keys stay retired",
                             me: "dave", epoch: 0, keys: [0: k0], members: ["carol", "dave", "erin"], former: [bob], steps: [
            step("bob's message before he left", envelope: try cast.message(seq: 2, from: "bob", epoch: 0, key: k0, counter: 1, text: "early"),
                 expect: chatOut(2, "bob", 1, "early")),
            step("his message at `until` itself", envelope: try cast.message(seq: 3, from: "bob", epoch: 0, key: k0, counter: 2, text: "bye"),
                 expect: chatOut(3, "bob", 2, "bye")),
            step("his message after `until`", envelope: late, expect: rejected(4, .notMember)),
            step("hello claims a later `until` for bob", hello: ["members": .array(members), "formerMembers": [cast.former("bob", until: 9, .left)]],
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 4, members: ["carol", "dave", "erin"], former: ["bob": (3, "left")])),
            step("so his late message is still refused", envelope: late, expect: rejected(4, .notMember)),
            step("a pushed departure tries to widen `until`",
                 departure: cast.departure("bob", .left, until: 10), expect: verified,
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 4, members: ["carol", "dave", "erin"], former: ["bob": (3, "left")])),
            step("bob's old membership cannot bring him back", memberJoined: cast.member("bob"), expect: refused),
            step("an entry for bob with a forged membership signature changes nothing, not even narrowing `until`",
                 hello: ["members": .array(members),
                         "formerMembers": [cast.former("bob", until: 1, .left).with("signature", cast.member("bob", signer: "frank")["signature"]!)]],
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 4, members: ["carol", "dave", "erin"], former: ["bob": (3, "left")])),
            step("carol leaves with her own signature", departure: cast.departure("carol", .left, until: 5), expect: verified,
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 4, members: ["dave", "erin"], former: ["bob": (3, "left"), "carol": (5, "left")])),
            step("her message at `until`", envelope: try cast.message(seq: 5, from: "carol", epoch: 0, key: k0, counter: 1, text: "leaving now"),
                 expect: chatOut(5, "carol", 1, "leaving now")),
            step("her message after it", envelope: try cast.message(seq: 6, from: "carol", epoch: 0, key: k0, counter: 2, text: "one more"),
                 expect: rejected(6, .notMember)),
            step("a removal of carol signed by carol, not the owner, with a later `until`",
                 departure: cast.departure("carol", .removed, until: 9, signer: "carol"), expect: unverified,
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 6, members: ["dave", "erin"], former: ["bob": (3, "left"), "carol": (5, "left")])),
            step("erin is removed with an `until` out of range: the last seq seen stands in",
                 departure: cast.departure("erin", .removed, until: -1), expect: verified,
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 6, members: ["dave"],
                                   former: ["bob": (3, "left"), "carol": (5, "left"), "erin": (6, "removed")])),
            step("hello entries: `until` out of range twice, the owner, me, and gina whose removal signature is gina's own",
                 hello: ["members": [cast.member("dave")], "formerMembers": [
                    cast.former("frank", until: 9_007_199_254_740_992, .left), cast.former("frank", until: -5, .left),
                    cast.former("owner", until: 2, .removed), cast.former("dave", until: 2, .left),
                    cast.former("gina", until: 4, .removed, departureSigner: "gina"),
                 ]],
                 state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 6, members: ["dave"],
                                   former: ["bob": (3, "left"), "carol": (5, "left"), "erin": (6, "removed"), "gina": (4, nil)])),
            step("gina's message before her (unexplained) departure", envelope: try cast.message(seq: 1, from: "gina", epoch: 0, key: k0, counter: 1, text: "gina"),
                 expect: chatOut(1, "gina", 1, "gina")),
            step("frank's entries were refused: he is no member", envelope: try cast.message(seq: 7, from: "frank", epoch: 0, key: k0, counter: 1, text: "frank"),
                 expect: rejected(7, .notMember)),
        ], state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 7, members: ["dave"],
                             former: ["bob": (3, "left"), "carol": (5, "left"), "erin": (6, "removed"), "gina": (4, nil)]))
    }

    func plainRotations() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol"])
        let (k0, k1, k2) = (cast.roomKey(), cast.roomKey(), cast.roomKey())
        let first = try cast.message(seq: 1, from: "carol", epoch: 0, key: k0, counter: 1, text: "under epoch 0")
        let rotation = try cast.plainRotation(seq: 2, epoch: 1, grant: cast.grant(epoch: 1, key: k1), under: k0)
        let atEpoch1 = cast.state(epoch: 1, keys: [0: k0, 1: k1], lastSeq: 7, members: ["bob", "carol"])
        let toEpoch2 = { (seq: Int, grant: [UInt8]) in try cast.plainRotation(seq: seq, epoch: 2, grant: grant, under: k1) }
        return cast.scenario("rotation-plain", "Plain rotations: sealed under the previous key, signed by the owner, a 32-byte key for exactly the next epoch",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob", "carol"], steps: [
            step("a message under epoch 0", envelope: first, expect: chatOut(1, "carol", 1, "under epoch 0")),
            step("the owner rotates to epoch 1", envelope: rotation, expect: rotationOut(2, 1)),
            step("a message under epoch 1", envelope: try cast.message(seq: 3, from: "carol", epoch: 1, key: k1, counter: 2, text: "under epoch 1"),
                 expect: chatOut(3, "carol", 2, "under epoch 1")),
            step("the epoch-0 message read again: old keys are kept", envelope: first, expect: duplicate(1)),
            step("the rotation read again changes nothing", envelope: rotation, expect: rotationOut(2, 1)),
            step("a rotation sent by carol", envelope: try cast.plainRotation(seq: 4, epoch: 2, grant: cast.grant(epoch: 2, key: k2, signer: "carol"), under: k1, from: "carol"),
                 expect: rejected(4, .badSignature)),
            step("a rotation from the owner's key but signed by carol", envelope: try toEpoch2(5, cast.grant(epoch: 2, key: k2, signer: "carol")),
                 expect: rejected(5, .badSignature)),
            step("a 16-byte key", envelope: try toEpoch2(6, cast.grant(epoch: 2, key: SymmetricKey(data: Array(repeating: UInt8(7), count: 16)))), expect: rejected(6, .malformed)),
            step("a 33-byte key is refused and not installed", envelope: try toEpoch2(7, cast.grant(epoch: 2, key: SymmetricKey(data: Array(repeating: UInt8(7), count: 33)))),
                 expect: rejected(7, .malformed), state: atEpoch1),
            step("a rotation to epoch 0", envelope: try cast.plainRotation(seq: 8, epoch: 0, grant: cast.grant(epoch: 0, key: k2), under: k0),
                 expect: rejected(8, .malformed)),
            step("a grant for another room", envelope: try toEpoch2(9, cast.grant(epoch: 2, key: k2, room: Cast.otherRoom)), expect: rejected(9, .wrongRoom)),
            step("a grant for epoch 3 delivered as epoch 2", envelope: try toEpoch2(10, cast.grant(epoch: 3, key: k2)), expect: rejected(10, .wrongRoom)),
            step("sealed under a key nobody has", envelope: try cast.plainRotation(seq: 11, epoch: 2, grant: cast.grant(epoch: 2, key: k2), under: cast.roomKey()),
                 expect: rejected(11, .undecryptable)),
            step("a signed grant of another type", envelope: try toEpoch2(12, cast.grant(epoch: 2, key: k2, type: "grant")), expect: rejected(12, .malformed)),
            step("a plain rotation to epoch 5: no key of epoch 4 to open it",
                 envelope: try cast.plainRotation(seq: 13, epoch: 5, grant: cast.grant(epoch: 5, key: k2), under: k1), expect: rejected(13, .missingKey)),
            step("a rotation with neither payload nor wrap", envelope: cast.envelope(seq: 14, kind: "rotation", from: "owner", epoch: 2),
                 expect: rejected(14, .missingKey)),
            step("the honest rotation to epoch 2", envelope: try toEpoch2(15, cast.grant(epoch: 2, key: k2)), expect: rotationOut(15, 2)),
            step("a message under epoch 2", envelope: try cast.message(seq: 16, from: "owner", epoch: 2, key: k2, counter: 1, text: "under epoch 2"),
                 expect: chatOut(16, "owner", 1, "under epoch 2")),
        ], state: cast.state(epoch: 2, keys: [0: k0, 1: k1, 2: k2], lastSeq: 16, members: ["bob", "carol"]))
    }

    func wrappedRotations() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol"])
        let (k0, k1, k2, k3) = (cast.roomKey(), cast.roomKey(), cast.roomKey(), cast.roomKey())
        let wrapped = { (seq: Int, epoch: Int, grant: [UInt8], to: String, by: String) in
            try cast.wrappedRotation(seq: seq, epoch: epoch, grant: grant, to: to, by: by)
        }
        let stale = try cast.message(seq: 9, from: "owner", epoch: 2, key: k2, counter: 2, text: "under epoch 2")
        return cast.scenario("rotation-wrapped", "Wrapped rotations (after a departure): each member opens only its own wrap, from the owner",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob", "carol"], steps: [
            step("a wrapped rotation to epoch 1", envelope: try wrapped(1, 1, cast.grant(epoch: 1, key: k1), "bob", "owner"), expect: rotationOut(1, 1)),
            step("a message under epoch 1", envelope: try cast.message(seq: 2, from: "owner", epoch: 1, key: k1, counter: 1, text: "under epoch 1"),
                 expect: chatOut(2, "owner", 1, "under epoch 1")),
            step("carol's wrap handed to bob", envelope: try wrapped(3, 2, cast.grant(epoch: 2, key: k2), "carol", "owner"),
                 expect: rejected(3, .undecryptable)),
            step("a wrap from the owner of a grant signed by carol", envelope: try wrapped(4, 2, cast.grant(epoch: 2, key: k2, signer: "carol"), "bob", "owner"),
                 expect: rejected(4, .badSignature)),
            step("a wrap made by carol", envelope: try wrapped(5, 2, cast.grant(epoch: 2, key: k2), "bob", "carol"), expect: rejected(5, .undecryptable)),
            step("a wrapped 31-byte key", envelope: try wrapped(6, 2, cast.grant(epoch: 2, key: SymmetricKey(data: Array(repeating: UInt8(1), count: 31))), "bob", "owner"),
                 expect: rejected(6, .malformed)),
            step("the epoch-1 grant wrapped again as epoch 2", envelope: try wrapped(7, 2, cast.grant(epoch: 1, key: k1), "bob", "owner"),
                 expect: rejected(7, .wrongRoom), state: cast.state(epoch: 1, keys: [0: k0, 1: k1], lastSeq: 7, members: ["bob", "carol"])),
            step("a wrapped rotation to epoch 3 (epoch 2 not seen yet)", envelope: try wrapped(8, 3, cast.grant(epoch: 3, key: k3), "bob", "owner"),
                 expect: rotationOut(8, 3)),
            step("a message under epoch 2, whose key is missing", envelope: stale, expect: rejected(9, .missingKey)),
            step("a message under epoch 3", envelope: try cast.message(seq: 10, from: "owner", epoch: 3, key: k3, counter: 3, text: "under epoch 3"),
                 expect: chatOut(10, "owner", 3, "under epoch 3")),
            step("the rotation to epoch 2 arrives late: its key is kept, the epoch does not go back",
                 envelope: try wrapped(11, 2, cast.grant(epoch: 2, key: k2), "bob", "owner"), expect: rotationOut(11, 2)),
            step("now the epoch-2 message opens", envelope: stale, expect: chatOut(9, "owner", 2, "under epoch 2")),
        ], state: cast.state(epoch: 3, keys: [0: k0, 1: k1, 2: k2, 3: k3], lastSeq: 11, members: ["bob", "carol"]))
    }

    func ownersOwnWrap() throws -> JSONValue {
        let cast = Cast(["owner", "carol"])
        let (k0, k1, k2) = (cast.roomKey(), cast.roomKey(), cast.roomKey())
        return cast.scenario("owner-own-wrap", "Another client of the owner's key follows a wrapped rotation through the owner's own wrap (protocol v2)",
                             me: "owner", epoch: 0, keys: [0: k0], members: ["carol"], steps: [
            step("carol's message", envelope: try cast.message(seq: 1, from: "carol", epoch: 0, key: k0, counter: 1, text: "hi owner"),
                 expect: chatOut(1, "carol", 1, "hi owner")),
            step("the rotation with the owner's own wrap", envelope: try cast.wrappedRotation(seq: 2, epoch: 1, grant: cast.grant(epoch: 1, key: k1), to: "owner", by: "owner"),
                 expect: rotationOut(2, 1)),
            step("the owner's message from its other client", envelope: try cast.message(seq: 3, from: "owner", epoch: 1, key: k1, counter: 3, text: "from my laptop"),
                 expect: chatOut(3, "owner", 3, "from my laptop")),
            step("carol under epoch 1", envelope: try cast.message(seq: 4, from: "carol", epoch: 1, key: k1, counter: 2, text: "got the new key"),
                 expect: chatOut(4, "carol", 2, "got the new key")),
            step("carol's wrap is not the owner's", envelope: try cast.wrappedRotation(seq: 5, epoch: 2, grant: cast.grant(epoch: 2, key: k2), to: "carol", by: "owner"),
                 expect: rejected(5, .undecryptable)),
            step("a plain rotation to epoch 2", envelope: try cast.plainRotation(seq: 6, epoch: 2, grant: cast.grant(epoch: 2, key: k2), under: k1),
                 expect: rotationOut(6, 2)),
        ], state: cast.state(epoch: 2, keys: [0: k0, 1: k1, 2: k2], lastSeq: 6, counter: 3, members: ["carol"]))
    }

    func envelopeBounds() throws -> JSONValue {
        let cast = Cast(["owner", "bob"])
        let k0 = cast.roomKey()
        let good = try cast.message(seq: 1, from: "owner", epoch: 0, key: k0, counter: 1, text: "well formed")
        let malformed = { (note: String, envelope: JSONValue) in step(note, envelope: envelope, expect: rejected(nil, .malformed)) }
        let untouched = cast.state(epoch: 0, keys: [0: k0], lastSeq: 0, members: ["bob"])
        return cast.scenario("envelope-bounds", "Envelopes that are not well formed change nothing, not even lastSeq; the largest seq is accepted",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob"], steps: [
            malformed("epoch -1", good.with("epoch", -1)),
            malformed("epoch 2^53", good.with("epoch", 9_007_199_254_740_992)),
            malformed("epoch Int.min", good.with("epoch", .int(Int.min))),
            malformed("epoch Int.max", good.with("epoch", .int(Int.max))),
            malformed("epoch as a string", good.with("epoch", "0")),
            malformed("seq 0", good.with("seq", 0)),
            malformed("seq -1", good.with("seq", -1)),
            malformed("seq 2^53", good.with("seq", 9_007_199_254_740_992)),
            malformed("seq Int.min", good.with("seq", .int(Int.min))),
            malformed("seq 1.5", good.with("seq", 1.5)),
            malformed("another room's envelope", good.with("room", .string(Cast.otherRoom))),
            malformed("an unknown kind", good.with("kind", "reaction")),
            malformed("a time before 1970", good.with("at", -1)),
            malformed("a 129-character sender", good.with("from", .string(String(repeating: "A", count: 129)))),
            step("a rotation to epoch Int.min", envelope: good.with("kind", "rotation").with("epoch", .int(Int.min)),
                 expect: rejected(nil, .malformed), state: untouched),
            step("a 128-character sender is well formed, and no member", envelope: good.with("from", .string(String(repeating: "A", count: 128))),
                 expect: rejected(1, .notMember)),
            step("a message without payload", envelope: cast.envelope(seq: 2, from: "owner", epoch: 0), expect: rejected(2, .malformed)),
            step("the largest seq, 2^53 - 1", envelope: good.with("seq", 9_007_199_254_740_991),
                 expect: chatOut(9_007_199_254_740_991, "owner", 1, "well formed", ts: Cast.ts(1))),
        ], state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 9_007_199_254_740_991, members: ["bob"]))
    }

    func payloads() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol"])
        let (k0, k1) = (cast.roomKey(), cast.roomKey())
        let inner = { (fields: [String: JSONValue]) -> JSONValue in
            var message: [String: JSONValue] = ["v": 1, "room": .string(cast.room), "epoch": 1, "counter": 1, "ts": 1_760_000_000_000, "text": "x"]
            message.merge(fields) { $1 }
            return .object(message)
        }
        let sealed = { (seq: Int, message: JSONValue) in
            try cast.sealed(seq: seq, epoch: 1, inner: Array(message.description.utf8), signer: "carol", key: k1, context: (cast.room, 1))
        }
        var tampered = try cast.message(seq: 3, from: "carol", epoch: 1, key: k1, counter: 1, text: "tampered")
        if case .string(let payload) = tampered["payload"], var bytes = Base64.decode(payload) {
            bytes[bytes.count - 1] ^= 1
            tampered = tampered.with("payload", .string(Base64.encode(bytes)))
        }
        let long = String(repeating: "x", count: 20_000)
        return cast.scenario("payloads", "Payloads that do not open, open under another room or epoch, or hold a malformed message",
                             me: "bob", epoch: 1, keys: [0: k0, 1: k1], members: ["bob", "carol"], steps: [
            step("a message for epoch 7, whose key is missing",
                 envelope: try cast.sealed(seq: 1, epoch: 7, inner: Array(inner(["epoch": 7]).description.utf8), signer: "carol", key: k1, context: (cast.room, 7)),
                 expect: rejected(1, .missingKey)),
            step("random bytes", envelope: cast.envelope(seq: 2, from: "carol", epoch: 1, payload: RoomPayload.randomBytes(80)), expect: rejected(2, .undecryptable)),
            step("one bit flipped", envelope: tampered, expect: rejected(3, .undecryptable)),
            step("sealed under epoch 0, delivered as epoch 1",
                 envelope: try cast.message(seq: 4, from: "carol", epoch: 0, key: k0, counter: 1, text: "from epoch 0").with("epoch", 1),
                 expect: rejected(4, .undecryptable)),
            step("sealed under epoch 1, claiming epoch 0 inside", envelope: try sealed(5, inner(["epoch": 0])), expect: rejected(5, .wrongRoom)),
            step("sealed here, naming another room inside", envelope: try sealed(6, inner(["room": .string(Cast.otherRoom)])), expect: rejected(6, .wrongRoom)),
            step("sealed for another room",
                 envelope: try cast.sealed(seq: 7, epoch: 1, inner: Array(inner(["room": .string(Cast.otherRoom)]).description.utf8), signer: "carol", key: k1,
                                           context: (Cast.otherRoom, 1)),
                 expect: rejected(7, .undecryptable)),
            step("counter 0", envelope: try sealed(8, inner(["counter": 0])), expect: rejected(8, .malformed)),
            step("version 2", envelope: try sealed(9, inner(["v": 2])), expect: rejected(9, .malformed)),
            step("a time before 1970", envelope: try sealed(10, inner(["ts": -1])), expect: rejected(10, .malformed)),
            step("a 20000-character text: the only bound is the payload's (64 KiB)",
                 envelope: try sealed(11, inner(["text": .string(long), "ts": .int(Cast.ts(11))])), expect: chatOut(11, "carol", 1, long)),
            step("a message not signed at all",
                 envelope: try cast.sealed(seq: 12, epoch: 1, inner: Array(inner([:]).description.utf8), signer: nil, key: k1, context: (cast.room, 1)),
                 expect: rejected(12, .badSignature)),
            step("a signed message that is not JSON",
                 envelope: try cast.sealed(seq: 13, epoch: 1, inner: Array("hello".utf8), signer: "carol", key: k1, context: (cast.room, 1)),
                 expect: rejected(13, .malformed), state: cast.state(epoch: 1, keys: [0: k0, 1: k1], lastSeq: 13, members: ["bob", "carol"])),
            step("the same counter with another text at another seq",
                 envelope: try cast.message(seq: 14, from: "carol", epoch: 1, key: k1, counter: 1, text: "counter 1 again"), expect: rejected(14, .replay)),
        ], state: cast.state(epoch: 1, keys: [0: k0, 1: k1], lastSeq: 14, members: ["bob", "carol"]))
    }

    func names() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol", "dave", "mallory"])
        let k0 = cast.roomKey()
        let members = ["bob", "carol", "dave"]
        let named = { (seq: Int, from: String, counter: Int, name: String) in
            try cast.nameMessage(seq: seq, from: from, epoch: 0, key: k0, counter: counter, name: name)
        }
        // Any inner JSON from carol: a name message with one field replaced.
        let raw = { (seq: Int, fields: [String: JSONValue]) -> JSONValue in
            var message: [String: JSONValue] = ["v": 1, "kind": "name", "room": .string(cast.room), "epoch": 0, "counter": .int(seq + 100),
                                                "ts": .int(Cast.ts(seq)), "name": "Carol"]
            message.merge(fields) { $1 }
            return try cast.sealed(seq: seq, epoch: 0, inner: Array(JSONValue.object(message).description.utf8), signer: "carol", key: k0,
                                   context: (cast.room, 0))
        }
        let carla = try named(4, "carol", 3, "Carla")
        let longest = String(repeating: "é", count: 64) // 64 scalars, 128 bytes of UTF-8
        let state = { (lastSeq: Int, counter: Int, names: [String: (String, Bool)]) -> JSONValue in
            cast.state(epoch: 0, keys: [0: k0], lastSeq: lastSeq, counter: counter, members: members)
                .with("names", .object(names.mapValues { ["name": .string($0.0), "shared": .bool($0.1)] }))
        }
        let refused = { (seq: Int, note: String, fields: [String: JSONValue]) in
            step(note, envelope: try raw(seq, fields), expect: rejected(seq, .malformed))
        }
        return cast.scenario("names", "Display names (§6.7): set and changed by signed messages, the latest by seq in force, one rule for what a name may be, same names marked",
                             me: "bob", epoch: 0, keys: [0: k0], members: members, steps: [
            step("carol sets her name", envelope: try named(1, "carol", 1, "Carol"), expect: nameOut(1, "carol", 1, "Carol", previous: nil)),
            step("the owner sets a name", envelope: try named(2, "owner", 1, "Alice"), expect: nameOut(2, "owner", 1, "Alice", previous: nil)),
            step("carol's chat message uses the same counters", envelope: try cast.message(seq: 3, from: "carol", epoch: 0, key: k0, counter: 2, text: "hi"),
                 expect: chatOut(3, "carol", 2, "hi")),
            step("carol changes her name", envelope: carla, expect: nameOut(4, "carol", 3, "Carla", previous: "Carol"),
                 state: state(4, 0, ["carol": ("Carla", false), "owner": ("Alice", false)])),
            step("dave takes the owner's name: both are marked", envelope: try named(5, "dave", 1, "Alice"),
                 expect: nameOut(5, "dave", 1, "Alice", previous: nil),
                 state: state(5, 0, ["carol": ("Carla", false), "owner": ("Alice", true), "dave": ("Alice", true)])),
            step("a name from a key that is no member", envelope: try named(6, "mallory", 1, "Carla"), expect: rejected(6, .notMember),
                 state: state(6, 0, ["carol": ("Carla", false), "owner": ("Alice", true), "dave": ("Alice", true)])),
            try refused(7, "65 scalars", ["name": .string(longest + "e")]),
            step("exactly 64 scalars", envelope: try named(8, "carol", 4, longest), expect: nameOut(8, "carol", 4, longest, previous: "Carla")),
            try refused(9, "a control character (BEL)", ["name": "Eve\u{07}"]),
            try refused(10, "a right-to-left override", ["name": "\u{202E}evil"]),
            try refused(11, "a line feed inside", ["name": "Ca\nrol"]),
            try refused(12, "a leading space: not trimmed", ["name": " Carol"]),
            try refused(13, "a trailing no-break space: not trimmed", ["name": "Carol\u{A0}"]),
            try refused(14, "decomposed (e + combining acute): not NFC", ["name": "Ame\u{301}lie"]),
            try refused(15, "empty", ["name": ""]),
            try refused(16, "only spaces", ["name": "   "]),
            try refused(17, "a zero-width space", ["name": "Ca\u{200B}rol"]),
            try refused(18, "a name that is not a string", ["name": 5]),
            try refused(19, "no name at all", ["name": .null]),
            try refused(20, "an unknown kind", ["kind": "nickname"]),
            try refused(21, "a kind that is null", ["kind": .null]),
            step("so carol is still called by her 64 scalars", envelope: try named(22, "carol", 5, "Carol"),
                 expect: nameOut(22, "carol", 5, "Carol", previous: longest)),
            step("her rename read again at its seq: a duplicate, nothing changes", envelope: carla, expect: duplicate(4)),
            step("her rename at another seq: a replay", envelope: carla.with("seq", 23), expect: rejected(23, .replay)),
            step("dave renames himself", envelope: try named(25, "dave", 3, "Dave"), expect: nameOut(25, "dave", 3, "Dave", previous: "Alice")),
            step("dave's earlier name, read after the later one: accepted, not in force", envelope: try named(24, "dave", 2, "Alice again"),
                 expect: nameOut(24, "dave", 2, "Alice again", previous: "Dave", inForce: false),
                 state: state(25, 0, ["carol": ("Carol", false), "owner": ("Alice", false), "dave": ("Dave", false)])),
            step("my own name, set from my other client (a joiner, an emoji with ZWJ inside: allowed)",
                 envelope: try named(26, "bob", 3, "Bob 👩‍💻"), expect: nameOut(26, "bob", 3, "Bob 👩‍💻", previous: nil)),
        ], state: state(26, 3, ["carol": ("Carol", false), "owner": ("Alice", false), "dave": ("Dave", false), "bob": ("Bob 👩‍💻", false)]))
    }

    // MARK: expected outcomes

    func replayWindow() throws -> JSONValue {
        let cast = Cast(["owner", "bob", "carol"])
        let k0 = cast.roomKey()
        let messages = try (1...4).map { try cast.message(seq: $0, from: "carol", epoch: 0, key: k0, counter: $0, text: "carol \($0)") }
        return cast.scenario("replay-window", "A bounded replay table (window 2 here, 1024 in the clients): counters older than the window are folded into a floor; at or below the floor's seq they read as duplicates, later as replays",
                             me: "bob", epoch: 0, keys: [0: k0], members: ["bob", "carol"], replayWindow: 2, steps: [
            step("counter 1", envelope: messages[0], expect: chatOut(1, "carol", 1, "carol 1")),
            step("counter 2", envelope: messages[1], expect: chatOut(2, "carol", 2, "carol 2")),
            step("counter 3: counter 1 is folded into the floor (1 at seq 1)", envelope: messages[2], expect: chatOut(3, "carol", 3, "carol 3")),
            step("counter 1 read again at its seq: a duplicate, from the floor", envelope: messages[0], expect: duplicate(1)),
            step("counter 1 at a later seq: a replay, from the floor", envelope: messages[0].with("seq", 5), expect: rejected(5, .replay)),
            step("counter 2, still in the window, at a later seq: a replay", envelope: messages[1].with("seq", 6), expect: rejected(6, .replay)),
            step("counter 4: counter 2 is folded (the floor is 2 at seq 2)", envelope: messages[3].with("seq", 7), expect: chatOut(7, "carol", 4, "carol 4", ts: Cast.ts(4))),
            step("counter 2 read again at its seq: a duplicate", envelope: messages[1], expect: duplicate(2)),
            step("counter 2 at a later seq: a replay", envelope: messages[1].with("seq", 8), expect: rejected(8, .replay)),
            step("counter 3, in the window, read again: a duplicate", envelope: messages[2], expect: duplicate(3)),
        ], state: cast.state(epoch: 0, keys: [0: k0], lastSeq: 8, members: ["bob", "carol"]))
    }

    func nameOut(_ seq: Int, _ from: String, _ counter: Int, _ name: String, previous: String?, inForce: Bool = true) -> JSONValue {
        ["outcome": "name", "seq": .int(seq), "from": .string(from), "counter": .int(counter), "ts": .int(Cast.ts(seq)),
         "name": .string(name), "previous": previous.map(JSONValue.string) ?? .null, "inForce": .bool(inForce)]
    }

    let admitted: JSONValue = ["outcome": "admitted"]
    let refused: JSONValue = ["outcome": "refused"]
    let verified: JSONValue = ["outcome": "verified"]
    let unverified: JSONValue = ["outcome": "unverified"]

    func chatOut(_ seq: Int, _ from: String, _ counter: Int, _ text: String, ts: Int? = nil) -> JSONValue {
        ["outcome": "chat", "seq": .int(seq), "from": .string(from), "counter": .int(counter), "ts": .int(ts ?? Cast.ts(seq)), "text": .string(text)]
    }

    func duplicate(_ seq: Int) -> JSONValue { ["outcome": "duplicate", "seq": .int(seq)] }
    func rotationOut(_ seq: Int, _ epoch: Int) -> JSONValue { ["outcome": "rotation", "seq": .int(seq), "epoch": .int(epoch)] }

    /// `seq` nil: an envelope refused before its seq means anything.
    func rejected(_ seq: Int?, _ reason: RoomState.Reason) -> JSONValue {
        var out: [String: JSONValue] = ["outcome": "rejected", "reason": .string(reason.rawValue)]
        if let seq { out["seq"] = .int(seq) }
        return .object(out)
    }

    func step(_ note: String, envelope: JSONValue? = nil, hello: JSONValue? = nil, memberJoined: JSONValue? = nil,
              departure: JSONValue? = nil, expect: JSONValue? = nil, state: JSONValue? = nil) -> JSONValue {
        var step: [String: JSONValue] = ["note": .string(note)]
        step["envelope"] = envelope
        step["hello"] = hello
        step["memberJoined"] = memberJoined
        step["departure"] = departure
        step["expect"] = expect
        step["state"] = state
        return .object(step)
    }
}

/// The people of one case: a fresh key each, and what they sign and seal.
struct Cast {
    static let otherRoom = "OtherRoomOtherRoom0000"
    let room = Base64.encodeURL(RoomPayload.randomBytes(16))
    let keys: [String: ThemisPrivateKey]

    init(_ names: [String]) {
        keys = Dictionary(uniqueKeysWithValues: names.map { ($0, ThemisPrivateKey()) })
    }

    /// The sender's clock in a case: a message at seq n was written at this time.
    static func ts(_ seq: Int) -> Int { 1_760_000_000_000 + seq }

    func pub(_ name: String) -> String { KeyID.json(keys[name]!.publicKey) }
    func roomKey() -> SymmetricKey { RoomPayload.newRoomKey() }

    func sign(_ statement: [UInt8], by signer: String) -> JSONValue {
        .string(Base64.encode(try! SecureMessage.sign(statement, with: keys[signer]!)))
    }

    /// A `members` entry, or a `member_joined` push: `name` with a membership signed by `signer`.
    func member(_ name: String, signer: String = "owner") -> JSONValue {
        ["key": .string(pub(name)), "signature": sign(Statement.membership(room: room, key: pub(name)), by: signer)]
    }

    /// A departure statement of `name`, signed by whoever §6.5 says unless `signer` is given.
    func departureSignature(_ name: String, _ departure: Departure, signer: String? = nil) -> JSONValue {
        switch departure {
        case .left: sign(Statement.leave(room: room, key: pub(name)), by: signer ?? name)
        case .removed: sign(Statement.removal(room: room, key: pub(name)), by: signer ?? "owner")
        }
    }

    /// A `formerMembers` entry of `hello`.
    func former(_ name: String, until: Int, _ departure: Departure, departureSigner: String? = nil) -> JSONValue {
        ["key": .string(pub(name)), "signature": member(name)["signature"]!, "until": .int(until),
         "departure": .string(departure.rawValue), "departureSignature": departureSignature(name, departure, signer: departureSigner)]
    }

    /// A `member_left` / `member_removed` push.
    func departure(_ name: String, _ departure: Departure, until: Int, signer: String? = nil) -> JSONValue {
        ["key": .string(pub(name)), "departure": .string(departure.rawValue), "until": .int(until),
         "signature": departureSignature(name, departure, signer: signer)]
    }

    /// An envelope as §4.4 shows it; `payload` and `wrap` only when given.
    func envelope(seq: Int, kind: String = "message", from: String, epoch: Int, payload: [UInt8]? = nil, wrap: [UInt8]? = nil) -> JSONValue {
        var envelope: [String: JSONValue] = ["room": .string(room), "seq": .int(seq), "kind": .string(kind), "from": .string(pub(from)),
                                             "epoch": .int(epoch), "at": .int(Cast.ts(seq) + 5)]
        if let payload { envelope["payload"] = .string(Base64.encode(payload)) }
        if let wrap { envelope["wrap"] = .string(Base64.encode(wrap)) }
        return .object(envelope)
    }

    /// An honest chat message, sealed the way `RoomState.compose` seals it.
    func message(seq: Int, from: String, epoch: Int, key: SymmetricKey, counter: Int, text: String) throws -> JSONValue {
        let message = ChatMessage(room: room, epoch: epoch, counter: counter, ts: Int64(Cast.ts(seq)), text: text)
        return envelope(seq: seq, from: from, epoch: epoch, payload: try RoomPayload.seal(message, roomKey: key, signer: keys[from]!))
    }

    /// An honest name message (§6.7), sealed the way `RoomState.composeName` seals it.
    func nameMessage(seq: Int, from: String, epoch: Int, key: SymmetricKey, counter: Int, name: String) throws -> JSONValue {
        let message = NameMessage(room: room, epoch: epoch, counter: counter, ts: Int64(Cast.ts(seq)), name: name)
        return envelope(seq: seq, from: from, epoch: epoch, payload: try RoomPayload.seal(message, roomKey: key, signer: keys[from]!))
    }

    /// Any inner bytes, signed by `signer` (nil: not signed) and sealed under `key` with `context`.
    func sealed(seq: Int, epoch: Int, inner: [UInt8], signer: String?, key: SymmetricKey, context: (room: String, epoch: Int)) throws -> JSONValue {
        let signed = try signer.map { try SecureMessage.sign(inner, with: keys[$0]!) } ?? inner
        let payload = try RoomPayload.cell(key).encrypt(signed, context: Statement.roomContext(room: context.room, epoch: context.epoch))
        return envelope(seq: seq, from: signer ?? "carol", epoch: epoch, payload: payload)
    }

    /// A signed rotation grant (§6.3), of any content.
    func grant(epoch: Int, key: SymmetricKey, room: String? = nil, type: String = "rotation", signer: String = "owner") throws -> [UInt8] {
        let grant: JSONValue = ["v": 1, "type": .string(type), "room": .string(room ?? self.room), "epoch": .int(epoch), "key": .string(Base64.encode(key.bytes))]
        return try SecureMessage.sign(Array(grant.description.utf8), with: keys[signer]!)
    }

    func plainRotation(seq: Int, epoch: Int, grant: [UInt8], under oldKey: SymmetricKey, from: String = "owner") throws -> JSONValue {
        let payload = try RoomPayload.sealRotation(grant, oldKey: oldKey, room: room, oldEpoch: max(epoch - 1, 0))
        return envelope(seq: seq, kind: "rotation", from: from, epoch: epoch, payload: payload)
    }

    /// A wrapped rotation as the server hands it to one key: only that key's wrap, no payload.
    func wrappedRotation(seq: Int, epoch: Int, grant: [UInt8], to recipient: String, by wrapper: String) throws -> JSONValue {
        let wrap = try SecureMessage.encrypt(grant, from: keys[wrapper]!, to: keys[recipient]!.publicKey)
        return envelope(seq: seq, kind: "rotation", from: "owner", epoch: epoch, wrap: wrap)
    }

    /// The expected state: names for keys, b64 for room keys.
    func state(epoch: Int, keys roomKeys: [Int: SymmetricKey], lastSeq: Int, counter: Int = 0, members: [String],
               former: [String: (until: Int, departure: String?)] = [:]) -> JSONValue {
        ["epoch": .int(epoch), "lastSeq": .int(lastSeq), "counter": .int(counter),
         "keys": .object(Dictionary(uniqueKeysWithValues: roomKeys.map { (String($0.key), .string(Base64.encode($0.value.bytes))) })),
         "members": .array(members.sorted().map(JSONValue.string)),
         "former": .object(former.mapValues { ["until": .int($0.until), "departure": $0.departure.map(JSONValue.string) ?? .null] })]
    }

    func scenario(_ name: String, _ about: String, me: String, epoch: Int, keys roomKeys: [Int: SymmetricKey], members: [String],
                  former: [JSONValue] = [], replayWindow: Int? = nil, steps: [JSONValue], state: JSONValue) -> JSONValue {
        var start: JSONValue = ["epoch": .int(epoch),
                                "keys": .object(Dictionary(uniqueKeysWithValues: roomKeys.map { (String($0.key), .string(Base64.encode($0.value.bytes))) })),
                                "members": .array(members.map { member($0) }), "formerMembers": .array(former)]
        if let replayWindow { start = start.with("replayWindow", .int(replayWindow)) }
        return ["name": .string(name), "about": .string(about), "room": .string(room), "me": .string(me),
                "keys": .object(keys.mapValues { .string(Base64.encode($0.containerBytes)) }),
                "start": start, "steps": .array(steps), "state": state]
    }
}

extension JSONValue {
    /// A copy of this object with one field replaced.
    func with(_ key: String, _ value: JSONValue) -> JSONValue {
        guard case .object(var object) = self else { return self }
        object[key] = value
        return .object(object)
    }
}
