import Foundation
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
        if fileManager.fileExists(atPath: file.path) {
            return ServerIdentity(privateKey: try ThemisPrivateKey(containerBytes: Array(try Data(contentsOf: file))))
        }
        let key = ThemisPrivateKey()
        let temporary = directory.appendingPathComponent("server.key.tmp")
        try? fileManager.removeItem(at: temporary)
        guard fileManager.createFile(atPath: temporary.path, contents: Data(key.containerBytes),
                                     attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown)
        }
        try fileManager.moveItem(at: temporary, to: file)
        return ServerIdentity(privateKey: key)
    }

    public var wellKnown: WellKnown {
        WellKnown(serverId: serverID, publicKey: Base64.encode(publicKey.containerBytes), fingerprint: fingerprint)
    }
}
