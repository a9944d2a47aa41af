import Foundation

/// `web/manifest.json`: one release of the web client, the SHA-256 of every file the browser
/// loads (docs/CODE_TRUST.md). Written by scripts/web-manifest, signed with the release key.
public struct WebManifest: Sendable, Equatable, Decodable {
    public static let appName = "hush-web"
    public static let maxBytes = 256 * 1024
    public static let maxFiles = 1024

    public var app: String
    public var release: Int
    /// CSP source expressions (`sha256-…`) of the page's inline scripts: its import map.
    public var scriptHashes: [String]
    /// Path (`/app/main.mjs`) → SHA-256, lowercase hex.
    public var files: [String: String]

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses and checks every field: what goes into a header or a path must be well-formed.
    public static func parse(_ bytes: [UInt8]) throws(Invalid) -> WebManifest {
        guard bytes.count <= maxBytes else { throw Invalid(description: "the manifest is over \(maxBytes) bytes") }
        guard let manifest = try? JSONDecoder().decode(WebManifest.self, from: Data(bytes)) else {
            throw Invalid(description: "the manifest is not valid JSON of the expected shape")
        }
        guard manifest.app == appName, (1...Int(Int32.max)).contains(manifest.release) else {
            throw Invalid(description: "the manifest is not a \(appName) release")
        }
        guard manifest.scriptHashes.count <= 16, manifest.scriptHashes.allSatisfy(isScriptHash) else {
            throw Invalid(description: "the manifest's script hashes are not sha256-<base64>")
        }
        guard (1...maxFiles).contains(manifest.files.count), manifest.files["/index.html"] != nil,
              manifest.files.allSatisfy({ isWebPath($0.key) && isDigest($0.value) }) else {
            throw Invalid(description: "the manifest's files are not paths with SHA-256 hex digests")
        }
        return manifest
    }

    /// `/a/b.ext`: ASCII letters, digits, `-_.`, no empty or dot-leading component, at most 256 bytes.
    public static func isWebPath(_ path: String) -> Bool {
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return path.utf8.count <= 256 && path.hasPrefix("/") && parts.count >= 2 && parts.dropFirst().allSatisfy { part in
            !part.isEmpty && part.first != UInt8(ascii: ".")
                && part.allSatisfy { isASCIIAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
        }
    }

    static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    static func isScriptHash(_ text: String) -> Bool {
        guard text.hasPrefix("sha256-"), let bytes = Base64.decode(String(text.dropFirst(7))) else { return false }
        return bytes.count == 32
    }

    private static func isASCIIAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
