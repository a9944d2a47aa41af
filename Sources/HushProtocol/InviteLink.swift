import Foundation

/// The out-of-band invite: `<server URL>/#<b64url(JSON)>` (docs/PROTOCOL.md §6.6).
public struct InviteLink: Codable, Sendable, Equatable {
    public var v = 1
    public var room: String
    public var token: Base64Bytes
    /// The owner's room key, b64 container.
    public var owner: String
    /// Fingerprint of the server key the joiner must find.
    public var server: String

    public init(room: String, token: [UInt8], owner: String, server: String) {
        self.room = room
        self.token = Base64Bytes(token)
        self.owner = owner
        self.server = server
    }

    /// The invite id registered on the server: SHA-256 of the token.
    public var inviteID: [UInt8] { InviteLink.inviteID(token: token.bytes) }

    public static func inviteID(token: [UInt8]) -> [UInt8] { Array(SHA256Digest.of(token)) }

    public func link(serverURL: String) -> String {
        let base = serverURL.hasSuffix("/") ? String(serverURL.dropLast()) : serverURL
        return base + "/#" + Base64.encodeURL(RoomPayload.json(self))
    }

    /// Real links are a few hundred characters; anything longer is refused before decoding.
    public static let maxLinkLength = 4096

    /// Parses a link; returns the server URL and the invite.
    public static func parse(_ link: String) throws(HushError) -> (serverURL: String, invite: InviteLink) {
        guard link.utf8.count <= maxLinkLength else { throw HushError(.tooLarge, "an invite link is at most \(maxLinkLength) characters") }
        guard let hash = link.firstIndex(of: "#"), let bytes = Base64.decodeURL(String(link[link.index(after: hash)...])),
              let invite = try? JSONDecoder().decode(InviteLink.self, from: Data(bytes)), invite.v == 1,
              invite.token.bytes.count == 32
        else { throw HushError(.badRequest, "not a Hush invite link") }
        var server = String(link[..<hash])
        if server.hasSuffix("/") { server.removeLast() }
        return (server, invite)
    }
}
