import Foundation
import HushClient
import HushProtocol
import HushTerminal
import HushTestSupport
import Testing

/// `hush chat send --file`, `read` and `save` against a real server (docs/PROTOCOL.md §6.8).
@Suite(.serialized, .timeLimit(.minutes(5))) struct FileProcessTests {
    @Test func sendReadAndSaveFiles() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("joiner.hush"), "HUSH_PASSPHRASE": "joiner pass"]
            let owner = try await RoomClient.create(server: try await server.info())
            let join = try await HushProcess.run(["chat", "join", try await owner.invite(), "--name", "club"], environment: env)
            #expect(join.status == 0, "\(join.stderr)")
            let record = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club")
            await owner.waitForMember(record.myKey)

            // The CLI sends a file; the owner's client fetches it byte for byte.
            let photo = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            try Data(photo).write(to: folder.url.appendingPathComponent("holiday photo.PNG"))
            let sent = try await HushProcess.run(["chat", "send", "club", "--file", folder.path("holiday photo.PNG")], environment: env)
            #expect(sent.status == 0 && sent.stdout.contains("sent holiday photo.PNG (200.0 kB, image/png)"), "\(sent.stderr)")
            guard case .file(_, let from, _, let file) = try await next(owner.events, timeout: .seconds(30), where: { if case .file = $0 { true } else { false } })
            else { return }
            #expect(from == record.myKey && file.name == "holiday photo.PNG" && file.type == "image/png")
            #expect(try await owner.download(file) == photo)

            // The owner sends one back: `read` shows how to save it, `save` writes it whole, twice
            // under two names, never over the first.
            let report = Array("quarterly numbers\n".utf8)
            let (_, seq) = try await owner.sendFile(report, name: "report.txt", type: "text/plain")
            let read = try await HushProcess.run(["chat", "read", "club"], environment: env)
            #expect(read.stdout.contains("[file] report.txt (18 B, text/plain) — hush chat save club \(seq)"), "\(read.stdout)")
            let json = try await HushProcess.run(["chat", "read", "club", "--all", "--json"], environment: env)
            let files = json.stdout.split(separator: "\n").compactMap { ChatProcessTests.event(String($0)) }.filter { $0.type == "file" }
            #expect(files.map(\.file) == [Format.FileSummary(name: "holiday photo.PNG", size: 200_000, type: "image/png"),
                                          Format.FileSummary(name: "report.txt", size: 18, type: "text/plain")], "\(json.stdout)")
            let ownerKey = await owner.key
            #expect(files.last?.seq == seq && files.last?.key == ownerKey)
            // The file key opens the file: it is never printed.
            let shared = try await owner.history(after: seq - 1).compactMap { event -> RoomFile? in if case .file(_, _, _, let file) = event { file } else { nil } }
            #expect(shared.count == 1)
            for output in [read.stdout, read.stderr, json.stdout, json.stderr] {
                #expect(!shared.contains { output.contains(Base64.encode($0.key.bytes)) })
            }
            let out = folder.url.appendingPathComponent("out")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            for expected in ["report.txt", "report (1).txt"] {
                let saved = try await HushProcess.run(["chat", "save", "club", String(seq), "--out", out.path], environment: env)
                #expect(saved.status == 0 && saved.stdout.contains(expected), "\(saved.stderr)")
                #expect(try Array(Data(contentsOf: out.appendingPathComponent(expected))) == report)
            }
            let listing = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
            #expect(listing == ["report (1).txt", "report.txt"], "no temporary file is left: \(listing)")

            // A file whose chunks do not make the file described (another hash) is refused whole:
            // nothing is written, not even a temporary file.
            let (stored, chunks) = try RoomFile.seal(Array("the real bytes".utf8), room: await owner.room, name: "forged.txt", type: "text/plain")
            try await owner.uploadChunks(chunks, of: stored)
            let forged = try RoomFile(id: stored.id, key: stored.key, size: stored.size, sha256: Array(repeating: 7, count: 32),
                                      name: stored.name, type: stored.type)
            let forgedSeq = try await owner.sendFileMessage(forged)
            let refusedFile = try await HushProcess.run(["chat", "save", "club", String(forgedSeq), "--out", out.path], environment: env)
            #expect(refusedFile.status != 0 && refusedFile.stderr.contains("file refused: the file's SHA-256 does not match; nothing was saved"),
                    "\(refusedFile.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).count == 2)

            // A message that is no file, and a seq that does not exist, are one-line errors.
            let text = try await owner.send("just text")
            for wrong in [text, text + 10] {
                let refused = try await HushProcess.run(["chat", "save", "club", String(wrong), "--out", out.path], environment: env)
                #expect(refused.status != 0 && refused.stderr.contains("is not a file you can read"), "\(refused.stderr)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).count == 2)
        }
    }

    /// The pure parts of saving: a name that is not a file name never becomes a path, and a name
    /// already taken gets a number.
    @Test func savingNeverEscapesTheFolderNorOverwrites() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        for hostile in ["../escape.txt", "..", "a/b", ""] {
            #expect(throws: ChatError.self) { try SavedFile.write([1], name: hostile, in: folder.url) }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path).isEmpty)
        let first = try SavedFile.write([1], name: "archive", in: folder.url)
        let second = try SavedFile.write([2], name: "archive", in: folder.url)
        #expect(first.lastPathComponent == "archive" && second.lastPathComponent == "archive (1)")
        #expect(try Data(contentsOf: first) == Data([1]))
        let dotted = try SavedFile.write([3], name: ".hidden", in: folder.url)
        let dottedAgain = try SavedFile.write([4], name: ".hidden", in: folder.url)
        #expect(dotted.lastPathComponent == ".hidden" && dottedAgain.lastPathComponent == ".hidden (1)")
    }
}
