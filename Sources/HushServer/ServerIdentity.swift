import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HushProtocol
import ThemisKit

/// The server's long-term Themis key pair, made on the first start and reused after.
public struct ServerIdentity: Sendable {
    public let privateKey: ThemisPrivateKey
    public var publicKey: ThemisPublicKey { privateKey.publicKey }
    /// `serverId`: b64url of the public key container; its ASCII is the Secure Session id.
    public var serverID: String { Base64.encodeURL(publicKey.containerBytes) }
    public var fingerprint: String { publicKey.fingerprint }

    public init(privateKey: ThemisPrivateKey) { self.privateKey = privateKey }

    /// Loads `server.key` from `directory`, creating it (mode 0600) on the first start.
    public static func loadOrCreate(in directory: URL) throws -> ServerIdentity {
        let fileManager = FileManager.default
        try fileManager.createDirectory(at: directory, withIntermediateDirectories: true,
                                        attributes: [.posixPermissions: 0o700])
        let file = directory.appendingPathComponent("server.key")
        if fileManager.fileExists(atPath: file.path) { return try load(from: file) }
        let key = ThemisPrivateKey()
        let temporary = directory.appendingPathComponent("server.key.tmp")
        try? fileManager.removeItem(at: temporary)
        guard fileManager.createFile(atPath: temporary.path, contents: Data(key.containerBytes),
                                     attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown)
        }
        // On disk before anything signed with it leaves: the file, then its name in the folder.
        try Self.syncToDisk(path: temporary.path, directory: false)
        try fileManager.moveItem(at: temporary, to: file)
        try Self.syncToDisk(path: directory.path, directory: true)
        return ServerIdentity(privateKey: key)
    }

    /// The key `configuration` names (`serverKeyFile`), or the data folder's own; the data
    /// folder (0700) exists afterwards either way.
    static func forServer(_ configuration: ServerConfiguration) throws -> ServerIdentity {
        guard let file = configuration.serverKeyFile else { return try loadOrCreate(in: configuration.dataDirectory) }
        try FileManager.default.createDirectory(at: configuration.dataDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        return try load(from: file)
    }

    /// Reads a server key file (`server.key` of a data folder, or the one all nodes of a
    /// deployment share): the raw Themis private key container, or its base64 on one line
    /// (what `hush keygen --out` writes to PREFIX.priv).
    public static func load(from file: URL) throws -> ServerIdentity {
        // A key container is 45 bytes; anything much larger is not ours to parse.
        let bytes: [UInt8]
        do {
            bytes = try BoundedFile.read(file.path, maxBytes: 4096)
        } catch {
            throw IdentityError("\(error): not a server key; refusing to start")
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let line = text.hasSuffix("\n") ? String(text.dropLast()) : text
        if let container = Base64.decode(line), let key = try? ThemisPrivateKey(containerBytes: container) {
            return ServerIdentity(privateKey: key)
        }
        do {
            return ServerIdentity(privateKey: try ThemisPrivateKey(containerBytes: bytes))
        } catch {
            throw IdentityError("\(file.path) is not a valid Themis private key (\(error)); refusing to start")
        }
    }

    static func syncToDisk(path: String, directory: Bool) throws {
        let descriptor = open(path, (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC)
        guard descriptor >= 0 else { throw IdentityError("cannot open \(path) to sync it") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw IdentityError("cannot sync \(path) to disk") }
    }

    public var wellKnown: WellKnown {
        WellKnown(serverId: serverID, publicKey: Base64.encode(publicKey.containerBytes), fingerprint: fingerprint)
    }
}

/// The server key cannot be read or written safely.
struct IdentityError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
