import Foundation
import HushTestSupport
import HushClient
import HushProtocol
import HushServer
import Testing
import ThemisKit

/// Departures (docs/PROTOCOL.md §4.1 `formerMembers`, §4.2 signed `leave`, §6.5): a member who
/// joins after someone left or was removed still verifies that key's earlier messages, and why
/// it is gone.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DepartureTests {
    static func isMessage(_ text: String) -> @Sendable (RoomClient.Event) -> Bool {
        { if case .message(_, _, text) = $0 { true } else { false } }
    }

    /// Owner and Bob; Bob says one thing that the owner receives.
    static func roomWithBobsMessage(_ server: TestServer) async throws -> (RoomClient, RoomClient) {
        let owner = try await RoomClient.create(server: try await server.info())
        let bob = try await RoomClient.join(link: try await owner.invite())
        _ = try await bob.send("bob was here")
        _ = try await next(owner.events, where: isMessage("bob was here"))
        return (owner, bob)
    }

    /// A chat payload from `from`'s state as the server would deliver it at `seq`.
    static func envelope(from state: inout RoomState, seq: Int, text: String) throws -> Envelope {
        let payload = try state.compose(text: text, now: 1)
        return Envelope(room: state.room, seq: seq, kind: "message", from: state.myKey, epoch: state.epoch, at: 1,
                        payload: payload, wrap: nil)
    }

    @Test(arguments: StoreChoice.all) func laterJoinerVerifiesARemovedMembersEarlierMessages(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let (owner, bob) = try await Self.roomWithBobsMessage(server)
            let room = await owner.room
            let bobKey = await bob.key
            // Removed without the rotation yet (the owner's client crashed in between, say).
            var remove = WireMessage.request("remove_member", room: room)
            remove.key = bobKey
            let removal = try SecureMessage.sign(Statement.removal(room: room, key: bobKey), with: await owner.state.me)
            remove.signature = Base64Bytes(removal)
            #expect(try await owner.rawConnection.request(remove).until == 1)

            let carol = try await RoomClient.join(link: try await owner.invite())
            #expect(try await carol.history(after: 0) == [.message(seq: 1, from: bobKey, text: "bob was here")])
            let former = try #require(await carol.state.former[bobKey])
            #expect(former == RoomState.FormerMember(until: 1, departure: .removed))
            #expect(await carol.members.contains(bobKey) == false)

            // `hello` says it all: membership, until, kind and the owner's removal signature.
            let hello = try await carol.rawConnection.request(WireMessage(type: "hello"))
            let entry = try #require(hello.rooms?.first?.formerMembers?.first)
            #expect(entry.key == bobKey && entry.until == 1 && entry.departure == .removed)
            #expect(entry.departureSignature.bytes == removal)
            #expect(Statement.verify(entry.signature.bytes, signs: Statement.membership(room: room, key: bobKey),
                                     by: await owner.state.owner))

            // Anything from Bob's key after his departure is a non-member's, even if it opens.
            var bobState = await bob.state
            var carolState = await carol.state
            let late = try Self.envelope(from: &bobState, seq: 2, text: "after removal")
            let verdict = carolState.receive(late)
            #expect(verdict == .rejected(seq: 2, reason: .notMember))
        }
    }

    @Test(arguments: StoreChoice.all) func laterJoinerVerifiesALeftMembersEarlierMessagesAndTheSignedLeave(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let (owner, bob) = try await Self.roomWithBobsMessage(server)
            let room = await owner.room
            let bobKey = await bob.key
            let ownerKey = await owner.state.owner
            // A second connection of the owner's key sees the raw push.
            // `openRegistered` returns only once the server has registered it, so the push of
            // the leave below cannot go out before this connection is there to receive it.
            let watcher = try await HushConnection.openRegistered(server: try await server.info(), key: await owner.state.me)
            try await bob.leave()
            let pushed = try await next(watcher.pushes) { $0.type == "member_left" }
            #expect(pushed.key == bobKey && pushed.until == 1)
            #expect(Statement.verifyDeparture(.left, signature: try #require(pushed.signature).bytes, room: room, key: bobKey,
                                              owner: ownerKey))
            #expect(try await next(owner.events) { if case .memberLeft = $0 { true } else { false } } == .memberLeft(key: bobKey))

            let carol = try await RoomClient.join(link: try await owner.invite())
            #expect(try await carol.history(after: 0) == [.message(seq: 1, from: bobKey, text: "bob was here")])
            #expect(await carol.state.former[bobKey] == RoomState.FormerMember(until: 1, departure: .left))
            var bobState = await bob.state
            var carolState = await carol.state
            let late = try Self.envelope(from: &bobState, seq: 2, text: "late")
            let verdict = carolState.receive(late)
            #expect(verdict.isRejected)
        }
    }

    @Test(arguments: StoreChoice.all) func leaveWithoutAValidSignatureChangesNothing(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let (owner, bob) = try await Self.roomWithBobsMessage(server)
            let room = await owner.room
            let bobKey = await bob.key
            let bobPrivate = await bob.state.me
            let connection = await bob.rawConnection
            func leave(_ signature: [UInt8]?) async throws -> ErrorCode? {
                var request = WireMessage.request("leave", room: room)
                request.signature = signature.map(Base64Bytes.init)
                return try await errorCode(connection, request)
            }
            #expect(try await leave(nil) == .badSignature)
            #expect(try await leave(try SecureMessage.sign(Statement.leave(room: room, key: bobKey), with: ThemisPrivateKey()))
                    == .badSignature)
            #expect(try await leave(try SecureMessage.sign(Statement.leave(room: "another-room", key: bobKey), with: bobPrivate))
                    == .badSignature)
            #expect(try await leave(try SecureMessage.sign(Statement.removal(room: room, key: bobKey), with: bobPrivate))
                    == .badSignature)
            #expect(try await leave(Array(repeating: 1, count: 5000)) == .tooLarge)
            let store = server.server.store
            #expect(try await store.members(of: room).map(\.key).contains(bobKey))
            #expect(try await store.isRetired(bobKey) == false)
            #expect(try await store.formerMembers(of: room, after: 0, limit: 10).isEmpty)
            #expect(try await store.room(room)?.wrapRequired == false)
            #expect(try await bob.send("still a member") == 2)
        }
    }

    @Test(arguments: StoreChoice.all) func rotationWithAWrongEpochIsEpochMismatchAndChangesNothing(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let room = await owner.room
            try await owner.send("one")
            for epoch in [0, 2, 7] {
                var rotate = WireMessage.request("rotate", room: room)
                rotate.epoch = epoch
                rotate.payload = Base64Bytes([1, 2, 3])
                #expect(try await errorCode(owner.rawConnection, rotate) == .epochMismatch)
            }
            let stored = try #require(try await server.server.store.room(room))
            #expect(stored.epoch == 0 && stored.lastSeq == 1 && stored.sinceRotation == 1)

            // Two clients of the same owner (two tabs): the second to rotate gets `epoch_mismatch`,
            // catches up through `hello` and history, and its next rotation succeeds.
            // The tab was offline while the owner rotated, so no push told it about the new epoch.
            let tab = try await RoomClient.resume(await owner.state, on: info)
            await tab.disconnect()
            try await owner.rotate()
            try await tab.reconnect()
            #expect(await tab.state.epoch == 0)
            await #expect(throws: HushError(.epochMismatch, "epoch must be the current epoch + 1")) { try await tab.rotate() }
            #expect(await tab.state.epoch == 1)
            try await tab.rotate()
            #expect(try await server.server.store.room(room)?.epoch == 2)
        }
    }

    /// The client-side rule alone: membership and departure signatures, and the `until` bound.
    @Test func formerMemberRulesOfRoomState() throws {
        let ownerKey = ThemisPrivateKey()
        let roomKey = RoomPayload.newRoomKey()
        let room = "room-under-test"
        var bob = RoomState(room: room, owner: ownerKey.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        var carol = RoomState(room: room, owner: ownerKey.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        let bobKey = bob.myKey
        let membership = try SecureMessage.sign(Statement.membership(room: room, key: bobKey), with: ownerKey)
        let leave = try SecureMessage.sign(Statement.leave(room: room, key: bobKey), with: bob.me)
        let early = try Self.envelope(from: &bob, seq: 3, text: "early")
        let late = try Self.envelope(from: &bob, seq: 6, text: "late")

        // Unknown key: rejected. A forged membership signature admits nothing.
        let unknown = carol.receive(early)
        #expect(unknown.isRejected)
        let forged = try SecureMessage.sign(Statement.membership(room: room, key: bobKey), with: ThemisPrivateKey())
        let forgedAdmitted = carol.admitFormer(FormerMemberEntry(key: bobKey, signature: forged, until: 5, departure: .left,
                                                                 departureSignature: leave))
        #expect(!forgedAdmitted && carol.former.isEmpty)

        // Valid membership: messages up to `until` (inclusive) count, later ones do not.
        let admitted = carol.admitFormer(FormerMemberEntry(key: bobKey, signature: membership, until: 5, departure: .left,
                                                           departureSignature: leave))
        #expect(admitted)
        #expect(carol.former[bobKey] == RoomState.FormerMember(until: 5, departure: .left))
        let earlyVerdict = carol.receive(early)
        #expect(earlyVerdict == .chat(seq: 3, from: bobKey, counter: 1, ts: 1, text: "early"))
        let lateVerdict = carol.receive(late)
        #expect(lateVerdict.isRejected)
        // A later claim cannot extend the window, nor can the old membership signature re-admit.
        carol.depart(key: bobKey, until: 9, departure: .left, signature: leave)
        #expect(carol.former[bobKey]?.until == 5)
        let readmitted = carol.admit(key: bobKey, signature: membership)
        #expect(!readmitted)
        let lateAgain = carol.receive(late)
        #expect(lateAgain.isRejected)

        // A departure whose signature does not verify still ends the membership, unexplained.
        var dave = RoomState(room: room, owner: ownerKey.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        let daveAdmits = dave.admit(key: bobKey, signature: membership)
        #expect(daveAdmits)
        let bogus = try SecureMessage.sign(Statement.leave(room: room, key: bobKey), with: ownerKey)
        let bogusVerified = dave.depart(key: bobKey, until: 3, departure: .left, signature: bogus)
        #expect(!bogusVerified)
        #expect(dave.former[bobKey] == RoomState.FormerMember(until: 3, departure: nil))
        #expect(!dave.members.contains(bobKey))
        let daveEarly = dave.receive(early)
        #expect(!daveEarly.isRejected)
        // A removal verifies against the owner, not the member; nobody lists the reader itself.
        var erin = RoomState(room: room, owner: ownerKey.publicKey, me: ThemisPrivateKey(), epoch: 0, roomKey: roomKey)
        let removal = try SecureMessage.sign(Statement.removal(room: room, key: bobKey), with: ownerKey)
        let erinAdmits = erin.admitFormer(FormerMemberEntry(key: bobKey, signature: membership, until: 4, departure: .removed,
                                                            departureSignature: removal))
        #expect(erinAdmits && erin.former[bobKey]?.departure == .removed)
        let selfListed = erin.admitFormer(FormerMemberEntry(key: erin.myKey, signature: membership, until: 4, departure: .left,
                                                            departureSignature: leave))
        #expect(!selfListed)
    }
}

extension RoomState.Event {
    var isRejected: Bool { if case .rejected = self { true } else { false } }
}
