import Foundation
import HushProtocol
import HushTestSupport
import Testing

/// The web client's release checks (docs/CODE_TRUST.md) against a real `hush serve`: `hush web
/// verify` and the headers every response carries.
@Suite(.serialized, .timeLimit(.minutes(5))) struct WebReleaseTests {
    static let repositoryWeb = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("web")

    static func manifest() throws -> WebManifest {
        try WebManifest.parse(Array(try Data(contentsOf: repositoryWeb.appendingPathComponent("manifest.json"))))
    }

    /// A copy of web/ that `change` may alter, served by its own `hush serve`.
    static func withServedCopy<T: Sendable>(_ change: (URL) throws -> Void, _ body: (ServeProcess) async throws -> T) async throws -> T {
        let folder = try TempFolder()
        defer { folder.remove() }
        let web = folder.url.appendingPathComponent("web")
        try FileManager.default.copyItem(at: repositoryWeb, to: web)
        try change(web)
        return try await ServeProcess.with(arguments: ["--web-root", web.path], body)
    }

    static func verify(_ url: String, _ extra: [String] = []) async throws -> (status: Int32, lines: [String], stderr: String) {
        let result = try await HushProcess.run(["web", "verify", url] + extra, environment: [:])
        return (result.status, result.stdout.split(separator: "\n").map(String.init), result.stderr)
    }

    @Test func theRepositoryWebClientIsTheSignedRelease() async throws {
        let files = try Self.manifest().files.keys.sorted()
        try await ServeProcess.with(arguments: ["--web-root", Self.repositoryWeb.path]) { server in
            let result = try await Self.verify(server.url + "/")
            #expect(result.status == 0, "\(result.lines) \(result.stderr)")
            // The page, every file of the manifest, the manifest and its signature: each ok.
            let checked = result.lines.dropLast()
            #expect(checked.count == files.count + 3)
            #expect(checked.allSatisfy { $0.hasPrefix("ok ") }, "\(checked)")
            for path in files + ["/manifest.json", "/manifest.sig"] {
                #expect(checked.contains("ok       \(path)"), "\(path)")
            }
            #expect(result.lines.last?.contains("\(files.count + 3) ok, 0 changed, 0 unlisted") == true, "\(result.lines)")
        }
    }

    @Test func oneChangedByteIsReportedChanged() async throws {
        try await Self.withServedCopy({ web in
            let module = web.appendingPathComponent("app/ui.mjs")
            var bytes = try Data(contentsOf: module)
            bytes[bytes.startIndex + 100] ^= 0x01
            try bytes.write(to: module)
        }) { server in
            let result = try await Self.verify(server.url + "/")
            #expect(result.status == 1)
            #expect(result.lines.contains("CHANGED  /app/ui.mjs"), "\(result.lines)")
            #expect(result.lines.filter { $0.hasPrefix("CHANGED") } == ["CHANGED  /app/ui.mjs"], "\(result.lines)")
            #expect(result.lines.last?.contains("1 changed, 0 unlisted") == true, "\(result.lines)")
        }
    }

    @Test func anAddedScriptIsReportedUnlisted() async throws {
        try await Self.withServedCopy({ web in
            let index = web.appendingPathComponent("index.html")
            let html = try String(contentsOf: index, encoding: .utf8)
            try html.replacingOccurrences(of: "</head>", with: "<script type=\"module\" src=\"/app/extra.mjs\"></script>\n</head>")
                .write(to: index, atomically: true, encoding: .utf8)
            try "import './more.mjs';\n".write(to: web.appendingPathComponent("app/extra.mjs"), atomically: true, encoding: .utf8)
        }) { server in
            let result = try await Self.verify(server.url + "/")
            #expect(result.status == 1)
            #expect(result.lines.contains("CHANGED  /index.html"), "\(result.lines)")
            #expect(result.lines.contains("UNLISTED /app/extra.mjs (loaded by /index.html)"), "\(result.lines)")
            #expect(result.lines.contains("UNLISTED /app/more.mjs (loaded by /app/extra.mjs)"), "\(result.lines)")
            #expect(result.lines.last?.contains("2 changed, 2 unlisted") == true, "\(result.lines)")
        }
    }

    @Test func aManifestNotSignedByTheReleaseKeyIsRefused() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let manifest = Self.repositoryWeb.appendingPathComponent("manifest.json").path
        var signed = try Data(contentsOf: Self.repositoryWeb.appendingPathComponent("manifest.sig"))
        signed[signed.endIndex - 1] ^= 0x01
        try signed.write(to: URL(fileURLWithPath: folder.path("manifest.sig")))
        let result = try await Self.verify("http://127.0.0.1:1/", ["--manifest", manifest, "--signature", folder.path("manifest.sig")])
        #expect(result.status == 1)
        #expect(result.stderr.contains("signature is not valid"), "\(result.stderr)")
        #expect(result.lines.isEmpty, "nothing is fetched before the signature holds: \(result.lines)")
    }

    @Test func signingRefusesAKeyOtherThanTheReleaseKey() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let keygen = try await HushProcess.run(["keygen", "--out", folder.path("other")], environment: [:])
        #expect(keygen.status == 0, "\(keygen.stderr)")
        let result = try await HushProcess.run(["web", "sign", "--key", folder.path("other.priv"),
                                                "--manifest", Self.repositoryWeb.appendingPathComponent("manifest.json").path,
                                                "--out", folder.path("manifest.sig")], environment: [:])
        #expect(result.status == 1)
        #expect(result.stderr.contains("is not the release key"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.path("manifest.sig")))
    }

    static func export(_ folder: String, relay: String = "https://relay.example", webRoot: URL = repositoryWeb) async throws
        -> (status: Int32, stdout: String, stderr: String) {
        try await HushProcess.run(["web", "export", folder, "--relay", relay, "--web-root", webRoot.path], environment: [:])
    }

    /// `hush web export`: the signed release byte for byte, its signature, and relay.json.
    @Test func exportWritesTheSignedReleaseAndItsRelay() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let result = try await Self.export(folder.path("copy"), relay: "http://127.0.0.1:8080")
        #expect(result.status == 0, "\(result.stderr)")
        let manifest = try Self.manifest()
        for path in manifest.files.keys.sorted() + ["/manifest.json", "/manifest.sig"] {
            let exported = try Data(contentsOf: URL(fileURLWithPath: folder.path("copy") + path))
            #expect(exported == (try Data(contentsOf: URL(fileURLWithPath: Self.repositoryWeb.path + path))), "\(path)")
        }
        let relay = try Data(contentsOf: URL(fileURLWithPath: folder.path("copy/relay.json")))
        #expect(String(decoding: relay, as: UTF8.self) == #"{"relay":"http://127.0.0.1:8080"}"#)
        // Nothing else: no staging folder left beside it, no file the release does not have.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path) == ["copy"])
        var written: [String] = []
        let files = FileManager.default.enumerator(atPath: folder.path("copy"))
        while let path = files?.nextObject() as? String {
            if files?.fileAttributes?[.type] as? FileAttributeType == .typeRegular { written.append(path) }
        }
        #expect(written.count == manifest.files.count + 3, "\(written)")
    }

    /// A web root that is not the signed release, a folder in use or a relay that is not an
    /// origin: refused, and nothing written.
    @Test func exportRefusesAndWritesNothing() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let changed = folder.url.appendingPathComponent("web")
        try FileManager.default.copyItem(at: Self.repositoryWeb, to: changed)
        try "/* changed */".write(to: changed.appendingPathComponent("app/ui.mjs"), atomically: true, encoding: .utf8)
        let fromChanged = try await Self.export(folder.path("copy"), webRoot: changed)
        #expect(fromChanged.status == 1)
        #expect(fromChanged.stderr.contains("app/ui.mjs is not the file of signed release"), "\(fromChanged.stderr)")

        for relay in ["https://relay.example/", "https://Relay.example", "relay.example", "https://relay.example:443"] {
            let result = try await Self.export(folder.path("copy"), relay: relay)
            #expect(result.status == 1, "\(relay)")
            #expect(result.stderr.contains("not an origin"), "\(relay): \(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path) == ["web"])

        try FileManager.default.createDirectory(atPath: folder.path("used"), withIntermediateDirectories: false)
        try "mine".write(toFile: folder.path("used/notes.txt"), atomically: true, encoding: .utf8)
        let intoUsed = try await Self.export(folder.path("used"))
        #expect(intoUsed.status == 1)
        #expect(intoUsed.stderr.contains("is not empty"), "\(intoUsed.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path("used")) == ["notes.txt"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.url.path).sorted() == ["used", "web"])
    }

    /// Pages, not-found answers and the 400 of a malformed request carry the same headers.
    @Test func headersOnPagesErrorsAndRefusals() async throws {
        let importMapHash = try #require(try Self.manifest().scriptHashes.first)
        try await ServeProcess.with(arguments: ["--web-root", Self.repositoryWeb.path]) { server in
            var responses: [(String, RawResponse)] = []
            for path in ["/", "/app/main.mjs", "/.well-known/hush", "/missing.mjs", "/../server.key"] {
                responses.append((path, try #require(try await rawGet(path, port: server.port))))
            }
            #expect(responses.map(\.1.status) == [200, 200, 200, 404, 404])
            #expect(responses[0].1.headers["content-security-policy"]?.contains("script-src 'self' '\(importMapHash)';") == true)
            // A malformed request: answered 400 by the connection layer, outside the router.
            let socket = try await RawSocket.connect(port: server.port)
            defer { socket.close() }
            try await socket.send("NONSENSE\r\n\r\n")
            responses.append(("malformed", try #require(RawResponse(await socket.read(timeout: .seconds(20)).bytes))))
            #expect(responses.last?.1.status == 400)
            for (what, response) in responses {
                let csp = response.headers["content-security-policy"] ?? ""
                for directive in ["default-src 'self'", "require-trusted-types-for 'script'", "trusted-types hush-worker",
                                  "form-action 'none'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"] {
                    #expect(csp.contains(directive), "\(what): \(csp)")
                }
                #expect(response.headers["cross-origin-opener-policy"] == "same-origin", "\(what)")
                #expect(response.headers["cross-origin-resource-policy"] == "same-origin", "\(what)")
                #expect(response.headers["x-content-type-options"] == "nosniff", "\(what)")
                #expect(response.headers["referrer-policy"] == "no-referrer", "\(what)")
                #expect(response.headers["cache-control"] == "no-store", "\(what)")
            }
        }
    }
}
