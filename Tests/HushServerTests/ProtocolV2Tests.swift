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

    @Test(arguments: StoreChoice.all) func aSendSealedUnderAnOldEpochIsRefusedThenResealed(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
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

    @Test(arguments: StoreChoice.all) func aRepeatedMessageIDIsStoredOnceAndAnsweredWithTheOriginalSeq(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
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

    @Test(arguments: StoreChoice.all) func afterALeaveSendsWaitForTheWrappedRotation(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
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

    /// One rule for every room request (§5): a key not in the room is `not_member` whatever it
    /// asks, a member asking for what only the owner may do is `not_owner`, and neither
    /// changes the room.
    @Test(arguments: StoreChoice.all) func strangersAreNotMembersAndMembersAreNotOwners(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room, bobKey = await bob.key
            let stranger = try await HushConnection.openRegistered(server: try await server.info(), key: ThemisPrivateKey())
            let before = try await server.server.store.room(room)
            let signature = Base64Bytes([1, 2, 3])
            var ownerOnly: [WireMessage] = []
            for type in ["invite", "invites", "revoke_invite", "join_response", "add_member", "rotate", "remove_member", "delete_room"] {
                var request = WireMessage.request(type, room: room)
                request.inviteId = Base64Bytes(RoomPayload.randomBytes(32))
                request.expiresAt = Int64(Date().timeIntervalSince1970) + 3600
                request.sealed = Base64Bytes([9, 9, 9])
                request.key = bobKey
                request.signature = signature
                request.epoch = 1
                request.payload = Base64Bytes([7, 7, 7])
                ownerOnly.append(request)
            }
            for request in ownerOnly {
                #expect(try await errorCode(stranger, request) == .notMember, "\(request.type) from a stranger")
                #expect(try await errorCode(bob.rawConnection, request) == .notOwner, "\(request.type) from a member")
            }
            var stateOfAStranger = RoomState(room: room, owner: await owner.state.owner, me: ThemisPrivateKey(), epoch: 0,
                                             roomKey: RoomPayload.newRoomKey())
            #expect(try await errorCode(stranger, try Self.sendRequest(&stateOfAStranger, text: "hi")) == .notMember)
            #expect(try await errorCode(stranger, WireMessage.request("history", room: room)) == .notMember)
            #expect(try await errorCode(stranger, WireMessage.request("leave", room: room)) == .notMember)
            #expect(try await server.server.store.room(room) == before)
            #expect(try await server.server.store.members(of: room).count == 2)
        }
    }

    @Test(arguments: StoreChoice.all) func aKeyThatLeftIsRefusedOnItsOpenConnection(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            try await bob.leave()
            // The connection that left stays open, but speaks for a retired key from now on.
            #expect(try await errorCode(bob.rawConnection, WireMessage(type: "create_room")) == .removed)
            #expect(try await errorCode(bob.rawConnection, WireMessage(type: "hello")) == .removed)
        }
    }

    /// A send held for an owed rotation ends as soon as its connection does, with
    /// `connectionClosed` (its caller retries with the same message id), not after the wait.
    @Test func aHeldSendEndsWhenItsConnectionDoes() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            await owner.disconnect()
            try await bob.leave()
            // The wait is far longer than the suite may run: only the closed connection ends it.
            let held = Task { try await carol.send("held", rotationWait: .seconds(3600)) }
            #expect(try await next(carol.events) { $0 == .sendHeld } == .sendHeld)
            await carol.rawConnection.close()
            await #expect(throws: ClientError.connectionClosed) { try await held.value }
            #expect(try await server.server.store.room(await carol.room)?.lastSeq == 0)
        }
    }

    /// The owner answers joins even past its request budget: a rate-limited `join_response`
    /// is sent again once the budget refills, so no joiner waits for the owner's next hello.
    @Test func joinsArriveThroughTheOwnersRequestBudget() async throws {
        var limits = Limits.standard
        limits.requestsPerSecond = 2
        limits.requestBurst = 4
        // Every request arrives 100 ms after the one before (a fifth of a request's budget back
        // each time), so the owner is refused from its fifth request on, four times of five,
        // whatever the machine's speed.
        try await withTestServer(limits: limits, requestClock: StepClock(step: .milliseconds(100))) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            // The owner spends its burst here; each join then needs two more of its requests.
            let links = [try await owner.invite(), try await owner.invite(), try await owner.invite()]
            let joiners = try await withThrowingTaskGroup(of: RoomClient.self) { group in
                for link in links { group.addTask { try await RoomClient.join(link: link) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(joiners.count == 3)
            #expect(try await server.server.store.members(of: await owner.room).count == 4)
            let refusals = server.server.metrics.render().split(separator: "\n").first { $0.hasPrefix("hush_rate_limited_requests_total ") }
            #expect((refusals?.split(separator: " ").last.flatMap { Double($0) } ?? 0) > 0)
        }
    }

    /// An invite someone joined with answers the next holder `invite_used`, not `unknown_invite`,
    /// and cannot be registered again.
    @Test(arguments: StoreChoice.all) func anInviteAMemberJoinedWithSaysItWasUsed(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let link = try await owner.invite()
            _ = try await RoomClient.join(link: link)
            let invite = try InviteLink.parse(link).invite
            let late = try await HushConnection.open(server: info, key: ThemisPrivateKey())
            defer { late.close() }
            var again = WireMessage(type: "join")
            again.room = invite.room
            again.inviteId = Base64Bytes(invite.inviteID)
            again.joiningKey = Base64Bytes([1, 2, 3])
            let reply = try await late.exchange(again)
            #expect(reply.code == ErrorCode.inviteUsed.rawValue, "\(reply)")
            var register = WireMessage(type: "invite")
            register.room = invite.room
            register.inviteId = Base64Bytes(invite.inviteID)
            register.expiresAt = Int64(Date().timeIntervalSince1970) + 3600
            #expect(try await owner.rawConnection.exchange(register).code == ErrorCode.inviteUsed.rawValue)
        }
    }

    @Test(arguments: StoreChoice.all) func theOwnersSecondClientFollowsAWrappedRotation(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
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

    @Test(arguments: StoreChoice.all) func pushesOfARoomArriveInSequenceOrderUnderConcurrentSenders(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
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

    /// Group commit: many sends at once share transactions; a refusal among them rolls back only
    /// itself (each write has its own savepoint), and every accepted one is stored exactly once.
    @Test(arguments: StoreChoice.all) func concurrentSendsWithRefusalsAmongThemCommitExactlyTheAcceptedOnes(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            var members = [owner]
            for _ in 0..<4 { members.append(try await RoomClient.join(link: try await owner.invite())) }
            let room = await owner.room
            let results = try await withThrowingTaskGroup(of: (Bool, String?).self) { group in
                for member in members {
                    var state = await member.state
                    let connection = await member.rawConnection
                    for n in 0..<10 {
                        // Every third one claims an epoch the room does not have.
                        let request = try Self.sendRequest(&state, text: "n\(n)", epoch: n % 3 == 0 ? 5 : nil)
                        group.addTask {
                            let reply = try await connection.exchange(request)
                            return (reply.type == "sent", reply.code)
                        }
                    }
                }
                return try await group.reduce(into: [(Bool, String?)]()) { $0.append($1) }
            }
            let accepted = results.filter(\.0).count
            #expect(accepted == 5 * 6)
            #expect(results.filter { !$0.0 }.allSatisfy { $0.1 == ErrorCode.staleEpoch.rawValue })
            #expect(try await server.server.store.room(room)?.lastSeq == accepted)
            let history = try await owner.history(after: 0)
            #expect(history.count == accepted && history.allSatisfy { if case .message = $0 { true } else { false } })
        }
    }

    /// Joins that end (§4.3): the owner lists and revokes invites, and a join ends with its invite.
    @Test(arguments: StoreChoice.all) func ownersListAndRevokeInvitesAndJoinsEndWithTheirInvite(store: StoreChoice) async throws {
        let clock = ManualClock()
        try await withTestServer(clock: clock, store: store) { server in
            let info = try await server.info()
            // The owner by hand, so that joins stay pending (a RoomClient would answer them).
            let ownerKey = ThemisPrivateKey()
            let owner = try await HushConnection.open(server: info, key: ownerKey)
            let room = try #require(try await owner.request(WireMessage(type: "create_room")).room)
            var joins = OwnerJoins(room: room)
            func register(expiresIn seconds: Int64) async throws -> InviteLink {
                let invite = joins.makeInvite(owner: ownerKey.publicKey, serverFingerprint: info.fingerprint)
                var request = WireMessage(type: "invite")
                request.room = room
                request.inviteId = Base64Bytes(invite.inviteID)
                request.expiresAt = clock.seconds + seconds
                try await owner.request(request)
                return invite
            }
            func list() async throws -> [InviteSummary] {
                var request = WireMessage(type: "invites")
                request.room = room
                return try await owner.request(request).invites ?? []
            }
            let revoked = try await register(expiresIn: 3600)
            let expiring = try await register(expiresIn: 60)
            let untouched = try await register(expiresIn: 7200)

            // A joiner through `revoked` waits for the owner, until the owner revokes the invite.
            let (requested, sink) = AsyncStream.makeStream(of: Bool.self)
            let flow = try JoinerFlow(invite: revoked)
            let waiting = Task {
                try await RoomClient.join(flow: flow, server: info, timeout: .seconds(60)) {
                    if case .requested = $0 { sink.yield(true) }
                }
            }
            _ = try await next(requested) { $0 }
            let (expiringFlow, expiringJoiner) = try await sendJoinRequest(expiring, server: info)
            let listed = try await list()
            #expect(listed.map(\.inviteId.bytes) == [expiring.inviteID, revoked.inviteID, untouched.inviteID])
            #expect(listed.map(\.state) == ["requested", "requested", "open"])
            #expect(listed[0].key == KeyID.json(expiringFlow.me.publicKey) && listed[2].key == nil)

            var revoke = WireMessage(type: "revoke_invite")
            revoke.room = room
            revoke.inviteId = Base64Bytes(revoked.inviteID)
            try await owner.request(revoke)
            await #expect(throws: ClientError.joinEnded) { _ = try await waiting.value }
            #expect(try await errorCode(owner, revoke) == .unknownInvite)

            // Past its `expiresAt` the pending join is over: no step of it goes on, and it is gone
            // from the owner's list, the joiner's hello and the pending count.
            clock.advance(by: 61)
            var response = WireMessage(type: "join_response")
            response.room = room
            response.inviteId = Base64Bytes(expiring.inviteID)
            response.sealed = Base64Bytes([1, 2, 3])
            #expect(try await errorCode(owner, response) == .inviteExpired)
            #expect(try await list().map(\.inviteId.bytes) == [untouched.inviteID])
            #expect(try await expiringJoiner.request(WireMessage(type: "hello")).joins?.isEmpty == true)
            #expect(try await server.server.store.pendingJoins(room: room, now: clock.seconds).isEmpty)

            // Only the owner lists or revokes; a stranger is not even told who owns the room.
            let stranger = try await HushConnection.open(server: info, key: ThemisPrivateKey())
            var strangerList = WireMessage(type: "invites")
            strangerList.room = room
            #expect(try await errorCode(stranger, strangerList) == .notMember)
            revoke.inviteId = Base64Bytes(untouched.inviteID)
            #expect(try await errorCode(stranger, revoke) == .notMember)
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
