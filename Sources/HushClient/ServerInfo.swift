import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HushProtocol
import ThemisKit

/// A server as a client knows it: its base URL and its pinned key.
public struct ServerInfo: Sendable {
    public let baseURL: String
    public let wellKnown: WellKnown
    public let publicKey: ThemisPublicKey

    public init(baseURL: String, wellKnown: WellKnown) throws(HushError) {
        guard let bytes = Base64.decode(wellKnown.publicKey), let key = try? ThemisPublicKey(containerBytes: bytes),
              Base64.encodeURL(key.containerBytes) == wellKnown.serverId, wellKnown.protocol == WellKnown.protocolVersion else {
            throw HushError(.badRequest, "the server's /.well-known/hush is not valid")
        }
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.wellKnown = wellKnown
        publicKey = key
    }

    /// Fetches `/.well-known/hush`; with `expectedFingerprint` (from an invite) the key is pinned.
    public static func fetch(_ baseURL: String, expectedFingerprint: String? = nil) async throws -> ServerInfo {
        let base = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        guard let url = URL(string: base + "/.well-known/hush") else { throw HushError(.badRequest, "bad server URL") }
        let data: Data = try await withCheckedThrowingContinuation { continuation in
            URLSession.shared.dataTask(with: url) { data, _, error in
                if let data { continuation.resume(returning: data) } else { continuation.resume(throwing: error ?? URLError(.badServerResponse)) }
            }.resume()
        }
        let info = try ServerInfo(baseURL: base, wellKnown: try JSONDecoder().decode(WellKnown.self, from: data))
        if let expectedFingerprint, info.publicKey.fingerprint != expectedFingerprint {
            throw ClientError.serverKeyMismatch
        }
        return info
    }

    public var fingerprint: String { publicKey.fingerprint }

    var webSocketURL: String {
        let scheme = baseURL.hasPrefix("https://") ? "wss://" : "ws://"
        let rest = baseURL.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "http://", with: "")
        return scheme + rest + wellKnown.ws
    }
}

/// Client-side failures that are not server error replies.
public enum ClientError: Error, Sendable, Equatable {
    /// The server's key does not have the fingerprint the invite names.
    case serverKeyMismatch
    case connectionClosed
    case handshakeFailed
    case timedOut
    case unexpectedReply(String)
    case rejected(String)

    /// The owner ended a join (`join_revoked`). The joiner cannot tell a revoked invite from a
    /// request the owner could not read, so the message names both.
    public static let joinEnded = ClientError.rejected("the owner ended this join: they revoked the invite, or their client could not read your request, which happens when the link was altered on the way (its owner key is not the room owner's); ask the owner for a new link, through a channel you trust")
}
