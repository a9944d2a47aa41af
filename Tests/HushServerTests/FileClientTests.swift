import Foundation
import HushClient
import HushProtocol
import HushTestSupport
import Testing
import ThemisKit

/// Files end to end (docs/PROTOCOL.md §4.9, §6.8) through `RoomClient` and a real server: the
/// chunks stored with `file_put`, the file message through the send path, and the chunks fetched
/// and verified by another member; who may not fetch them is refused.
@Suite(.serialized, .timeLimit(.minutes(5))) struct FileClientTests {
    static func content(_ size: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 16)) } }

    static func isFile(_ event: RoomClient.Event) -> Bool { if case .file = event { true } else { false } }

    @Test func aTenMiBFileReachesAMemberByteForByte() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let bytes = Self.content(10 << 20)
            let (file, seq) = try await owner.sendFile(bytes, name: "big.bin", type: RoomFile.unknownType)
            #expect(file.chunks == 160)
            guard case .file(let pushedSeq, let from, _, let shared) = try await next(bob.events, timeout: .seconds(60), where: Self.isFile)
            else { return }
            let ownerKey = await owner.key
            #expect(pushedSeq == seq && from == ownerKey && shared == file)
            let received = try await bob.download(shared)
            #expect(received.count == bytes.count)
            #expect(received == bytes)
            // The same file read again from history, and fetched by its sender too.
            let history = try await bob.history(after: 0)
            #expect(history.contains { if case .file(seq, _, _, file) = $0 { true } else { false } })
            #expect(try await owner.download(file) == bytes)
        }
    }

    /// What the server keeps of a file is sealed: its data folder (the database, its journal
    /// and WAL) holds neither the file's name, nor its type, nor any of its bytes, nor its key.
    @Test func theServersDataFolderHoldsNothingReadableOfAFile() async throws {
        let name = "quarterly-report-ZQXJ-9431.pdf"
        let type = "application/x-hush-scan-probe"
        // A plaintext made of one random 64-byte line repeated: any copy of it would be found.
        let line = RoomPayload.randomBytes(64)
        let bytes = Array((0..<3000).map { _ in line }.joined())
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let (file, _) = try await owner.sendFile(bytes, name: name, type: type)
            #expect(try await owner.download(file) == bytes)
            // Every file of the data folder, as anyone with the disk would read it.
            let directory = server.dataDirectory
            let stored = try FileManager.default.contentsOfDirectory(atPath: directory.path)
                .compactMap { FileManager.default.contents(atPath: directory.appendingPathComponent($0).path) }
                .map { Array($0) }
            // The scan sees what is stored: a stretch of a sealed chunk as the server returns it.
            var get = WireMessage(type: "file_get")
            get.room = await owner.room
            get.file = Base64Bytes(file.id)
            get.index = 1
            let sealed = try #require(try await owner.rawConnection.request(get).data?.bytes)
            #expect(stored.contains { $0.contains(sealed[1000..<1064]) }, "the sealed chunks are on disk")
            for probe in [Array(name.utf8), Array(type.utf8), line, file.key.bytes, Array(Base64.encode(file.key.bytes).utf8)] {
                #expect(!stored.contains { $0.contains(probe) }, "found \(probe.count) bytes the server must not hold")
            }
        }
    }

    @Test func chunksStoredAgainAndEmptyAndSmallFiles() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            // An upload run twice (a lost reply, say) stores each chunk once and the file goes out.
            let bytes = Self.content(RoomFile.chunkSize + 1)
            let room = await owner.room
            let (file, chunks) = try RoomFile.seal(bytes, room: room, name: "twice.bin", type: RoomFile.unknownType)
            try await owner.uploadChunks(chunks, of: file)
            try await owner.uploadChunks(chunks, of: file)
            for size in [0, 1] {
                let (small, _) = try await owner.sendFile(Self.content(size), name: "small.txt", type: "text/plain")
                #expect(try await bob.download(small) == Self.content(size))
            }
            // A file never named by a message is its uploader's alone.
            await #expect(throws: HushError.self) { try await bob.download(file) }
            #expect(try await owner.download(file) == bytes)
        }
    }

    /// A file budget far below the 8 requests a client keeps in flight: the server answers
    /// `rate_limited` at once, and the client waits and sends those chunks again, both ways.
    @Test func aTightFileBudgetIsWaitedOut() async throws {
        var limits = Limits.standard
        limits.fileRequestsPerSecond = 8
        limits.fileRequestBurst = 2
        try await withTestServer(limits: limits) { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let bytes = Self.content(24 * RoomFile.chunkSize)
            let (file, _) = try await owner.sendFile(bytes, name: "paced.bin", type: RoomFile.unknownType)
            #expect(try await bob.download(file) == bytes)
            // Two downloads and an upload at once share the client's 8 request slots.
            async let first = bob.download(file)
            async let second = bob.download(file)
            async let upload = bob.sendFile(Self.content(9 * RoomFile.chunkSize), name: "mine.bin", type: RoomFile.unknownType)
            let (one, two, mine) = try await (first, second, upload)
            #expect(one == bytes && two == bytes)
            #expect(try await owner.download(mine.file) == Self.content(9 * RoomFile.chunkSize))
        }
    }

    /// A file message refused with `rotation_pending` (a member left) is held, sealed again under
    /// the owner's new key and sent with the same `files`: the chunks stay pending meanwhile, and
    /// the owner reads one file message and fetches the file.
    @Test func aFileSentAcrossADepartureIsHeldThenSealedAgain() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            let carol = try await RoomClient.join(link: try await owner.invite())
            try await bob.leave()
            _ = try await next(owner.events) { if case .memberLeft = $0 { true } else { false } }
            let bytes = Self.content(3 * RoomFile.chunkSize + 5)
            async let sent = carol.sendFile(bytes, name: "held.bin", type: RoomFile.unknownType)
            #expect(try await next(carol.events, timeout: .seconds(30)) { $0 == .sendHeld } == .sendHeld)
            try await owner.rotate()
            let (file, seq) = try await sent
            #expect(await carol.state.epoch == 1)
            let files = try await owner.history(after: 0).compactMap { event -> Int? in if case .file(let seq, _, _, _) = event { seq } else { nil } }
            #expect(files == [seq])
            #expect(try await owner.download(file) == bytes)
        }
    }

    /// A key of another room is `not_member`; a member who joined after the file (its floor is
    /// the rotation before it joined) is `unknown_file`, and reads no file message either.
    @Test func strangersAndLaterMembersAreRefused() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let bob = try await RoomClient.join(link: try await owner.invite())
            let (file, seq) = try await owner.sendFile(Self.content(100_000), name: "secret.pdf", type: "application/pdf")
            _ = try await next(bob.events, where: Self.isFile)
            #expect(try await bob.download(file) == Self.content(100_000))

            let stranger = try await RoomClient.create(server: info)
            var request = WireMessage(type: "file_get")
            request.room = await owner.room
            request.file = Base64Bytes(file.id)
            request.index = 0
            let refused = try await stranger.rawConnection.exchange(request)
            #expect(refused.type == "error" && refused.code == ErrorCode.notMember.rawValue)

            try await owner.rotate()
            let carol = try await RoomClient.join(link: try await owner.invite())
            await #expect { try await carol.download(file) } throws: { ($0 as? HushError)?.code == .unknownFile }
            let readable = try await carol.history(after: 0)
            #expect(!readable.contains { if case .file = $0 { true } else { false } }, "seq \(seq) is before carol's floor")
        }
    }
}
