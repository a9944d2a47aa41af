import Foundation

/// What a room's new members may read (docs/PROTOCOL.md §6.6 `history`): the messages since
/// the last key rotation before they joined (the default), or only what comes after they join
/// (the owner's client rotates before it first answers each joiner).
public enum HistoryForNewMembers: String, Codable, Sendable {
    case rotation, joined
}

/// The out-of-band invite: `<page URL>/#<b64url(JSON)>` (docs/PROTOCOL.md §6.6). The page is
/// the relay itself unless the invite names its `relay` (a page that only hosts the code).
public struct InviteLink: Codable, Sendable, Equatable {
    public var v = 1
    public var room: String
    public var token: Base64Bytes
    /// The owner's room key, b64 container.
    public var owner: String
    /// Fingerprint of the server key the joiner must find.
    public var server: String
    /// The room's name as the owner calls it, proposed to the joiner as its local name; and the
    /// owner's display name (§6.7). Both optional, both canonical names, both chosen by the
    /// owner: shown beside the owner's fingerprint, never instead of it.
    public var roomName: String?
    public var ownerName: String?
    /// Absent (the default, `rotation`) unless `joined`; a word it does not know fails decoding.
    public var history: HistoryForNewMembers?
    /// The relay's origin (a `WebOrigin`) when the page that made the link is not the relay,
    /// such as a copy written by `hush web export`; absent otherwise.
    public var relay: String?

    public init(room: String, token: [UInt8], owner: String, server: String, roomName: String? = nil, ownerName: String? = nil,
                history: HistoryForNewMembers = .rotation, relay: WebOrigin? = nil) {
        self.room = room
        self.token = Base64Bytes(token)
        self.owner = owner
        self.server = server
        self.roomName = roomName
        self.ownerName = ownerName
        self.history = history == .joined ? history : nil
        self.relay = relay?.description
    }

    /// The relay to talk to: the one the invite names, else the page that showed the link.
    public func relayURL(pageURL: String) -> String { relay ?? pageURL }

    public var historyForNewMembers: HistoryForNewMembers { history ?? .rotation }

    /// The invite id registered on the server: SHA-256 of the token.
    public var inviteID: [UInt8] { InviteLink.inviteID(token: token.bytes) }

    public static func inviteID(token: [UInt8]) -> [UInt8] { Array(SHA256Digest.of(token)) }

    public func link(serverURL: String) -> String {
        let base = serverURL.hasSuffix("/") ? String(serverURL.dropLast()) : serverURL
        return base + "/#" + Base64.encodeURL(RoomPayload.json(self))
    }

    /// Real links are a few hundred characters; anything longer is refused before decoding.
    public static let maxLinkLength = 4096
    /// The fragment (after `#`), as the web client bounds it.
    public static let maxFragmentLength = 2048

    /// Parses a link strictly (§6.6, the same rule as the web client's `parseInviteFragment`,
    /// pinned by Tests/Fixtures/invite-links.json); returns the page's URL and the invite.
    public static func parse(_ link: String) throws(HushError) -> (serverURL: String, invite: InviteLink) {
        guard link.utf8.count <= maxLinkLength else { throw HushError(.tooLarge, "an invite link is at most \(maxLinkLength) characters") }
        let invalid = HushError(.badRequest, "not a Hush invite link")
        guard let hash = link.firstIndex(of: "#") else { throw invalid }
        let fragment = String(link[link.index(after: hash)...])
        guard (1...maxFragmentLength).contains(fragment.utf8.count), let bytes = Base64.decodeURL(fragment),
              let invite = try? JSONDecoder().decode(InviteLink.self, from: Data(bytes)), invite.v == 1,
              invite.token.bytes.count == 32, isRoomID(invite.room), isFingerprint(invite.server),
              (try? KeyID.key(fromJSON: invite.owner)) != nil,
              [invite.roomName, invite.ownerName].allSatisfy({ $0.map(RoomState.isCanonicalName) ?? true }),
              invite.relay.map({ (try? WebOrigin($0)) != nil }) ?? true
        else { throw invalid }
        var server = String(link[..<hash])
        if server.hasSuffix("/") { server.removeLast() }
        return (server, invite)
    }

    /// 16 random bytes in unpadded base64url, as the server makes room ids.
    public static func isRoomID(_ text: String) -> Bool {
        text.utf8.count == 22 && text.utf8.allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
    }

    /// `ThemisPublicKey.fingerprint`'s shape: five groups of four lowercase hex digits.
    static func isFingerprint(_ text: String) -> Bool {
        let groups = text.split(separator: " ", omittingEmptySubsequences: false)
        return groups.count == 5 && groups.allSatisfy { group in
            group.utf8.count == 4 && group.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        }
    }
}
