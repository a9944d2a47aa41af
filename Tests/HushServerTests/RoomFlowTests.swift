import Foundation
import HushTestSupport
import HushClient
import HushProtocol
import HushServer
import Testing
import ThemisKit

/// Every protocol step end to end, through real WebSocket connections.
@Suite(.serialized, .timeLimit(.minutes(5))) struct RoomFlowTests {
    @Test func httpRoutes() async throws {
        try await withTestServer { server in
            let wellKnown = try await httpGet(server.url + "/.well-known/hush")
            #expect(wellKnown.status == 200)
            let decoded = try JSONDecoder().decode(WellKnown.self, from: Data(wellKnown.body.utf8))
            #expect(decoded.fingerprint == server.server.identity.fingerprint)
            #expect(decoded.ws == "/ws" && decoded.protocol == 2)
            let index = try await httpGet(server.url + "/")
            #expect(index.body.contains(server.server.identity.fingerprint))  // the page when no web client is installed
            #expect(index.headers["content-security-policy"]?.contains("default-src 'self'") == true)
            #expect(index.headers["x-content-type-options"] == "nosniff")
            #expect(try await httpGet(server.url + "/healthz").status == 200)
            #expect(try await httpGet(server.url + "/metrics").status == 404)  // metrics have a listener of their own
            #expect(try await httpGet(server.url + "/../server.key").status == 404)
            #expect(try await httpGet(server.url + "/.env").status == 404)
        }
    }

    /// A link whose owner key was altered on the way: the owner's client cannot read the join
    /// request, revokes the invite and says so, and the joiner hears it at once instead of
    /// waiting for ever (§4.3).
    @Test func aJoinThroughALinkWithAnAlteredOwnerKeyEndsForTheJoiner() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let members = await owner.members
            let parsed = try InviteLink.parse(try await owner.invite())
            var altered = parsed.invite
            altered.owner = KeyID.json(ThemisPrivateKey().publicKey)
            await #expect(throws: ClientError.joinEnded) {
                _ = try await RoomClient.join(link: altered.link(serverURL: parsed.serverURL), timeout: .seconds(60))
            }
            _ = try await next(owner.events) { if case .joinRefused = $0 { true } else { false } }
            #expect(await owner.members == members)
            #expect(try await owner.openInvites().isEmpty)
        }
    }

    /// §3: the server puts a connection online before its last handshake message, so a client
    /// is never established while pushes for its key still go nowhere. Asked at once, with no
    /// request made: the server registered it before the client could finish the handshake.
    @Test func aConnectionIsOnlineAsSoonAsItsHandshakeCompletes() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            for _ in 0..<20 {
                let key = ThemisPrivateKey()
                let connection = try await HushConnection.open(server: info, key: key)
                #expect(server.server.hub.connectionCount(of: KeyID.json(key.publicKey)) == 1)
                connection.close()
            }
        }
    }

    @Test(arguments: StoreChoice.all) func twoMembersJoinChatAndReadHistory(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let link = try await owner.invite()
            let alice = try await RoomClient.join(link: link)
            // The owner counts Alice once the reply to its add_member arrives, which the server
            // sends after Alice's push: her join may complete first.
            let aliceKey = await alice.key
            try await waitUntil("the owner lists Alice") { await owner.members.contains(aliceKey) }
            #expect(await alice.room == owner.room)

            let seq = try await owner.send("hello alice")
            let got = try await next(alice.events) { if case .message = $0 { true } else { false } }
            #expect(got == .message(seq: seq, from: await owner.key, text: "hello alice"))
            let reply = try await alice.send("hi owner")
            let back = try await next(owner.events) { if case .message = $0 { true } else { false } }
            #expect(back == .message(seq: reply, from: await alice.key, text: "hi owner"))

            let history = try await alice.history(after: 0)
            #expect(history.map(Self.text) == ["hello alice", "hi owner"])
        }
    }

    @Test(arguments: StoreChoice.all) func threeMembersPendingJoinRemovalAndWrappedRotation(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            // Carol asks while the owner is offline: the request waits and is answered on reconnect.
            let carolLink = try await owner.invite()
            let ownerKey = await owner.key
            await owner.disconnect()
            try await waitUntil("the owner's connection to end") { server.server.hub.connectionCount(of: ownerKey) == 0 }
            let (serverURL, invite) = try InviteLink.parse(carolLink)
            let info = try await ServerInfo.fetch(serverURL, expectedFingerprint: invite.server)
            let (requested, sink) = AsyncStream.makeStream(of: Bool.self)
            async let carolJoin = RoomClient.join(flow: try JoinerFlow(invite: invite), server: info, timeout: .seconds(60)) {
                if case .requested = $0 { sink.yield(true) }
            }
            _ = try await next(requested) { $0 }
            #expect(server.server.hub.connectionCount(of: ownerKey) == 0)
            try await owner.reconnect()
            let carol = try await carolJoin
            await owner.waitForMember(await carol.key)
            #expect(await owner.members == [await bob.key, await carol.key])

            _ = try await carol.send("from carol")
            _ = try await next(bob.events) { if case .message(_, _, "from carol") = $0 { true } else { false } }

            // Removal: the removed key is cut off and never sees the next key.
            try await owner.remove(await bob.key)
            let rotated = try await next(carol.events) { if case .rotated = $0 { true } else { false } }
            guard case .rotated(_, let epoch) = rotated else { Issue.record("no rotation"); return }
            #expect(epoch == 1)
            _ = try await owner.send("after removal")
            let seen = try await next(carol.events) { if case .message = $0 { true } else { false } }
            #expect(Self.text(seen) == "after removal")

            let bobConnection = await bob.rawConnection
            try await bobConnection.closed()
            let again = try await HushConnection.open(server: try await server.info(), key: await bob.state.me)
            let pushed = try await next(again.pushes) { _ in true }
            #expect(pushed.code == "removed")
            // The server closes the removed key's session: history is out of reach.
            try await again.closed()
            await #expect(throws: ClientError.connectionClosed) {
                try await again.request(.request("history", room: await owner.room))
            }
            #expect(try await server.server.store.members(of: await owner.room).map(\.key).contains(await bob.key) == false)
        }
    }

    @Test(arguments: StoreChoice.all) func rotationPolicyAndNewMemberReadsFromLastRotation(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info(), rotateEvery: 3)
            for index in 1...3 { try await owner.send("m\(index)") }
            let due = try await next(owner.events) { if case .rotationDue = $0 { true } else { false } }
            #expect(due == .rotationDue(count: 3))
            // Reconnecting while still due repeats the notice.
            try await owner.reconnect()
            #expect(try await next(owner.events) { if case .rotationDue = $0 { true } else { false } } == .rotationDue(count: 3))

            let rotationSeq = try await owner.rotate()
            try await owner.send("after rotation")
            let dave = try await RoomClient.join(link: try await owner.invite())
            let history = try await dave.history(after: 0)
            #expect(history.map(Self.text) == ["after rotation"])
            #expect(rotationSeq == 4)
        }
    }

    @Test(arguments: StoreChoice.all) func historySinceLastDeparture(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let erin = try await RoomClient.join(link: try await owner.invite())
            try await owner.send("before")
            _ = try await next(erin.events) { if case .message = $0 { true } else { false } }
            let (erinKey, room) = (await erin.key, await owner.room)
            await erin.disconnect()
            // The server saves `delivered` once the connection has ended: from then on nothing
            // reaches Erin until she reconnects.
            try await waitUntil("Erin's connection to end") {
                try await server.server.store.members(of: room).first { $0.key == erinKey }?.delivered == 1
            }
            for index in 1...3 { try await owner.send("missed \(index)") }
            let summary = try await erin.reconnect()
            #expect(summary?.delivered == 1)
            let missed = try await erin.history(after: summary?.delivered ?? 0)
            #expect(missed.map(Self.text) == ["missed 1", "missed 2", "missed 3"])
        }
    }

    @Test(arguments: StoreChoice.all) func leaveAndDeleteRoom(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let frank = try await RoomClient.join(link: try await owner.invite())
            let grace = try await RoomClient.join(link: try await owner.invite())
            try await frank.leave()
            #expect(try await next(owner.events) { if case .memberLeft = $0 { true } else { false } } == .memberLeft(key: await frank.key))
            // The next rotation must be wrapped for the remaining member only.
            try await owner.rotate()
            _ = try await next(grace.events) { if case .rotated = $0 { true } else { false } }
            try await owner.deleteRoom()
            #expect(try await next(grace.events) { $0 == .roomDeleted } == .roomDeleted)
            #expect(try await errorCode(await grace.rawConnection, .request("history", room: await owner.room)) == .notFound)
        }
    }

    @Test(arguments: StoreChoice.all) func historyPagesStopAtTheirByteBudget(store: StoreChoice) async throws {
        var limits = Limits.standard
        limits.maxHistoryPageBytes = 4096
        try await withTestServer(limits: limits, store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            // Each is padded to the 1 KiB bucket (§6.1), about 1150 bytes sealed: three fit a page.
            let texts = (1...8).map { String(repeating: Character(String($0)), count: 600) }
            for text in texts { _ = try await owner.send(text) }

            var request = WireMessage(type: "history")
            request.room = await owner.room
            request.after = 0
            let page = try await owner.rawConnection.request(request)
            let sizes = (page.messages ?? []).map { $0.payload?.bytes.count ?? 0 }
            #expect(page.more == true)
            #expect(sizes.count == 3)
            #expect(sizes.reduce(0, +) <= 4096)
            // Following `more` page by page still yields every message, in order.
            #expect(try await owner.history(after: 0).map(Self.text) == texts)
        }
    }

    static func text(_ event: RoomClient.Event) -> String? {
        if case .message(_, _, let text) = event { return text }
        return nil
    }
}
