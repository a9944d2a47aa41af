import Crypto
import Foundation
import HushClient
import HushProtocol
import HushTestSupport
import Testing
import ThemisKit

/// What a hostile owner or server sends a member: refused with a clear reason, never a trap,
/// never a key that locks the member out of its key store later.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ClientHardeningTests {
    static let room = "room-under-test"

    /// An owner's plain rotation to `epoch` carrying `key`, sealed under `oldKey`.
    static func rotation(owner: ThemisPrivateKey, oldKey: SymmetricKey, epoch: Int, key: SymmetricKey, seq: Int) throws -> Envelope {
        let signed = try RoomPayload.signRotation(room: room, epoch: epoch, key: key, owner: owner)
        let payload = try RoomPayload.sealRotation(signed, oldKey: oldKey, room: room, oldEpoch: epoch - 1)
        return Envelope(room: room, seq: seq, kind: "rotation", from: KeyID.json(owner.publicKey), epoch: epoch, at: 1,
                        payload: payload, wrap: nil)
    }

    @Test func aRotationWithAKeyOfTheWrongLengthIsRefusedAndNotInstalled() throws {
        let owner = ThemisPrivateKey()
        let roomKey = RoomPayload.newRoomKey()
        var member = RoomState(room: Self.room, owner: owner.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        for (seq, key) in ([[], Array(repeating: 7, count: 16), Array(repeating: 7, count: 33)] as [[UInt8]]).enumerated() {
            let verdict = member.receive(try Self.rotation(owner: owner, oldKey: roomKey, epoch: 1, key: SymmetricKey(data: key), seq: seq + 1))
            #expect(verdict.isRejected)
            #expect(member.keys.count == 1 && member.epoch == 0)
        }
        // The honest rotation after them still works.
        let good = RoomPayload.newRoomKey()
        #expect(member.receive(try Self.rotation(owner: owner, oldKey: roomKey, epoch: 1, key: good, seq: 9)) == .rotated(seq: 9, epoch: 1))
        #expect(member.keys[1] == good)
    }

    @Test func envelopesOutOfRangeChangeNothing() throws {
        let owner = ThemisPrivateKey()
        var member = RoomState(room: Self.room, owner: owner.publicKey, me: ThemisPrivateKey(), epoch: 0,
                               roomKey: RoomPayload.newRoomKey())
        let from = KeyID.json(owner.publicKey)
        let hostile = [
            Envelope(room: Self.room, seq: 1, kind: "rotation", from: from, epoch: Int.min, at: 1, payload: [1], wrap: nil),
            Envelope(room: Self.room, seq: 1, kind: "rotation", from: from, epoch: 0, at: 1, payload: [1], wrap: nil),
            Envelope(room: Self.room, seq: Int.max, kind: "message", from: from, epoch: 0, at: 1, payload: [1], wrap: nil),
            Envelope(room: Self.room, seq: 0, kind: "message", from: from, epoch: 0, at: 1, payload: [1], wrap: nil),
            Envelope(room: Self.room, seq: 2, kind: "message", from: from, epoch: -1, at: 1, payload: [1], wrap: nil),
            Envelope(room: "another-room", seq: 3, kind: "message", from: from, epoch: 0, at: 1, payload: [1], wrap: nil),
            Envelope(room: Self.room, seq: 4, kind: "surprise", from: from, epoch: 0, at: 1, payload: [1], wrap: nil),
        ]
        for envelope in hostile { #expect(member.receive(envelope).isRejected) }
        // Only the well-formed rotation to epoch 0 (refused for its epoch) counts as seen.
        #expect(member.lastSeq == 1 && member.epoch == 0 && member.keys.count == 1)
        #expect(throws: PayloadError.undecryptable) {
            try RoomPayload.openRotation(payload: [1], oldKey: RoomPayload.newRoomKey(), room: Self.room, newEpoch: Int.min,
                                         owner: owner.publicKey)
        }
    }

    /// The server's history page holds up to 1 MiB of payloads: a Swift member reads a room of
    /// large messages (it used to refuse frames over 1 MiB and lose its connection every time).
    /// The longest text a client sends, 4000 three-byte characters, is padded to the 16 KiB
    /// bucket (§6.1): 63 such payloads fill a page.
    @Test func aMemberReadsHistoryPagesOfLargeMessages() async throws {
        var limits = Limits.standard
        limits.requestBurst = 200
        try await withTestServer(limits: limits) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let texts = (0..<70).map { "\($0) " + String(repeating: "€", count: ChatMessage.maxTextLength - 3) }
            for text in texts { try await owner.send(text) }
            var request = WireMessage(type: "history")
            request.room = await owner.room
            request.after = 0
            let page = try await bob.rawConnection.request(request)
            let pageBytes = (page.messages ?? []).reduce(0) { $0 + ($1.payload?.bytes.count ?? 0) }
            #expect(pageBytes > 900 * 1024, "the first page should be close to the server's 1 MiB budget")
            let read = try await bob.history(after: 0).compactMap { event -> String? in
                if case .message(_, _, let text) = event { text } else { nil }
            }
            #expect(read == texts)
        }
    }
}
