import Foundation
import HushTestSupport
import HushClient
import HushProtocol
import HushServer
import Testing

/// The built `hush serve` binary, killed with SIGKILL and restarted.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DurabilityTests {
    /// The server key is made once (0600, synced) and read strictly: a damaged or oversized file
    /// stops the server with a clear error instead of becoming a new identity.
    @Test func serverKeyIsKeptAndReadStrictly() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("hush-key-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try ServerIdentity.loadOrCreate(in: folder)
        let file = folder.appendingPathComponent("server.key")
        let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)
        #expect(try ServerIdentity.loadOrCreate(in: folder).publicKey == first.publicKey)
        for damaged in [Data(repeating: 7, count: 45), Data(repeating: 7, count: 5000)] {
            try damaged.write(to: file)
            #expect(throws: (any Error).self) { try ServerIdentity.loadOrCreate(in: folder) }
            #expect(try Data(contentsOf: file) == damaged, "a damaged key is never replaced by a new identity")
        }
        // A key file all nodes share (`--server-key`) is read the same way, and never made.
        let shared = folder.appendingPathComponent("shared.key")
        #expect(throws: (any Error).self) { try ServerIdentity.load(from: shared) }
        #expect(!FileManager.default.fileExists(atPath: shared.path))
        try Data(first.privateKey.containerBytes).write(to: shared)
        #expect(try ServerIdentity.load(from: shared).publicKey == first.publicKey)
        // Or as `hush keygen --out` writes it: the container's base64 on one line.
        try Data((Base64.encode(first.privateKey.containerBytes) + "\n").utf8).write(to: shared)
        #expect(try ServerIdentity.load(from: shared).publicKey == first.publicKey)
        try Data((Base64.encode(Array(repeating: 7, count: 45)) + "\n").utf8).write(to: shared)
        #expect(throws: (any Error).self) { try ServerIdentity.load(from: shared) }
        try Data(repeating: 7, count: 5000).write(to: shared)
        #expect(throws: (any Error).self) { try ServerIdentity.load(from: shared) }
    }

    @Test func ackedMessagesSurviveKillNine() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("hush-kill-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let first = try await ServeProcess.start(data: data)
        let info = try await ServerInfo.fetch(first.url)
        let owner = try await RoomClient.create(server: info)
        let count = 25
        for index in 1...count { try await owner.send("durable \(index)") }
        // A join request waiting for an offline owner must survive too.
        let link = try await owner.invite()
        await owner.disconnect()
        let invite = try InviteLink.parse(link).invite
        let (flow, _) = try await sendJoinRequest(invite, server: info)
        first.kill()

        try await ServeProcess.with(data: data) { second in
            let again = try await ServerInfo.fetch(second.url, expectedFingerprint: info.fingerprint)
            #expect(again.wellKnown.publicKey == info.wellKnown.publicKey)
            let summary = try await owner.reconnect(to: again)
            #expect(summary?.lastSeq == count)
            let history = try await owner.history(after: 0)
            #expect(history.compactMap(RoomFlowTests.text) == (1...count).map { "durable \($0)" })

            // The owner's hello delivered the stored join request and answered it.
            let joinerAgain = try await HushConnection.open(server: again, key: flow.me)
            let hello = try await joinerAgain.request(WireMessage(type: "hello"))
            #expect(hello.joins?.first?.room == invite.room)
            let response = try await next(joinerAgain.pushes) { $0.type == "join_response" }
            #expect(try flow.accept(sealed: response.sealed!.bytes).state.epoch == 0)
        }
    }

    @Test func formerMembersSurviveKillNine() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("hush-former-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let first = try await ServeProcess.start(data: data)
        let info = try await ServerInfo.fetch(first.url)
        let owner = try await RoomClient.create(server: info)
        let bob = try await RoomClient.join(link: try await owner.invite())
        let bobKey = await bob.key
        try await bob.send("from bob")
        try await bob.leave()
        first.kill()

        try await ServeProcess.with(data: data) { second in
            let again = try await ServerInfo.fetch(second.url, expectedFingerprint: info.fingerprint)
            let summary = try await owner.reconnect(to: again)
            let entry = try #require(summary?.formerMembers?.first)
            #expect(summary?.formerMembers?.count == 1)
            #expect(entry.key == bobKey && entry.until == 1 && entry.departure == .left)
            #expect(Statement.verifyDeparture(.left, signature: entry.departureSignature.bytes, room: await owner.room,
                                              key: bobKey, owner: await owner.state.owner))
            // A member joining after the restart reads Bob's message as his.
            let carol = try await RoomClient.join(link: try await owner.invite())
            #expect(try await carol.history(after: 0) == [.message(seq: 1, from: bobKey, text: "from bob")])
        }
    }
}
