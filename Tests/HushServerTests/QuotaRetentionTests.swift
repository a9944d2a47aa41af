import Foundation
import HushClient
import HushProtocol
import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// Space and retention (docs/PROTOCOL.md §4.4, §4.5, §4.8, §7): a room's quota (`room_full`),
/// the server's bound and a full database (`server_full`), and history retention with its floor.
@Suite(.serialized, .timeLimit(.minutes(5))) struct QuotaRetentionTests {
    /// A `send` of `bytes` random payload bytes: the server never opens payloads, so their size
    /// is exactly what the quota counts.
    static func send(_ connection: HushConnection, room: String, epoch: Int = 0, bytes: Int,
                     messageID: [UInt8] = RoomPayload.randomBytes(16)) async throws -> WireMessage {
        var send = WireMessage.request("send", room: room)
        send.epoch = epoch
        send.messageId = Base64Bytes(messageID)
        send.payload = Base64Bytes(RoomPayload.randomBytes(bytes))
        return try await connection.exchange(send)
    }

    /// Sends `bytes`-byte messages until one is refused; returns how many went in and the refusal.
    static func fill(_ connection: HushConnection, room: String, bytes: Int) async throws -> (sent: Int, refusal: String?) {
        for sent in 0..<200 {
            let reply = try await send(connection, room: room, bytes: bytes)
            if reply.type == "error" { return (sent, reply.code) }
        }
        return (200, nil)
    }

    static let cost = 1000 + StorageRules.recordOverhead

    @Test(arguments: StoreChoice.all) func aRoomOverItsQuotaRefusesWithRoomFullAndStoresNothingWhileAnotherRoomGoesOn(store: StoreChoice) async throws {
        var limits = Limits.standard
        limits.roomQuotaBytes = 10_000
        try await withTestServer(limits: limits, store: store) { server in
            let info = try await server.info()
            let full = try await RoomClient.create(server: info)
            let other = try await RoomClient.create(server: info)
            let room = await full.room
            let connection = await full.rawConnection
            let firstID = RoomPayload.randomBytes(16)
            #expect(try await Self.send(connection, room: room, bytes: 1000, messageID: firstID).seq == 1)
            for seq in 2...7 { #expect(try await Self.send(connection, room: room, bytes: 1000).seq == seq) }
            // 7 × 1256 = 8792: a payload of 952 bytes fills the quota exactly, one byte more is refused.
            #expect(try await Self.send(connection, room: room, bytes: 953).code == "room_full")
            #expect(try await Self.send(connection, room: room, bytes: 952).seq == 8)
            let refused = try await Self.send(connection, room: room, bytes: 1)
            #expect(refused.type == "error" && refused.code == "room_full")
            let stored = try #require(try await server.server.store.room(room))
            #expect(stored.lastSeq == 8 && stored.storedBytes == limits.roomQuotaBytes)

            // A retry of a stored message still gets its seq: nothing new is stored for it.
            #expect(try await Self.send(connection, room: room, bytes: 1000, messageID: firstID).seq == 1)
            // The client gives up at once with the code, instead of sealing again.
            let error = await #expect(throws: HushError.self) { try await full.send("one more") }
            #expect(error?.code == .roomFull)
            #expect(try await server.server.store.room(room)?.lastSeq == 8)
            #expect(try await full.history(after: 0).count == 8)

            #expect(try await other.send("another room is not full") == 1)
        }
    }

    @Test(arguments: StoreChoice.all) func aFullRoomStillRotatesAfterUseAndStillRemovesAMember(store: StoreChoice) async throws {
        var limits = Limits.standard
        limits.roomQuotaBytes = 4000
        try await withTestServer(limits: limits, store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            let filled = try await Self.fill(await owner.rawConnection, room: room, bytes: 1000)
            #expect(filled.sent == 3 && filled.refusal == "room_full")

            // The current key sealed messages: its replacement passes the quota.
            try await owner.rotate()
            // A second one would protect nothing new: refused like a message (what is left of
            // the quota is under 1256 bytes, as the refused message showed).
            var again = WireMessage.request("rotate", room: room)
            again.epoch = 2
            again.payload = Base64Bytes(RoomPayload.randomBytes(1000))
            #expect(try await errorCode(owner.rawConnection, again) == .roomFull)

            // A removal stores no message, and the rotation it owes is never refused for space.
            try await owner.remove(await bob.key)
            let stored = try #require(try await server.server.store.room(room))
            #expect(stored.epoch == 2 && !stored.wrapRequired && stored.storedBytes > limits.roomQuotaBytes)
            #expect(try await server.server.store.isRetired(await bob.key))
            #expect(try await Self.send(await owner.rawConnection, room: room, epoch: 2, bytes: 1).code == "room_full")
        }
    }

    @Test(arguments: StoreChoice.all) func theServerBoundRefusesMessagesAndNewRoomsWithServerFull(store: StoreChoice) async throws {
        var limits = Limits.standard
        limits.roomQuotaBytes = 64 * 1024 * 1024
        // Above what an empty schema takes on PostgreSQL (each index is at least a page).
        limits.maxStorageBytes = 384 * 1024
        // Filling it takes more requests than a burst.
        limits.requestsPerSecond = 1e9
        limits.requestBurst = 1e9
        try await withTestServer(limits: limits, store: store) { server in
            let info = try await server.info()
            let first = try await RoomClient.create(server: info)
            let second = try await RoomClient.create(server: info)
            let room = await first.room
            let filled = try await Self.fill(await first.rawConnection, room: room, bytes: 4000)
            #expect(filled.sent > 0 && filled.refusal == "server_full")
            // Then to the last page: pages in use and the bound are both whole pages, so once a
            // one-byte message (cost 257) is refused, a new room (cost 256) cannot fit either.
            let topped = try await Self.fill(await first.rawConnection, room: room, bytes: 1)
            #expect(topped.refusal == "server_full")
            #expect(try await server.server.store.room(room)?.lastSeq == filled.sent + topped.sent)
            // The bound is the server's: another room is refused too, and so is a new room.
            #expect(try await Self.send(await second.rawConnection, room: await second.room, bytes: 1).code == "server_full")
            #expect(try await server.server.store.room(await second.room)?.lastSeq == 0)
            let stranger = ThemisPrivateKey()
            let connection = try await HushConnection.open(server: info, key: stranger)
            #expect(try await errorCode(connection, WireMessage(type: "create_room")) == .serverFull)
            #expect(try await server.server.store.rooms(of: KeyID.json(stranger.publicKey)).isEmpty)
            connection.close()
        }
    }

    /// The database file's ceiling (`PRAGMA max_page_count`, here no headroom past the bound)
    /// stands in for a full disk: SQLite's own SQLITE_FULL is answered `server_full`.
    @Test func aWriteSQLiteHasNoRoomForIsServerFullAndChangesNothing() async throws {
        var limits = Limits.standard
        limits.maxStorageBytes = 256 * 1024
        limits.storageHeadroomBytes = 0
        try await withTestServer(limits: limits) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let room = await owner.room
            let filled = try await Self.fill(await owner.rawConnection, room: room, bytes: 4000)
            #expect(filled.refusal == "server_full")
            let before = try #require(try await server.server.store.room(room))
            // A rotation after messages is never refused by the bound itself (§4.5): this one
            // reaches SQLite, which cannot grow the file for its 64 KiB.
            var rotate = WireMessage.request("rotate", room: room)
            rotate.epoch = 1
            rotate.payload = Base64Bytes(RoomPayload.randomBytes(limits.maxPayloadBytes))
            #expect(try await errorCode(owner.rawConnection, rotate) == .serverFull)
            #expect(try await server.server.store.room(room) == before)
            // The server goes on answering.
            #expect(try await owner.history(after: 0).count == filled.sent)
            #expect(try await errorCode(owner.rawConnection, WireMessage.request("invites", room: room)) == nil)
        }
    }

    /// Owner, Bob, Carol (away with the first key only), Dave (says one thing and leaves).
    /// Two days later one more message; a one-day retention deletes the old messages, keeps the
    /// rotations Carol still needs, forgets Dave, and all of it holds across a restart.
    @Test func retentionDeletesOldMessagesKeepsTheKeysMembersNeedAndSurvivesARestart() async throws {
        let clock = ManualClock()
        let retention = Retention(days: 1)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hush-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let first = try await TestServer.start(dataDirectory: directory, clock: clock, retention: retention)
        let (ownerKey, bobKey, remaining) = try await using(first, stop: { await $0.stop(removingData: false) }) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            let dave = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            let store = server.server.store
            await carol.disconnect()
            #expect(try await dave.send("d1") == 1)
            try await dave.leave()
            try await owner.rotate()                       // seq 2, wrapped: epoch 1
            #expect(try await bob.send("b1") == 3)
            try await owner.rotate()                       // seq 4, plain: epoch 2
            #expect(try await bob.send("b2") == 5)
            clock.advance(by: 2 * 86_400)
            #expect(try await bob.send("b3") == 6)
            #expect(try await store.formerMembers(of: room, after: 0, limit: 10).map(\.key) == [await dave.key])
            let before = try #require(try await store.room(room))

            // Messages 1, 3, 5 are over a day old; rotations 2 and 4 are too, but Carol has not
            // been handed them, and without them she cannot open message 6.
            #expect(try await server.server.retention.sweep() == 3)
            let swept = try #require(try await store.room(room))
            #expect(swept.expiredThrough == 5 && swept.lastSeq == 6 && swept.storedBytes < before.storedBytes)
            #expect(try await store.formerMembers(of: room, after: 0, limit: 10).isEmpty)

            try await carol.reconnect()
            var page = WireMessage.request("history", room: room)
            page.after = 0
            let reply = try await carol.rawConnection.request(page)
            #expect(reply.expiredThrough == 5 && reply.messages?.map(\.seq) == [2, 4, 6])
            #expect(try await carol.history() == [.rotated(seq: 2, epoch: 1), .rotated(seq: 4, epoch: 2),
                                                  .message(seq: 6, from: await bob.key, text: "b3")])
            // Another pass finds nothing new while the owner and Bob have not read the rotations.
            #expect(try await server.server.retention.sweep() == 0)

            // Once every key was handed them, the rotations go too.
            _ = try await owner.history(after: 0)
            _ = try await bob.history(after: 0)
            #expect(try await server.server.retention.sweep() == 2)
            let last = try #require(try await carol.rawConnection.request(page).messages)
            #expect(last.map(\.seq) == [6])
            #expect(try await store.room(room)?.storedBytes == (last.first?.payload?.bytes.count ?? 0) + StorageRules.recordOverhead)

            // Bob's departure stays listed while his message 6 is kept.
            try await bob.leave()
            #expect(try await server.server.retention.sweep() == 0)
            #expect(try await store.formerMembers(of: room, after: 0, limit: 10).map(\.key) == [await bob.key])
            return (await owner.state.me, await bob.key, try #require(try await store.room(room)))
        }

        try await using(try await TestServer.start(dataDirectory: directory, clock: clock, retention: retention),
                        stop: { await $0.stop() }) { server in
            #expect(try await server.server.store.room(remaining.id) == remaining)
            let connection = try await HushConnection.open(server: try await server.info(), key: ownerKey)
            let hello = try await connection.request(WireMessage(type: "hello"))
            let summary = try #require(hello.rooms?.first)
            #expect(summary.expiredThrough == 5 && summary.formerMembers?.map(\.key) == [bobKey])
            var page = WireMessage.request("history", room: remaining.id)
            page.after = 0
            let reply = try await connection.request(page)
            #expect(reply.expiredThrough == 5 && reply.messages?.map(\.seq) == [6])
            connection.close()
        }
    }

    @Test(arguments: StoreChoice.all) func retainMessagesKeepsTheNewestInBoundedPassesAndGivesTheQuotaBack(store: StoreChoice) async throws {
        var limits = Limits.standard
        limits.roomQuotaBytes = 5 * Self.cost
        var retention = Retention(messages: 3)
        retention.batch = 2
        try await withTestServer(limits: limits, retention: retention, store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let room = await owner.room
            let connection = await owner.rawConnection
            let filled = try await Self.fill(connection, room: room, bytes: 1000)
            #expect(filled.sent == 5 && filled.refusal == "room_full")
            // Sequence numbers 1 and 2 are past the newest three, one record per pass.
            #expect(try await server.server.retention.sweep() == 2)
            let swept = try #require(try await server.server.store.room(room))
            #expect(swept.expiredThrough == 2 && swept.storedBytes == 3 * Self.cost)
            let refilled = try await Self.fill(connection, room: room, bytes: 1000)
            #expect(refilled.sent == 2 && refilled.refusal == "room_full")
            #expect(try await server.server.retention.sweep() == 2)
            var page = WireMessage.request("history", room: room)
            page.after = 0
            let reply = try await connection.request(page)
            #expect(reply.expiredThrough == 4 && reply.messages?.map(\.seq) == [5, 6, 7])
        }
    }

    // MARK: the rules alone

    @Test func expiryTakesTheExpiredPrefixAndKeepsUndeliveredRotations() {
        let day: Int64 = 86_400_000
        let now = 10 * day
        let oldest = [StoredEntry(seq: 3, kind: "message", at: 0), StoredEntry(seq: 4, kind: "rotation", at: 0),
                      StoredEntry(seq: 5, kind: "message", at: 9 * day + 1), StoredEntry(seq: 6, kind: "message", at: 0)]
        let kept = [StoredEntry(seq: 2, kind: "rotation", at: 0)]
        let plan = StorageRules.expiry(expiredThrough: 2, lastSeq: 6, minDelivered: 3, kept: kept, oldest: oldest,
                                       now: now, retention: Retention(days: 1))
        // Message 5 is recent: the prefix stops there, even though 6 looks old (a clock step).
        #expect(plan.expiredThrough == 4 && plan.deletions == [2, 3])
        let delivered = StorageRules.expiry(expiredThrough: 2, lastSeq: 6, minDelivered: 6, kept: kept, oldest: oldest,
                                            now: now, retention: Retention(messages: 1))
        #expect(delivered.expiredThrough == 5 && delivered.deletions == [2, 3, 4, 5])
        let none = StorageRules.expiry(expiredThrough: 2, lastSeq: 6, minDelivered: 6, kept: [], oldest: oldest,
                                       now: now, retention: Retention())
        #expect(none.expiredThrough == 2 && none.deletions.isEmpty)
    }
}
