import Foundation
import GRDB
import HushClient
import HushProtocol
import HushServer
import HushTestSupport
import Testing

/// Files on the server (docs/PROTOCOL.md §4.9, §7): who may store, read and attach a file, its
/// bounds, and when it is deleted, on both stores. The server never opens a chunk, so random
/// bytes of a sealed chunk's size stand for one.
@Suite(.serialized, .timeLimit(.minutes(5))) struct FileStoreTests {
    static let sealedChunkBytes = 65_536 + 44

    static func put(_ connection: HushConnection, room: String, file: [UInt8], chunks: Int, index: Int,
                    data: [UInt8]) async throws -> WireMessage {
        var put = WireMessage.request("file_put", room: room)
        put.file = Base64Bytes(file)
        put.chunks = chunks
        put.index = index
        put.data = Base64Bytes(data)
        return try await connection.exchange(put)
    }

    static func get(_ connection: HushConnection, room: String, file: [UInt8], index: Int) async throws -> WireMessage {
        var get = WireMessage.request("file_get", room: room)
        get.file = Base64Bytes(file)
        get.index = index
        return try await connection.exchange(get)
    }

    static func send(_ connection: HushConnection, room: String, epoch: Int = 0, files: [[UInt8]],
                     messageID: [UInt8] = RoomPayload.randomBytes(16)) async throws -> WireMessage {
        var send = WireMessage.request("send", room: room)
        send.epoch = epoch
        send.messageId = Base64Bytes(messageID)
        send.payload = Base64Bytes(RoomPayload.randomBytes(200))
        send.files = files.map { Base64Bytes($0) }
        return try await connection.exchange(send)
    }

    /// Uploads `chunks` random chunks of a new file; returns its id and the chunks.
    static func upload(_ connection: HushConnection, room: String, chunks: Int) async throws -> ([UInt8], [[UInt8]]) {
        let id = RoomPayload.randomBytes(16)
        var sealed: [[UInt8]] = []
        for index in 0..<chunks {
            let data = RoomPayload.randomBytes(sealedChunkBytes)
            let reply = try await put(connection, room: room, file: id, chunks: chunks, index: index, data: data)
            #expect(reply.type == "file_stored" && reply.complete == (index == chunks - 1), "\(reply)")
            sealed.append(data)
        }
        return (id, sealed)
    }

    /// Whether any chunk is left in the server's database, looked at as another process would.
    static func hasChunkRows(_ server: TestServer) async throws -> Bool {
        if let database = server.database {
            do {
                try await PostgresCluster.shared().execute("""
                    DO $$ BEGIN IF EXISTS (SELECT 1 FROM file_chunks) OR EXISTS (SELECT 1 FROM files) THEN
                    RAISE EXCEPTION 'rows left'; END IF; END $$
                    """, in: database)
                return false
            } catch {
                return true
            }
        }
        let queue = try DatabaseQueue(path: server.dataDirectory.appendingPathComponent("hush.sqlite").path)
        return try await queue.read { db in
            try Int.fetchOne(db, sql: "SELECT (SELECT COUNT(*) FROM file_chunks) + (SELECT COUNT(*) FROM files)") ?? 0
        } > 0
    }

    @Test(arguments: StoreChoice.all) func aFileIsReadByExactlyWhoMayReadTheMessageThatCarriesIt(store: StoreChoice) async throws {
        try await withTestServer(store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let bob = try await RoomClient.join(link: try await owner.invite())
            let room = await owner.room
            let ownerConnection = await owner.rawConnection
            let bobConnection = await bob.rawConnection
            let (file, sealed) = try await Self.upload(ownerConnection, room: room, chunks: 3)

            // A retry of a stored chunk is answered again and costs nothing; other bytes for a
            // chunk of a complete file are refused.
            let before = try #require(try await server.server.store.room(room)).storedBytes
            let repeated = try await Self.put(ownerConnection, room: room, file: file, chunks: 3, index: 1, data: sealed[1])
            #expect(repeated.type == "file_stored" && repeated.complete == true)
            #expect(try await Self.put(ownerConnection, room: room, file: file, chunks: 3, index: 1,
                                       data: RoomPayload.randomBytes(Self.sealedChunkBytes)).code == "file_exists")
            #expect(try await server.server.store.room(room)?.storedBytes == before)
            // Another key cannot add to it, nor claim its id with another count.
            #expect(try await Self.put(bobConnection, room: room, file: file, chunks: 3, index: 0, data: sealed[0]).code == "file_exists")
            #expect(try await Self.put(ownerConnection, room: room, file: file, chunks: 4, index: 3, data: sealed[0]).code == "file_exists")

            // Pending: only its uploader reads it.
            #expect(try await Self.get(ownerConnection, room: room, file: file, index: 2).data?.bytes == sealed[2])
            #expect(try await Self.get(bobConnection, room: room, file: file, index: 0).code == "unknown_file")

            // An incomplete file cannot be sent, and the refused send stores nothing.
            let (partial, _) = try await Self.upload(ownerConnection, room: room, chunks: 1)
            let unfinished = RoomPayload.randomBytes(16)
            _ = try await Self.put(ownerConnection, room: room, file: unfinished, chunks: 2, index: 0,
                                   data: RoomPayload.randomBytes(Self.sealedChunkBytes))
            #expect(try await Self.send(ownerConnection, room: room, files: [unfinished]).code == "file_incomplete")
            #expect(try await Self.send(bobConnection, room: room, files: [file]).code == "unknown_file")
            #expect(try await server.server.store.room(room)?.lastSeq == 0)

            let sent = try await Self.send(ownerConnection, room: room, files: [file, partial])
            let seq = try #require(sent.seq)
            // Attached: a member reads it now, every chunk as stored, with the file's count.
            for index in 0..<3 {
                let chunk = try await Self.get(bobConnection, room: room, file: file, index: index)
                #expect(chunk.type == "file_chunk" && chunk.chunks == 3 && chunk.data?.bytes == sealed[index])
            }
            #expect(try await Self.get(bobConnection, room: room, file: file, index: 3).code == "unknown_file")
            // It is attached once: another message cannot carry it.
            #expect(try await Self.send(ownerConnection, room: room, files: [file]).code == "unknown_file")

            // A stranger learns nothing; a key that joins after the next rotation reads from
            // after it (its floor), so not this file; a removed key reads nothing.
            let stranger = try await RoomClient.create(server: info)
            #expect(try await Self.get(await stranger.rawConnection, room: room, file: file, index: 0).code == "not_member")
            _ = try await owner.rotate()
            let carol = try await RoomClient.join(link: try await owner.invite())
            #expect(seq < (try #require(try await server.server.store.rooms(of: await carol.key).first?.1.floor)))
            #expect(try await Self.get(await carol.rawConnection, room: room, file: file, index: 0).code == "unknown_file")
            #expect(try await Self.get(bobConnection, room: room, file: file, index: 0).type == "file_chunk")
            try await owner.remove(await bob.key)
            // A retired key is told `removed` and closed as soon as it connects (§4.7).
            let afterRemoval = try? await Self.get(try await HushConnection.openRegistered(server: info, key: await bob.state.me),
                                                   room: room, file: file, index: 0)
            #expect(afterRemoval == nil || afterRemoval?.code == "removed")
        }
    }

    @Test(arguments: StoreChoice.all) func filesMeetTheirBoundsWithClearErrorsAndLeaveNothingHalfStored(store: StoreChoice) async throws {
        var limits = Limits.standard
        // Room for four chunks and their records, not five.
        limits.roomQuotaBytes = 4 * (Self.sealedChunkBytes + StorageRules.recordOverhead) + 1000
        try await withTestServer(limits: limits, store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let other = try await RoomClient.create(server: info)
            let room = await owner.room
            let connection = await owner.rawConnection
            let chunk = RoomPayload.randomBytes(Self.sealedChunkBytes)

            #expect(try await Self.put(connection, room: room, file: RoomPayload.randomBytes(16), chunks: 401, index: 0, data: chunk).code == "bad_request")
            #expect(try await Self.put(connection, room: room, file: RoomPayload.randomBytes(16), chunks: 2, index: 2, data: chunk).code == "bad_request")
            #expect(try await Self.put(connection, room: room, file: RoomPayload.randomBytes(15), chunks: 1, index: 0, data: chunk).code == "bad_request")
            #expect(try await Self.put(connection, room: room, file: RoomPayload.randomBytes(16), chunks: 1, index: 0,
                                       data: RoomPayload.randomBytes(limits.maxFileChunkBytes + 1)).code == "too_large")

            let file = RoomPayload.randomBytes(16)
            for index in 0..<4 {
                #expect(try await Self.put(connection, room: room, file: file, chunks: 5, index: index, data: chunk).type == "file_stored")
            }
            let full = try #require(try await server.server.store.room(room))
            #expect(try await Self.put(connection, room: room, file: file, chunks: 5, index: 4, data: chunk).code == "room_full")
            #expect(try await server.server.store.room(room) == full)
            // Another room is unaffected.
            _ = try await Self.upload(await other.rawConnection, room: await other.room, chunks: 2)

            // At most four pending files per key in a room.
            let small = try await RoomClient.create(server: info)
            for _ in 0..<4 { _ = try await Self.upload(await small.rawConnection, room: await small.room, chunks: 1) }
            #expect(try await Self.put(await small.rawConnection, room: await small.room, file: RoomPayload.randomBytes(16),
                                       chunks: 1, index: 0, data: chunk).code == "limit_reached")
        }
    }

    @Test(arguments: StoreChoice.all) func aFileGoesWithItsRoomWithItsExpiredMessageAndWhenLeftPending(store: StoreChoice) async throws {
        let clock = ManualClock()
        try await withTestServer(clock: clock, store: store) { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let room = await owner.room
            let connection = await owner.rawConnection
            let empty = try #require(try await server.server.store.room(room)).storedBytes

            // Pending for a day: deleted by the sweep, its bytes given back.
            let (pending, _) = try await Self.upload(connection, room: room, chunks: 2)
            #expect(try await server.server.retention.sweep() == 0)
            clock.advance(by: 24 * 3600 + 1)
            #expect(try await server.server.retention.sweep() == 1)
            #expect(try await Self.get(connection, room: room, file: pending, index: 0).code == "unknown_file")
            #expect(try await server.server.store.room(room)?.storedBytes == empty)

            // Attached: the sweep leaves it; deleting the room deletes it.
            let (attached, _) = try await Self.upload(connection, room: room, chunks: 1)
            #expect(try await Self.send(connection, room: room, files: [attached]).seq == 1)
            clock.advance(by: 24 * 3600 + 1)
            #expect(try await server.server.retention.sweep() == 0)
            #expect(try await Self.get(connection, room: room, file: attached, index: 0).type == "file_chunk")
            #expect(try await Self.hasChunkRows(server))
            try await owner.deleteRoom()
            #expect(try await !Self.hasChunkRows(server))
        }
    }

    @Test(arguments: StoreChoice.all) func retentionDeletesAFileWithTheMessageThatCarriesIt(store: StoreChoice) async throws {
        try await withTestServer(retention: Retention(messages: 1), store: store) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let room = await owner.room
            let connection = await owner.rawConnection
            let (file, _) = try await Self.upload(connection, room: room, chunks: 2)
            #expect(try await Self.send(connection, room: room, files: [file]).seq == 1)
            let withFile = try #require(try await server.server.store.room(room)).storedBytes
            _ = try await owner.send("after the file")
            #expect(try await server.server.retention.sweep() == 1)
            #expect(try await Self.get(connection, room: room, file: file, index: 0).code == "unknown_file")
            #expect(try await !Self.hasChunkRows(server))
            let after = try #require(try await server.server.store.room(room)).storedBytes
            #expect(after < withFile - 2 * Self.sealedChunkBytes)
        }
    }

    /// File requests have their own budget: a file's chunks neither starve chat requests nor go
    /// unbounded. The request clock never moves here, so only the bursts count.
    @Test func fileRequestsHaveTheirOwnBoundedBudget() async throws {
        try await withTestServer(requestClock: StepClock(step: .zero)) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let room = await owner.room
            let connection = await owner.rawConnection
            let missing = RoomPayload.randomBytes(16)
            for _ in 0..<Int(Limits.standard.fileRequestBurst) {
                #expect(try await Self.get(connection, room: room, file: missing, index: 0).code == "unknown_file")
            }
            #expect(try await Self.get(connection, room: room, file: missing, index: 0).code == "rate_limited")
            var history = WireMessage.request("history", room: room)
            history.after = 0
            #expect(try await connection.exchange(history).type == "history")
        }
    }
}
