import Foundation
import HushClient
import HushProtocol
@testable import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// What only the PostgreSQL store has: a database several nodes share, migrations that nodes
/// starting at once apply once, and its connection settings. The behaviour it shares with
/// SQLite is tested by the suites that take `StoreChoice.all`.
@Suite(.serialized, .timeLimit(.minutes(5)), .enabled(if: StoreChoice.all.contains(.postgres)))
struct PostgresStoreTests {
    /// No rate limit: the test sends as fast as the nodes take it.
    static var unthrottled: Limits {
        var limits = Limits.standard
        limits.requestsPerSecond = 1e9
        limits.requestBurst = 1e9
        return limits
    }

    @Test func twoNodesAppendingToOneRoomAtOnceTakeEverySeqOnce() async throws {
        try await withTestServer(limits: Self.unthrottled, store: .postgres) { nodeA in
            let database = try #require(nodeA.database)
            let nodeB = try await TestServer.start(limits: Self.unthrottled, store: .postgres, database: database)
            try await using(nodeB, stop: { await $0.stop() }) { nodeB in
                let owner = try await RoomClient.create(server: try await nodeA.info())
                let member = try await RoomClient.join(link: try await owner.invite())
                let room = await owner.room
                let onA = await owner.rawConnection
                let onB = try await HushConnection.openRegistered(server: try await nodeB.info(), key: await member.state.me)
                defer { onB.close() }
                let lanesPerNode = 4
                let sendsPerLane = 25
                // Several requests in flight on each node at once, all for the same room.
                let replies = try await withThrowingTaskGroup(of: [WireMessage].self) { group in
                    for connection in [onA, onB] {
                        for _ in 0..<lanesPerNode {
                            group.addTask {
                                var replies: [WireMessage] = []
                                for _ in 0..<sendsPerLane {
                                    replies.append(try await QuotaRetentionTests.send(connection, room: room, bytes: 64))
                                }
                                return replies
                            }
                        }
                    }
                    return try await group.reduce(into: []) { $0 += $1 }
                }
                let total = 2 * lanesPerNode * sendsPerLane
                #expect(replies.compactMap(\.code).isEmpty)
                #expect(replies.compactMap(\.seq).sorted() == Array(1...total))

                // Both nodes read the same room: every seq once, in order, nothing else.
                for node in [nodeA, nodeB] {
                    #expect(try await node.server.store.room(room)?.lastSeq == total)
                    var seqs: [Int] = []
                    var more = true
                    while more {
                        let page = try await node.server.store.history(room: room, for: await owner.key, after: seqs.last ?? 0,
                                                                       limit: nil, limits: Self.unthrottled)
                        seqs += page.messages.map(\.seq)
                        more = page.more
                    }
                    #expect(seqs == Array(1...total))
                }
            }
        }
    }

    /// Group commit, made to happen: the room's row is held by another session, so that the one
    /// commit lane waits on it with a first send, while more sends queue behind. Once released,
    /// they share one transaction: valid sends, a send under a wrong epoch (refused by the
    /// rules), a repeat (answered with the original), and a send to a room name PostgreSQL
    /// cannot take (a NUL byte: a database error in the middle of the batch). Only the refused
    /// ones fail; the others commit with consecutive seqs, in one transaction.
    @Test func aBatchCommitsItsWritesTogetherAndARefusalInItRollsBackOnlyItself() async throws {
        let cluster = try await PostgresCluster.shared()
        let database = try await cluster.createDatabase()
        let store = try await PostgresStore.connect(to: database, commitLanes: 1)
        try await using(store, stop: { await $0.close(); try? await cluster.dropDatabase(database) }) { store in
            let limits = Self.unthrottled
            let hub = Hub(capacity: 16)
            let pushes = Announcement<AppendOutcome>(hub: hub, requester: nil) { RoomPushes.sent($0) }
            let room = try await store.createRoom(id: "batched", owner: "owner", rotateEvery: 100, now: 1, limits: limits).id
            @Sendable func send(_ text: String, to room: String = room, epoch: Int = 0,
                                messageID: [UInt8] = RoomPayload.randomBytes(16)) async -> Result<AppendOutcome, any Error> {
                do {
                    return .success(try await store.append(room: room, from: "owner", payload: Array(text.utf8), epoch: epoch,
                                                           messageID: messageID, files: [], now: 2, limits: limits, announce: pushes))
                } catch {
                    return .failure(error)
                }
            }
            let firstID = RoomPayload.randomBytes(16)
            let held = try await cluster.holdRoomLock(room, in: database)
            async let first = send("first", messageID: firstID)
            try await waitUntil("the commit lane waits for the room's row") {
                (try? await cluster.sessionsWaitingForALock(in: database)) == 1
            }
            let valid = 8
            let results = await withTaskGroup(of: (String, Result<AppendOutcome, any Error>).self) { group in
                for index in 0..<valid { group.addTask { ("valid", await send("valid \(index)")) } }
                group.addTask { ("wrong epoch", await send("wrong epoch", epoch: 7)) }
                group.addTask { ("repeat", await send("first again", messageID: firstID)) }
                group.addTask { ("not a name", await send("nowhere", to: "bad\u{0}room")) }
                try? await waitUntil("every send is queued behind the first") { store.committer.queuedWrites == valid + 3 }
                try? await held.release()
                return await group.reduce(into: []) { $0.append($1) }
            }
            let firstSeq = try await first.get().message.seq
            #expect(firstSeq == 1)
            let seqs = try results.filter { $0.0 == "valid" }.map { try $0.1.get().message.seq }.sorted()
            #expect(seqs == Array(2...(valid + 1)))
            for (name, result) in results where name != "valid" {
                switch (name, result) {
                case ("wrong epoch", .failure(let error)): #expect((error as? HushError)?.code == .staleEpoch)
                case ("repeat", .success(let outcome)): #expect(outcome.isRepeat && outcome.message.seq == firstSeq)
                case ("not a name", .failure(let error)): #expect(!(error is HushError), "a database error: \(error)")
                default: Issue.record("\(name): \(result)")
                }
            }
            #expect(try await store.room(room)?.lastSeq == valid + 1)
            // The valid sends after the first were committed together: their events carry one
            // transaction's start time.
            #expect(try await cluster.transactionsOfEvents(room: room, after: 1, in: database) == 1)
        }
    }

    @Test func nodesStartingAtOnceApplyTheMigrationsOnce() async throws {
        let cluster = try await PostgresCluster.shared()
        let database = try await cluster.createDatabase()
        do {
            async let first = PostgresStore.connect(to: database)
            async let second = PostgresStore.connect(to: database)
            let stores = try await [first, second]
            for store in stores {
                #expect(try await store.synchronousCommit() == "on")
                await store.close()
            }
            // A third start finds the schema as it is and changes nothing.
            let third = try await PostgresStore.connect(to: database)
            #expect(try await third.room("none") == nil)
            await third.close()
        } catch {
            try? await cluster.dropDatabase(database)
            throw error
        }
        try await cluster.dropDatabase(database)
    }
}

@Suite(.timeLimit(.minutes(5))) struct PostgresLocationTests {
    @Test func connectionURLsAreReadStrictlyAndNeverShowThePassword() throws {
        let location = try PostgresLocation(url: "postgres://hush:s3cret@db.example:6432/chat?sslmode=require")
        #expect(location.host == "db.example" && location.port == 6432 && location.username == "hush")
        #expect(location.password == "s3cret" && location.database == "chat" && location.tls == .require)
        #expect(!location.description.contains("s3cret"))
        #expect(try PostgresLocation(url: "postgresql://u@[::1]/d").host == "::1")
        for hostile in ["", "http://u@h/d", "postgres://h/d", "postgres://u@/d", "postgres://u@h", "postgres://u@h/",
                        "postgres://u@h/d/e", "postgres://u@h:0/d", "postgres://u@h/d?sslmode=verify-full",
                        "postgres://u@h/d?options=-c%20x", "postgres://u@h/" + String(repeating: "d", count: 3000)] {
            #expect(throws: PostgresLocationError.self, "\(hostile)") { try PostgresLocation(url: hostile) }
        }
    }
}
