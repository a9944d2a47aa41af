import Foundation
import HushClient
import HushProtocol
@testable import HushServer
import HushTestSupport
import Testing
@testable import ThemisKit

/// Protocol v2 (docs/PROTOCOL.md §4.4, §4.5): no acknowledged message is ever unreadable.
/// Each rule tried from the side that would break it.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ProtocolV2Tests {
    static func isText(_ text: String) -> @Sendable (RoomClient.Event) -> Bool {
        { if case .message(_, _, text) = $0 { true } else { false } }
    }

    static let isRotation: @Sendable (RoomClient.Event) -> Bool = { if case .rotated = $0 { true } else { false } }

    /// A `send` sealed by hand under `state`'s current epoch (or `epoch`, to lie about it).
    static func sendRequest(_ state: inout RoomState, text: String, epoch: Int? = nil,
                            messageID: [UInt8] = RoomPayload.randomBytes(16)) throws -> WireMessage {
        var request = WireMessage(type: "send")
        request.room = state.room
        request.epoch = epoch ?? state.epoch
        request.messageId = Base64Bytes(messageID)
        request.payload = Base64Bytes(try state.compose(text: text, now: 1))
        return request
    }

    @Test func aSendSealedUnderAnOldEpochIsRefusedThenResealed() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            // Bob's client misses the rotation (it was offline): it still seals under epoch 0.
            await bob.disconnect()
            let rotationSeq = try await owner.rotate()
            try await bob.reconnect()
            #expect(await bob.state.epoch == 0)

            var stale = await bob.state
            let reply = try await bob.rawConnection.exchange(try Self.sendRequest(&stale, text: "under the old key"))
            #expect(reply.code == ErrorCode.staleEpoch.rawValue && reply.epoch == 1)
            #expect(try await server.server.store.room(room)?.lastSeq == rotationSeq)
            // The client itself reads the rotation and seals again, once.
            let seq = try await bob.send("resealed")
            #expect(seq == rotationSeq + 1)
            #expect(await bob.state.epoch == 1)
            #expect(try await next(owner.events, where: Self.isText("resealed")) == .message(seq: seq, from: await bob.key, text: "resealed"))
        }
    }

    @Test func aRepeatedMessageIDIsStoredOnceAndAnsweredWithTheOriginalSeq() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            // Carol's requests by hand (her client itself never sends, so counters stay unique).
            var state = await carol.state
            let id = RoomPayload.randomBytes(16)
            let first = try await carol.rawConnection.request(try Self.sendRequest(&state, text: "once", messageID: id))
            // A retry after a lost `sent`: another sealing (new counter), the same id.
            let again = try await carol.rawConnection.request(try Self.sendRequest(&state, text: "once", messageID: id))
            #expect(first.seq == 1 && again.seq == 1)
            #expect(try await server.server.store.room(room)?.lastSeq == 1)
            // The same id from another key is another message.
            var ownerState = await owner.state
            #expect(try await owner.rawConnection.request(try Self.sendRequest(&ownerState, text: "mine", messageID: id)).seq == 2)
            _ = try await carol.rawConnection.request(try Self.sendRequest(&state, text: "after"))
            // Pushes come in order: the repeat pushed nothing between "once" and "after".
            let isMessage: @Sendable (RoomClient.Event) -> Bool = { if case .message = $0 { true } else { false } }
            let carolKey = await carol.key
            #expect(try await next(bob.events, where: isMessage) == .message(seq: 1, from: carolKey, text: "once"))
            #expect(try await next(bob.events, where: isMessage) == .message(seq: 2, from: await owner.key, text: "mine"))
            #expect(try await next(bob.events, where: isMessage) == .message(seq: 3, from: carolKey, text: "after"))
            // And through the client: the same id twice is one message.
            let clientID = RoomPayload.randomBytes(16)
            let seq = try await bob.send("client retry", messageID: clientID)
            #expect(try await bob.send("client retry", messageID: clientID) == seq)
            #expect(try await owner.history(after: 0).count { Self.isText("client retry")($0) } == 1)
            // Ids are bounded and required, and so is the epoch.
            var bad = try Self.sendRequest(&state, text: "x", messageID: Array(repeating: 1, count: 33))
            #expect(try await errorCode(carol.rawConnection, bad) == .tooLarge)
            bad.messageId = nil
            #expect(try await errorCode(carol.rawConnection, bad) == .badRequest)
            bad = try Self.sendRequest(&state, text: "x")
            bad.epoch = nil
            #expect(try await errorCode(carol.rawConnection, bad) == .badRequest)
            #expect(try await server.server.store.room(room)?.lastSeq == seq)
        }
    }

    @Test func afterALeaveSendsWaitForTheWrappedRotation() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            try await bob.leave()
            _ = try await next(owner.events) { if case .memberLeft = $0 { true } else { false } }
            #expect(try await server.server.store.room(room)?.wrapRequired == true)

            // Bob still holds the epoch-0 key: nothing may be said under it any more.
            var carolState = await carol.state
            let refused = try await carol.rawConnection.exchange(try Self.sendRequest(&carolState, text: "too early"))
            #expect(refused.code == ErrorCode.rotationPending.rawValue && refused.epoch == 0)
            var ownerState = await owner.state
            #expect(try await errorCode(owner.rawConnection, try Self.sendRequest(&ownerState, text: "too early")) == .rotationPending)
            #expect(try await server.server.store.room(room)?.lastSeq == 0)

            // Carol's client holds the text until the owner rotates; nothing is lost.
            await owner.disconnect()
            async let held = carol.send("held until the rotation")
            #expect(try await next(carol.events) { $0 == .sendHeld } == .sendHeld)
            try await owner.reconnect()
            _ = try await owner.rotate()
            let seq = try await held
            #expect(await carol.state.epoch == 1)
            let ownerView = try await owner.history(after: 0)
            #expect(ownerView.last == .message(seq: seq, from: await carol.key, text: "held until the rotation"))
            // The owner's own send after a departure rotates first, then goes out.
            try await carol.leave()
            _ = try await next(owner.events) { if case .memberLeft = $0 { true } else { false } }
            let ownSeq = try await owner.send("rotated by the send itself")
            #expect(try await server.server.store.room(room)?.epoch == 2)
            #expect(ownSeq == seq + 2)
        }
    }

    @Test func theOwnersSecondClientFollowsAWrappedRotation() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            // A second client of the same owner key (another tab, `hush chat remove` beside
            // `hush chat open`), registered before the removal.
            let tab = try await RoomClient.resume(await owner.state, on: info)
            try await owner.remove(await bob.key)
            #expect(try await next(tab.events, where: Self.isRotation) == .rotated(seq: 1, epoch: 1))
            let seq = try await carol.send("after the removal")
            #expect(try await next(tab.events, where: Self.isText("after the removal")) == .message(seq: seq, from: await carol.key, text: "after the removal"))
            // And through history, for a client that was offline meanwhile.
            let late = try await RoomClient.resume(RoomState(room: await owner.room, owner: await owner.state.owner,
                                                             me: await owner.state.me, epoch: 0, roomKey: await tab.state.keys[0]!), on: info)
            #expect(try await late.history(after: 0) == [.rotated(seq: 1, epoch: 1), .message(seq: seq, from: await carol.key, text: "after the removal")])

            // A wrapped rotation without the owner's own wrap is refused.
            let state = await owner.state
            let members = Array(await owner.members)
            let rotation = try state.makeRotation(wrappedFor: members)
            var rotate = WireMessage(type: "rotate")
            rotate.room = await owner.room
            rotate.epoch = rotation.epoch
            rotate.wraps = rotation.wraps?.filter { $0.key != state.myKey }
            #expect(try await errorCode(owner.rawConnection, rotate) == .wrapsRequired)
        }
    }

    @Test func pushesOfARoomArriveInSequenceOrderUnderConcurrentSenders() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            var senders = [owner]
            for _ in 0..<3 { senders.append(try await RoomClient.join(link: try await owner.invite())) }
            let watcher = try await HushConnection.openRegistered(server: info, key: await owner.state.me)
            let perSender = 15
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, sender) in senders.enumerated() {
                    group.addTask { for n in 0..<perSender { try await sender.send("s\(index)-\(n)") } }
                }
                try await group.waitForAll()
            }
            let total = senders.count * perSender
            var seqs: [Int] = []
            while seqs.count < total {
                let push = try await next(watcher.pushes) { $0.type == "message" }
                seqs.append(push.seq ?? -1)
            }
            #expect(seqs == Array(1...total))
        }
    }

    @Test func theWriterConnectionRunsWithSynchronousFull() async throws {
        try await withTestServer { server in
            let store = try #require(server.server.store as? SQLiteStore)
            #expect(try store.writerSynchronousLevel() == SQLiteStore.synchronousFull)
        }
    }

    @Test func keysAreWellFormedAndCanonicalBeforeAnyLookup() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let bob = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            let bobPrivate = await bob.state.me
            // The 77-byte (uncompressed) container of Bob's key: the same key, another spelling.
            let uncompressed = SoterContainer(tag: "UEC2", payload: Array(bobPrivate.publicKey.signingKey.x963Representation)).serialized
            #expect(uncompressed.count == 77)
            let statement = Statement.leave(room: room, key: await bob.key)
            #expect(Statement.verify(try SecureMessage.sign(statement, with: bobPrivate), signs: statement,
                                     by: try ThemisPublicKey(containerBytes: uncompressed)))
            for key in ["@@", Base64.encode(RoomPayload.randomBytes(45)), Base64.encode(uncompressed)] {
                var remove = WireMessage(type: "remove_member")
                remove.room = room
                remove.key = key
                remove.signature = Base64Bytes([1])
                #expect(try await errorCode(owner.rawConnection, remove) == .badRequest)
                var add = WireMessage(type: "add_member")
                add.room = room
                add.inviteId = Base64Bytes(RoomPayload.randomBytes(32))
                add.key = key
                add.signature = Base64Bytes([1])
                #expect(try await errorCode(owner.rawConnection, add) == .badRequest)
            }
            // Nor can that spelling open a session as a fresh identity.
            await #expect(throws: (any Error).self) {
                _ = try await HushConnection.open(server: info, key: bobPrivate, sessionID: Array(Base64.encodeURL(uncompressed).utf8))
            }
            #expect(try await server.server.store.members(of: room).count == 2)
        }
    }
}
