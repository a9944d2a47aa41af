import Foundation
import HushClient
import HushProtocol
import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// Several nodes on one PostgreSQL database: what one node commits reaches the connections of
/// every other node, in each room's sequence order (`PostgresFanOut`).
@Suite(.serialized, .timeLimit(.minutes(5)), .enabled(if: StoreChoice.all.contains(.postgres)))
struct CrossNodeTests {
    /// Two nodes, each with its own server key, on one fresh database.
    func withTwoNodes(_ body: (TestServer, TestServer) async throws -> Void) async throws {
        try await withTestServer(limits: PostgresStoreTests.unthrottled, store: .postgres) { nodeA in
            let database = try #require(nodeA.database)
            let nodeB = try await TestServer.start(limits: PostgresStoreTests.unthrottled, store: .postgres, database: database)
            try await using(nodeB, stop: { await $0.stop() }) { nodeB in try await body(nodeA, nodeB) }
        }
    }

    /// The next chat message, rotation or refusal a client shows.
    static let isReadable: @Sendable (RoomClient.Event) -> Bool = { event in
        switch event {
        case .message, .rotated, .rejected: true
        default: false
        }
    }

    @Test func aMemberOnAnotherNodeGetsEveryPushInSequenceOrder() async throws {
        try await withTwoNodes { nodeA, nodeB in
            let owner = try await RoomClient.create(server: try await nodeA.info())
            let carol = try await RoomClient.join(link: try await owner.invite())
            let bobOnA = try await RoomClient.join(link: try await owner.invite())
            let bob = try await RoomClient.resume(await bobOnA.state, on: try await nodeB.info())
            await bobOnA.disconnect()
            // Two senders on node A at once, and a rotation among their messages.
            async let carolSent: Void = { for index in 0..<10 { _ = try await carol.send("carol \(index)") } }()
            for index in 0..<10 {
                if index == 5 { _ = try await owner.rotate() }
                _ = try await owner.send("owner \(index)")
            }
            try await carolSent
            var seqs: [Int] = []
            var texts: Set<String> = []
            while seqs.count < 21 {
                switch try await next(bob.events, where: Self.isReadable) {
                case .message(let seq, _, let text):
                    seqs.append(seq)
                    texts.insert(text)
                case .rotated(let seq, _):
                    seqs.append(seq)
                case let event:
                    Issue.record("Bob, on node B, could not read \(event)")
                    return
                }
            }
            // 20 messages and one rotation, each once, in sequence order.
            #expect(seqs == Array(1...21))
            #expect(texts == Set((0..<10).flatMap { ["carol \($0)", "owner \($0)"] }))
            // And the other way: what Bob sends on node B reaches the owner and Carol on node A.
            let seq = try await bob.send("from B")
            let bobKey = await bob.key
            #expect(try await next(owner.events, where: ProtocolV2Tests.isText("from B")) == .message(seq: seq, from: bobKey, text: "from B"))
            #expect(try await next(carol.events, where: ProtocolV2Tests.isText("from B")) == .message(seq: seq, from: bobKey, text: "from B"))
        }
    }

    @Test func aRemovalOnOneNodeClosesTheKeyOnTheOther() async throws {
        try await withTwoNodes { nodeA, nodeB in
            let infoB = try await nodeB.info()
            let owner = try await RoomClient.create(server: try await nodeA.info())
            let bobOnA = try await RoomClient.join(link: try await owner.invite())
            let carolOnA = try await RoomClient.join(link: try await owner.invite())
            let bob = try await RoomClient.resume(await bobOnA.state, on: infoB)
            let carol = try await RoomClient.resume(await carolOnA.state, on: infoB)
            await bobOnA.disconnect()
            await carolOnA.disconnect()
            let bobKey = await bob.key
            try await owner.remove(bobKey)
            #expect(try await next(bob.events) { $0 == .removed } == .removed)
            let bobConnection = await bob.rawConnection
            try await waitUntil("Bob's connection on node B is closed") { bobConnection.isClosed }
            // The server takes it off the hub once its side of the close is done too.
            try await waitUntil("node B has no connection of Bob's") { nodeB.server.hub.connectionCount(of: bobKey) == 0 }
            // Carol, on node B, hears of it and follows the wrapped rotation that comes after.
            #expect(try await next(carol.events) { $0 == .memberRemoved(key: bobKey) } == .memberRemoved(key: bobKey))
            #expect(try await next(carol.events, where: ProtocolV2Tests.isRotation) == .rotated(seq: 1, epoch: 1))
            let seq = try await carol.send("after Bob")
            #expect(try await next(owner.events, where: ProtocolV2Tests.isText("after Bob"))
                    == .message(seq: seq, from: await carol.key, text: "after Bob"))
            // Node B refuses the removed key from then on.
            await #expect(throws: (any Error).self) { _ = try await HushConnection.openRegistered(server: infoB, key: await bob.state.me) }
        }
    }

    @Test func aJoinCrossesNodesBothWays() async throws {
        try await withTwoNodes { nodeA, nodeB in
            let owner = try await RoomClient.create(server: try await nodeA.info())
            let link = try await owner.invite()
            // The owner answers from node B; the joiner comes through node A, where the link points.
            let ownerOnB = try await RoomClient.resume(await owner.state, on: try await nodeB.info(), inviteTokens: await owner.inviteTokens)
            await owner.disconnect()
            let joiner = try await RoomClient.join(link: link)
            let joinerKey = await joiner.key
            #expect(try await next(ownerOnB.events) { $0 == .memberJoined(key: joinerKey) } == .memberJoined(key: joinerKey))
            let seq = try await ownerOnB.send("welcome")
            #expect(try await next(joiner.events, where: ProtocolV2Tests.isText("welcome"))
                    == .message(seq: seq, from: await ownerOnB.key, text: "welcome"))
        }
    }

    /// An event no node wrote (not JSON) is skipped: the room resynchronizes past it (its
    /// connections on every node are closed) and later events are pushed again.
    @Test func anUnreadableEventDoesNotStopTheRoom() async throws {
        try await withTwoNodes { nodeA, nodeB in
            let owner = try await RoomClient.create(server: try await nodeA.info())
            let bobOnA = try await RoomClient.join(link: try await owner.invite())
            let bob = try await RoomClient.resume(await bobOnA.state, on: try await nodeB.info())
            await bobOnA.disconnect()
            let room = await owner.room
            try await PostgresCluster.shared().execute("""
                WITH numbered AS (UPDATE rooms SET event_seq = event_seq + 1 WHERE id = '\(room)' RETURNING event_seq),
                stored AS (INSERT INTO node_events (room, event_seq, id, effects)
                           SELECT '\(room)', event_seq, 'not-a-node', '\\x7b7b7b'::bytea FROM numbered RETURNING event_seq)
                SELECT pg_notify('hush_events', '\(room) ' || event_seq || ' 0F6C1E4B-7A3E-4C2B-9E7D-2B1F1A9C0D11') FROM stored
                """, in: try #require(nodeA.database))
            // Both nodes skip it: each closes its connections of the room's keys.
            let bobConnection = await bob.rawConnection
            let ownerConnection = await owner.rawConnection
            try await waitUntil("node B closed Bob's connection to resynchronize") { bobConnection.isClosed }
            try await waitUntil("node A closed the owner's connection to resynchronize") { ownerConnection.isClosed }
            _ = try await bob.reconnect()
            _ = try await owner.reconnect()
            _ = try await owner.send("after the bad event")
            #expect(try await next(bob.events, where: ProtocolV2Tests.isText("after the bad event"))
                    == .message(seq: 1, from: await owner.key, text: "after the bad event"))
        }
    }

    @Test func pushesSurviveTheNodesLosingTheirDatabaseConnections() async throws {
        try await withTwoNodes { nodeA, nodeB in
            let owner = try await RoomClient.create(server: try await nodeA.info())
            let bobOnA = try await RoomClient.join(link: try await owner.invite())
            let bob = try await RoomClient.resume(await bobOnA.state, on: try await nodeB.info())
            await bobOnA.disconnect()
            _ = try await owner.send("before")
            #expect(try await next(bob.events, where: Self.isReadable) == .message(seq: 1, from: await owner.key, text: "before"))

            // Every connection to the database ends, node B's LISTEN connection among them.
            try await PostgresCluster.shared().terminateConnections(to: try #require(nodeA.database))
            for index in 0..<5 {
                // A request that met a dead pooled connection fails as `internal`; the same
                // message id sent again stores it once.
                let id = RoomPayload.randomBytes(16)
                var attempts = 0
                while true {
                    do {
                        _ = try await owner.send("after \(index)", messageID: id)
                        break
                    } catch let error as HushError where error.code == .internal && attempts < 5 {
                        attempts += 1
                    }
                }
            }
            var read: [RoomClient.Event] = []
            for _ in 0..<5 { read.append(try await next(bob.events, timeout: .seconds(30), where: Self.isReadable)) }
            let ownerKey = await owner.key
            #expect(read == (0..<5).map { .message(seq: $0 + 2, from: ownerKey, text: "after \($0)") })
        }
    }

    /// Two `hush serve` processes on one database with one `--server-key`: a client pins one
    /// key and moves between them; a node killed with SIGKILL and started again serves what
    /// was committed meanwhile, and pushes again.
    @Test func twoServeProcessesShareOneKeyAndOneIsKilled() async throws {
        let cluster = try await PostgresCluster.shared()
        let database = try await cluster.createDatabase()
        let keyFolder = FileManager.default.temporaryDirectory.appendingPathComponent("hush-key-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: keyFolder) }
        let (keyFile, serverKey) = try writeServerKey(in: keyFolder)
        let arguments = ["--database", "\(database)?sslmode=disable", "--server-key", keyFile.path, "--rate-limit", "0"]
        try await using((), stop: { _ in try? await cluster.dropDatabase(database) }) { _ in
            try await ServeProcess.with(arguments: arguments) { nodeA in
                let nodeB = try await ServeProcess.start(arguments: arguments)
                try await using(nodeB, stop: { await $0.stop() }) { nodeB in
                    let infoA = try await ServerInfo.fetch(nodeA.url)
                    let infoB = try await ServerInfo.fetch(nodeB.url, expectedFingerprint: infoA.fingerprint)
                    #expect(infoA.publicKey == serverKey.publicKey && infoB.publicKey == serverKey.publicKey)
                    let owner = try await RoomClient.create(server: infoA)
                    let bob = try await RoomClient.join(link: try await owner.invite())
                    _ = try await bob.reconnect(to: infoB)  // the same pinned key: allowed
                    _ = try await owner.send("one")
                    let ownerKey = await owner.key
                    #expect(try await next(bob.events, where: Self.isReadable) == .message(seq: 1, from: ownerKey, text: "one"))

                    nodeB.kill()
                    _ = try await owner.send("two")  // committed while node B is down
                    let restarted = try await ServeProcess.start(data: nodeB.data, port: nodeB.port, arguments: arguments)
                    try await using(restarted, stop: { await $0.stop() }) { restarted in
                        _ = try await bob.reconnect(to: try await ServerInfo.fetch(restarted.url, expectedFingerprint: infoA.fingerprint))
                        try await bob.refresh()
                        #expect(try await next(bob.events, where: Self.isReadable) == .message(seq: 2, from: ownerKey, text: "two"))
                        _ = try await owner.send("three")
                        #expect(try await next(bob.events, where: Self.isReadable) == .message(seq: 3, from: ownerKey, text: "three"))
                    }
                }
            }
        }
    }
}
