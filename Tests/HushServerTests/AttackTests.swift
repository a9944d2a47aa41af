import Foundation
import HushTestSupport
import HushClient
import HushProtocol
import HushServer
import Testing
import ThemisKit

/// Each rule tried by an attacker: the documented error, and nothing changes.
@Suite(.serialized, .timeLimit(.minutes(5))) struct AttackTests {
    /// A room with an owner and one member, plus a raw connection for an outsider.
    struct Fixture {
        let server: TestServer
        let info: ServerInfo
        let owner: RoomClient
        let member: RoomClient
        let room: String
    }

    /// Runs `body` with a fresh fixture; the server is stopped (awaited) afterwards.
    static func withFixture(clock: ManualClock? = nil, _ body: (Fixture) async throws -> Void) async throws {
        try await withTestServer(clock: clock) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let member = try await RoomClient.join(link: try await owner.invite())
            try await body(Fixture(server: server, info: info, owner: owner, member: member, room: await owner.room))
        }
    }

    static func lastSeq(_ f: Fixture) async throws -> Int? {
        try await f.server.server.store.room(f.room)?.lastSeq
    }

    @Test func nonMemberAndMemberOverreach() async throws {
        try await Self.withFixture { f in
            let outsider = try await HushConnection.open(server: f.info, key: ThemisPrivateKey())
            var send = WireMessage.request("send", room: f.room)
            send.payload = Base64Bytes([1, 2, 3])
            send.epoch = 0
            send.messageId = Base64Bytes(RoomPayload.randomBytes(16))
            #expect(try await errorCode(outsider, send) == .notMember)
            #expect(try await errorCode(outsider, .request("history", room: f.room)) == .notMember)

            let member = await f.member.rawConnection
            var rotate = WireMessage.request("rotate", room: f.room)
            rotate.epoch = 1
            rotate.payload = Base64Bytes([1, 2, 3])
            #expect(try await errorCode(member, rotate) == .notOwner)
            var invite = WireMessage.request("invite", room: f.room)
            invite.inviteId = Base64Bytes(RoomPayload.randomBytes(32))
            invite.expiresAt = Int64(Date().timeIntervalSince1970) + 60
            #expect(try await errorCode(member, invite) == .notOwner)
            var remove = WireMessage.request("remove_member", room: f.room)
            remove.key = await f.owner.key
            remove.signature = Base64Bytes(try SecureMessage.sign(Statement.removal(room: f.room, key: await f.owner.key),
                                                                  with: await f.member.state.me))
            #expect(try await errorCode(member, remove) == .notOwner)
            #expect(try await errorCode(member, .request("delete_room", room: f.room)) == .notOwner)
            #expect(try await Self.lastSeq(f) == 0)
            #expect(try await f.server.server.store.room(f.room)?.epoch == 0)
        }
    }

    @Test func forgedAndWrongRoomMembershipSignatures() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            // Both sides by hand, so the join stops at `confirmed` for the attacks.
            let ownerKey = ThemisPrivateKey()
            let owner = try await HushConnection.open(server: info, key: ownerKey)
            let room = try await owner.request(WireMessage(type: "create_room")).room!
            let state = RoomState(room: room, owner: ownerKey.publicKey, me: ownerKey, epoch: 0, roomKey: RoomPayload.newRoomKey())
            var joins = OwnerJoins(room: room)
            let invite = joins.makeInvite(owner: ownerKey.publicKey, serverFingerprint: info.fingerprint)
            var register = WireMessage.request("invite", room: room)
            register.inviteId = Base64Bytes(invite.inviteID)
            register.expiresAt = Int64(Date().timeIntervalSince1970) + 60
            try await owner.request(register)

            let (flow, joiner) = try await sendJoinRequest(invite, server: info)
            let joinerKey = KeyID.json(flow.me.publicKey)
            let request = try await next(owner.pushes) { $0.type == "join_request" }
            var response = WireMessage.request("join_response", room: room)
            response.inviteId = Base64Bytes(invite.inviteID)
            response.sealed = Base64Bytes(try joins.respond(inviteID: invite.inviteID, joiner: request.key!,
                                                            joiningKeyBlob: request.joiningKey!.bytes, state: state))
            try await owner.request(response)
            let sealed = try await next(joiner.pushes) { $0.type == "join_response" }
            let accepted = try flow.accept(sealed: sealed.sealed!.bytes)
            var confirm = WireMessage.request("join_confirm", room: room)
            confirm.inviteId = Base64Bytes(invite.inviteID)
            confirm.sealed = Base64Bytes(accepted.confirmation)
            try await joiner.request(confirm)
            let confirmation = try await next(owner.pushes) { $0.type == "join_confirm" }

            func addMember(_ signature: [UInt8], on connection: HushConnection) async throws -> ErrorCode? {
                var add = WireMessage.request("add_member", room: room)
                add.inviteId = Base64Bytes(invite.inviteID)
                add.key = joinerKey
                add.signature = Base64Bytes(signature)
                return try await errorCode(connection, add)
            }
            let forged = try SecureMessage.sign(Statement.membership(room: room, key: joinerKey), with: ThemisPrivateKey())
            #expect(try await addMember(forged, on: owner) == .badSignature)
            let wrongRoom = try SecureMessage.sign(Statement.membership(room: "another-room", key: joinerKey), with: ownerKey)
            #expect(try await addMember(wrongRoom, on: owner) == .badSignature)
            let selfSigned = try SecureMessage.sign(Statement.membership(room: room, key: joinerKey), with: flow.me)
            // The joiner is not in the room yet: not_member, as for any stranger (§5).
            #expect(try await addMember(selfSigned, on: joiner) == .notMember)
            #expect(try await server.server.store.members(of: room).count == 1)

            let signature = try joins.admit(inviteID: invite.inviteID, joiner: confirmation.key!,
                                            sealed: confirmation.sealed!.bytes, state: state)
            #expect(try await addMember(signature, on: owner) == nil)
            #expect(try await server.server.store.members(of: room).count == 2)
            #expect(try await server.server.store.pendingJoins(room: room, now: Int64(Date().timeIntervalSince1970)).isEmpty)
            // The consumed invite cannot admit anyone again.
            #expect(try await addMember(signature, on: owner) == .noPendingJoin)
        }
    }

    @Test func reusedExpiredAndUnknownInvites() async throws {
        let clock = ManualClock()
        try await Self.withFixture(clock: clock) { f in
            let ownerConnection = await f.owner.rawConnection
            func join(_ inviteID: [UInt8]) async throws -> ErrorCode? {
                let joiner = try await HushConnection.open(server: f.info, key: ThemisPrivateKey())
                var join = WireMessage.request("join", room: f.room)
                join.inviteId = Base64Bytes(inviteID)
                join.joiningKey = Base64Bytes([1, 2, 3, 4])
                return try await errorCode(joiner, join)
            }
            #expect(try await join(RoomPayload.randomBytes(32)) == .unknownInvite)
            let expiring = RoomPayload.randomBytes(32)
            var invite = WireMessage.request("invite", room: f.room)
            invite.inviteId = Base64Bytes(expiring)
            invite.expiresAt = clock.seconds + 60
            try await ownerConnection.request(invite)
            clock.advance(by: 59)
            let stillValid = RoomPayload.randomBytes(32)
            invite.inviteId = Base64Bytes(stillValid)
            invite.expiresAt = clock.seconds + 60
            try await ownerConnection.request(invite)
            clock.advance(by: 1)
            // At its `expiresAt` an invite is over; one registered later is not.
            #expect(try await join(expiring) == .inviteExpired)
            #expect(try await join(stillValid) == nil)

            // Registered on the raw connection, so the owner's client holds no token for it and
            // leaves the request alone (its own invites it would revoke, the joining key being
            // unreadable: §4.3). The first join takes the invite, the second is refused.
            let used = RoomPayload.randomBytes(32)
            invite.inviteId = Base64Bytes(used)
            try await ownerConnection.request(invite)
            #expect(try await join(used) == nil)
            #expect(try await join(used) == .inviteUsed)
            // The invite that brought the member in is gone after the membership.
            #expect(try await f.server.server.store.pendingJoins(room: f.room, now: clock.seconds).count == 2)
        }
    }

    @Test func joinResponseNotFromOwnerOrWithoutRequest() async throws {
        try await Self.withFixture { f in
            let inviteID = try InviteLink.parse(try await f.owner.invite()).invite.inviteID
            var response = WireMessage.request("join_response", room: f.room)
            response.inviteId = Base64Bytes(inviteID)
            response.sealed = Base64Bytes([9, 9, 9])
            #expect(try await errorCode(await f.member.rawConnection, response) == .notOwner)
            #expect(try await errorCode(await f.owner.rawConnection, response) == .noPendingJoin)
            var confirm = WireMessage.request("join_confirm", room: f.room)
            confirm.inviteId = Base64Bytes(inviteID)
            confirm.sealed = Base64Bytes([9, 9, 9])
            #expect(try await errorCode(await f.member.rawConnection, confirm) == .noPendingJoin)
        }
    }

    @Test func malformedOversizedAndFloodingFrames() async throws {
        try await Self.withFixture { f in
            // Not JSON, and a missing id: errors, connection stays.
            let outsider = try await HushConnection.open(server: f.info, key: ThemisPrivateKey())
            outsider.sendPlaintext(Array("{not json".utf8))
            #expect(try await next(outsider.pushes) { _ in true }.code == "bad_request")
            #expect(try await errorCode(outsider, WireMessage(type: "no_such_type")) == .badRequest)
            // A room id that is not one (odd bytes, another length) is refused before any lookup.
            for notARoom in ["", "short", String(f.room.dropLast()) + "\u{0}", f.room + "A", String(f.room.dropLast()) + "="] {
                #expect(try await errorCode(await f.member.rawConnection, .request("history", room: notARoom)) == .badRequest,
                        "\(notARoom.debugDescription)")
            }
            // Payload above 64 KiB inside a valid frame.
            var big = WireMessage.request("send", room: f.room)
            big.payload = Base64Bytes(Array(repeating: 7, count: 70 * 1024))
            #expect(try await errorCode(await f.member.rawConnection, big) == .tooLarge)
            #expect(try await f.owner.send("still served") > 0)
            // A frame that is not Secure Session closes that connection only.
            let garbage = try await HushConnection.open(server: f.info, key: ThemisPrivateKey())
            garbage.sendRawFrame(Array("definitely not themis".utf8))
            try await garbage.closed(within: .seconds(30))
            // An oversized frame closes the connection too.
            let huge = try await HushConnection.open(server: f.info, key: ThemisPrivateKey())
            huge.sendRawFrame(Array(repeating: 1, count: 300 * 1024))
            try await huge.closed(within: .seconds(30))
            #expect(try await f.member.send("still here") > 0)
            #expect(try await Self.lastSeq(f) == 2)
        }
    }

    /// A flood meets the per-connection bucket while other connections are still served. The
    /// request clock never moves, so exactly the burst passes however slow the machine is.
    @Test func floodingOneConnectionIsRefusedAndOthersAreServed() async throws {
        try await withTestServer(requestClock: StepClock(step: .zero)) { server in
            let info = try await server.info()
            let flooder = try await HushConnection.open(server: info, key: ThemisPrivateKey())
            let codes = try await withThrowingTaskGroup(of: ErrorCode?.self) { group in
                for _ in 0..<80 { group.addTask { try await errorCode(flooder, WireMessage(type: "hello")) } }
                return try await group.reduce(into: [ErrorCode?]()) { $0.append($1) }
            }
            let burst = Int(Limits.standard.requestBurst)
            #expect(codes.filter { $0 == nil }.count == burst)
            #expect(codes.filter { $0 == .rateLimited }.count == 80 - burst)
            let other = try await RoomClient.create(server: info)
            #expect(try await other.send("still served") == 1)
        }
    }

    @Test func sessionIDThatIsNotAKey() async throws {
        try await withTestServer { server in
            await #expect(throws: (any Error).self) {
                _ = try await HushConnection.open(server: try await server.info(), key: ThemisPrivateKey(),
                                                  sessionID: Array("not-a-key".utf8))
            }
            // And a client refuses a server whose key does not match the invite.
            try await withTestServer { other in
                let owner = try await RoomClient.create(server: try await server.info())
                let link = try await owner.invite().replacingOccurrences(of: server.url, with: other.url)
                await #expect(throws: ClientError.serverKeyMismatch) { _ = try await RoomClient.join(link: link) }
            }
        }
    }
}
