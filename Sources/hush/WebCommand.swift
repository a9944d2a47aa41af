import ArgumentParser
import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HushClient
import HushProtocol
import HushServer
import ThemisKit

/// `hush web`: releases of the web client (docs/CODE_TRUST.md).
struct Web: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign, verify and export releases of the web client.",
        subcommands: [WebSign.self, WebVerify.self, WebExport.self])
}

/// A manifest and the Secure Message that signs it, checked against the release key.
struct SignedRelease {
    let manifest: WebManifest
    let manifestBytes: [UInt8]
    let signedBytes: [UInt8]

    static var releaseKey: ThemisPublicKey {
        // Generated from release/release-key.pub; a test checks that it parses.
        try! ThemisPublicKey(containerBytes: Base64.decode(BuiltInRelease.publicKey)!)
    }

    /// The release this binary was built with.
    static func builtIn() throws -> SignedRelease {
        guard let signed = Base64.decode(BuiltInRelease.signedManifest) else {
            throw CLIError("this hush was built without a signed release (web/manifest.sig)")
        }
        return try open(signed: signed)
    }

    /// Verifies the signature with the release key and parses what it signs.
    static func open(signed: [UInt8]) throws -> SignedRelease {
        guard signed.count <= WebManifest.maxBytes + 1024,
              let bytes = try? SecureMessage.verify(signed, with: releaseKey) else {
            throw CLIError("the manifest signature is not valid for the release key \(releaseKey.fingerprint)")
        }
        return SignedRelease(manifest: try WebManifest.parse(bytes), manifestBytes: bytes, signedBytes: signed)
    }
}

/// `hush web sign`: signs web/manifest.json with the release private key.
struct WebSign: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign the web client's manifest with the release key (Themis Secure Message).",
        discussion: "Run on the maintainer's offline machine, never on a server. Then run scripts/web-manifest (it builds the signature into hush) and rebuild.")

    @Option(help: "The release private key: a file holding the base64 Themis key container (hush keygen --out).")
    var key: String

    @Option(help: "The manifest to sign.")
    var manifest = "web/manifest.json"

    @Option(help: "Where to write the signed manifest.")
    var out = "web/manifest.sig"

    func run() async throws {
        try await reportingErrors {
            // The base64 of a 45-byte container and a newline; anything much larger is not a key.
            let keyText = try BoundedFile.read(key, maxBytes: 4096)
            guard let keyBytes = Base64.decode(String(decoding: keyText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)),
                  let privateKey = try? ThemisPrivateKey(containerBytes: keyBytes) else {
                throw CLIError("\(key) does not hold a base64 Themis private key")
            }
            guard privateKey.publicKey == SignedRelease.releaseKey else {
                throw CLIError("\(key) is not the release key this hush trusts (\(SignedRelease.releaseKey.fingerprint)); a signature by it would verify nowhere")
            }
            let data = try BoundedFile.read(manifest, maxBytes: WebManifest.maxBytes)
            let parsed = try WebManifest.parse(data)
            try KeyStoreFile.atomicWrite(try SecureMessage.sign(data, with: privateKey), to: out)
            chmod(out, 0o644)
            printOut("signed release \(parsed.release) (\(parsed.files.count) files) with \(privateKey.publicKey.fingerprint): \(out)")
        }
    }
}

/// `hush web verify URL`: what a server serves, file by file, against a signed release.
struct WebVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every file a Hush page serves against the signed release.",
        discussion: "Prints ok, CHANGED or UNLISTED per file and exits 1 on any difference. The release is the one built into hush, or --manifest with --signature; its signature must verify with the release key built into hush.")

    @Argument(help: "The page, e.g. https://chat.example.org/")
    var url: String

    @Option(help: "A manifest to check against instead of the built-in release (needs --signature).")
    var manifest: String?

    @Option(help: "The signed manifest (web/manifest.sig) for --manifest.")
    var signature: String?

    func validate() throws {
        guard (manifest == nil) == (signature == nil) else { throw ValidationError("--manifest and --signature go together") }
    }

    func run() async throws {
        var differences = 0
        try await reportingErrors {
            let release = try loadRelease()
            guard let page = URL(string: url), let scheme = page.scheme?.lowercased(), ["http", "https"].contains(scheme),
                  let host = page.host, !host.isEmpty, page.user == nil else {
                throw CLIError("\(url) is not an http(s) URL")
            }
            let origin = URL(string: "\(scheme)://\(host.contains(":") ? "[\(host)]" : host)\(page.port.map { ":\($0)" } ?? "")")!
            let report = try await WebCodeCheck(release: release, origin: origin).run(page: page)
            for line in report.lines { printOut(line) }
            printOut("release \(release.manifest.release) signed by \(SignedRelease.releaseKey.fingerprint): \(report.ok) ok, \(report.changed) changed, \(report.unlisted) unlisted")
            differences = report.changed + report.unlisted
        }
        if differences > 0 { throw ExitCode.failure }
    }

    func loadRelease() throws -> SignedRelease {
        guard let manifest, let signature else { return try SignedRelease.builtIn() }
        // A signed manifest is the manifest and a signature of a few hundred bytes.
        let signed = try BoundedFile.read(signature, maxBytes: WebManifest.maxBytes + 4096)
        let bytes = try BoundedFile.read(manifest, maxBytes: WebManifest.maxBytes)
        let release = try SignedRelease.open(signed: signed)
        guard release.manifestBytes == bytes else { throw CLIError("\(signature) signs another manifest than \(manifest)") }
        return release
    }
}

/// `hush web export DIR --relay ORIGIN`: the signed release as plain files, so that a community
/// can serve the code from an origin its members trust more than the relay (docs/CODE_TRUST.md).
struct WebExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the web client, checked against the signed release, to a folder any static web server can serve.",
        discussion: """
            The copy talks to the relay --relay names, which must allow the copy's origin: hush serve --allow-origin ORIGIN. \
            Serve the folder at the root of its origin, over https or on localhost: browsers run the service worker that pins \
            the code only there, so a copy opened as files (file://) does not run.
            """)

    @Argument(help: "A folder that does not exist yet, or is empty.")
    var folder: String

    @Option(help: "The relay's origin, e.g. https://relay.example.org (no path).")
    var relay: String

    @Option(help: "The web client to copy (env HUSH_WEB_ROOT; default: the repository's web/, as hush serve finds it).")
    var webRoot: String?

    func run() async throws {
        try await reportingErrors {
            let relay = try WebOrigin(relay)
            let release = try SignedRelease.builtIn()
            let source = (webRoot ?? ProcessInfo.processInfo.environment["HUSH_WEB_ROOT"]).map { URL(fileURLWithPath: $0) }
                ?? HushServer.defaultWebRoot
            // Every file must be the signed release's: browsers pin what the copy serves.
            var files: [(path: String, bytes: [UInt8])] = []
            for (path, digest) in release.manifest.files.sorted(by: { $0.key < $1.key }) {
                let file = source.path + path
                let bytes = try BoundedFile.read(file, maxBytes: WebCodeCheck.maxFileBytes)
                guard Data(SHA256.hash(data: bytes)).map({ String(format: "%02x", $0) }).joined() == digest else {
                    throw CLIError("\(file) is not the file of signed release \(release.manifest.release); nothing was written")
                }
                files.append((path, bytes))
            }
            files.append(("/manifest.json", release.manifestBytes))
            files.append(("/manifest.sig", release.signedBytes))
            files.append(("/relay.json", Array(RoomPayload.json(["relay": relay.description]))))
            try write(files)
            printOut("exported release \(release.manifest.release) (\(files.count) files) to \(folder) for the relay \(relay)")
            printOut("serve it at the root of an https origin (or localhost), and run the relay with --allow-origin set to that origin")
        }
    }

    /// Writes into a staging folder beside the target and renames it into place, so that a
    /// failure leaves no half copy behind.
    func write(_ files: [(path: String, bytes: [UInt8])]) throws {
        let manager = FileManager.default
        let target = URL(fileURLWithPath: folder).standardizedFileURL
        if let existing = try? manager.contentsOfDirectory(atPath: target.path) {
            guard existing.isEmpty else { throw CLIError("\(folder) is not empty; nothing was written") }
        } else if manager.fileExists(atPath: target.path) {
            throw CLIError("\(folder) exists and is not a folder; nothing was written")
        }
        let staging = target.deletingLastPathComponent()
            .appendingPathComponent(".\(target.lastPathComponent).export-\(UInt32.random(in: .min ... .max))")
        do {
            for (path, bytes) in files {
                let url = staging.appendingPathComponent(String(path.dropFirst()))
                try manager.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(bytes).write(to: url)
            }
            try? manager.removeItem(at: target)  // the empty folder, if there is one
            try manager.moveItem(at: staging, to: target)
        } catch {
            try? manager.removeItem(at: staging)
            throw CLIError("cannot write \(folder): \(error.localizedDescription)")
        }
    }
}

/// Fetches the page, every file of the release and everything they reference on the way.
struct WebCodeCheck {
    let release: SignedRelease
    let origin: URL
    /// A file bigger than the largest the app has ever had is not it.
    static let maxFileBytes = 4 << 20
    /// References read at most: a hostile page cannot make the check run forever.
    static let maxReferences = 4096

    struct Report {
        var lines: [String] = []
        var ok = 0
        var changed = 0
        var unlisted = 0
    }

    func run(page: URL) async throws -> Report {
        var report = Report()
        let expected = release.manifest.files
        // The manifest and its signature are served too; they must be the release's own bytes.
        let exactBytes = ["/manifest.json": release.manifestBytes, "/manifest.sig": release.signedBytes]
        var checked = Set<String>()
        var references: [(target: String, from: String)] = []

        func collectReferences(in body: [UInt8], base: URL, isPage: Bool, from: String) {
            for target in CodeReferences.find(in: String(decoding: body, as: UTF8.self), base: base, isPage: isPage)
            where references.count < Self.maxReferences {
                references.append((target, from))
            }
        }

        func check(_ label: String, at url: URL) async throws {
            let fetched = try await BoundedFetch.get(url, limit: Self.maxFileBytes)
            guard fetched.status == 200, let body = fetched.body else {
                report.changed += 1
                report.lines.append("CHANGED  \(label) (HTTP \(fetched.status)\(fetched.body == nil ? ", over \(Self.maxFileBytes) bytes" : ""))")
                return
            }
            let path = label == page.absoluteString ? "/index.html" : label
            let matches = exactBytes[path].map { $0 == body }
                ?? (expected[path] == Data(SHA256.hash(data: body)).map { String(format: "%02x", $0) }.joined())
            if matches {
                report.ok += 1
                report.lines.append("ok       \(label)")
            } else {
                report.changed += 1
                report.lines.append("CHANGED  \(label)")
            }
            if path.hasSuffix(".html") || path.hasSuffix(".mjs") || path.hasSuffix(".js") {
                let base = label == page.absoluteString ? page : origin.appendingPathComponent(String(path.dropFirst()))
                collectReferences(in: body, base: base, isPage: path.hasSuffix(".html"), from: label)
            }
        }

        for path in (Array(release.manifest.files.keys) + exactBytes.keys).sorted() {
            checked.insert(path)
            try await check(path, at: origin.appendingPathComponent(String(path.dropFirst())))
        }
        // The page at the URL itself must be the release's index.html.
        try await check(page.absoluteString, at: page)
        // Whatever the served code loads that the release does not list, and what that loads
        // in turn on this origin.
        var reported = Set<String>()
        var next = 0
        while next < references.count {
            let (target, from) = references[next]
            next += 1
            let sameOrigin = target.hasPrefix(origin.absoluteString + "/")
            let path = sameOrigin ? String(target.dropFirst(origin.absoluteString.count)) : target
            guard !checked.contains(path), reported.insert(path).inserted else { continue }
            report.unlisted += 1
            report.lines.append("UNLISTED \(path) (loaded by \(from))")
            guard sameOrigin, path.hasSuffix(".mjs") || path.hasSuffix(".js") || path.hasSuffix(".html"), let url = URL(string: target),
                  let body = try await BoundedFetch.get(url, limit: Self.maxFileBytes).body else { continue }
            collectReferences(in: body, base: url, isPage: path.hasSuffix(".html"), from: path)
        }
        return report
    }
}

/// The URLs a page or a module loads: in a page, `src`/`href` attributes and import map keys; in
/// a module, `import`/`export … from` specifiers. A reading for the report, not a parser: a
/// hostile file that hides a load from it has already changed, and is reported CHANGED.
enum CodeReferences {
    static func find(in text: String, base: URL, isPage: Bool) -> [String] {
        // Made per call: a Regex is not Sendable, so it cannot be a shared constant.
        let regexes = isPage
            ? [/\b(?:src|href)\s*=\s*["']([^"']+)["']/, /"([^"\s]+\.m?js)"\s*:\s*"sha/]
            : [/\bfrom\s*["']([^"']+)["']/, /\bimport\s*\(?\s*["']([^"']+)["']/]
        var found: [String] = []
        for regex in regexes {
            for match in text.matches(of: regex) {
                guard let url = URL(string: String(match.output.1), relativeTo: base)?.absoluteURL else { continue }
                // The fragment never reaches the server; a query does, and makes another URL.
                var components = URLComponents(url: url, resolvingAgainstBaseURL: true)
                components?.fragment = nil
                if let resolved = components?.url?.absoluteString { found.append(resolved) }
            }
        }
        return found
    }
}

/// One GET that keeps at most `limit` bytes of body and follows no redirect (a 3xx is reported
/// as it is: the release's files are served, not pointed to).
final class BoundedFetch: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    struct Result {
        let status: Int
        /// nil when the body went over the limit.
        let body: [UInt8]?
    }

    private let limit: Int
    private let lock = NSLock()
    private var received = Data()
    private var overLimit = false
    private var status = 0
    private var continuation: CheckedContinuation<Result, any Error>?

    private init(limit: Int) { self.limit = limit }

    static func get(_ url: URL, limit: Int) async throws -> Result {
        let fetch = BoundedFetch(limit: limit)
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = 30
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let session = URLSession(configuration: configuration, delegate: fetch, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        return try await withCheckedThrowingContinuation { continuation in
            fetch.lock.withLock { fetch.continuation = continuation }
            session.dataTask(with: url).resume()
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        lock.withLock { status = (response as? HTTPURLResponse)?.statusCode ?? 0 }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        let over = lock.withLock {
            if received.count + data.count > limit { overLimit = true } else { received.append(data) }
            return overLimit
        }
        if over { dataTask.cancel() }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
        let (continuation, status, body, over) = lock.withLock {
            defer { self.continuation = nil }
            return (self.continuation, self.status, Array(received), overLimit)
        }
        if over {
            continuation?.resume(returning: Result(status: status, body: nil))
        } else if let error {
            continuation?.resume(throwing: error)
        } else {
            continuation?.resume(returning: Result(status: status, body: body))
        }
    }
}
