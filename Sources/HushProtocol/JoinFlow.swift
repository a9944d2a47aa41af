import Crypto
import ThemisKit

/// The joiner's side of a join (docs/PROTOCOL.md §4.3, §6.2): pure steps, no I/O.
public struct JoinerFlow: Sendable {
    public let invite: InviteLink
    public let me: ThemisPrivateKey
    public let owner: ThemisPublicKey
    private let joiningKey: SymmetricKey

    /// `J` of §6.2 is 32 random bytes.
    public static let joiningKeyBytes = 32

    /// `joiningKey` is `J` of §6.2: fresh by default; pass the saved one to resume a join.
    public init(invite: InviteLink, me: ThemisPrivateKey = ThemisPrivateKey(),
                joiningKey: SymmetricKey = SymmetricKey(size: SymmetricKeySize(bitCount: joiningKeyBytes * 8))) throws(HushError) {
        guard joiningKey.byteCount == Self.joiningKeyBytes else { throw HushError(.badRequest, "the joining key is 32 bytes") }
        self.invite = invite
        self.me = me
        self.joiningKey = joiningKey
        owner = try KeyID.key(fromJSON: invite.owner)
    }

    /// `J`, for saving a join that is still waiting for the owner (keep it secret).
    public var joiningKeySecret: SymmetricKey { joiningKey }

    /// The `joiningKey` field of the `join` request.
    public func joiningKeyBlob() throws(ThemisError) -> [UInt8] {
        try SecureMessage.encrypt(joiningKey.bytes, from: me, to: owner)
    }

    /// Opens the owner's `join_response`; returns the room state and the `join_confirm` blob.
    public func accept(sealed: [UInt8]) throws -> (state: RoomState, confirmation: [UInt8]) {
        let grant = try RoomPayload.openJoinGrant(sealed, joiningKey: joiningKey, token: invite.token.bytes, room: invite.room)
        let state = RoomState(room: invite.room, owner: owner, me: me, epoch: grant.epoch, roomKey: grant.key.symmetricKey)
        let confirmation = try RoomPayload.sealConfirmation(
            room: invite.room, joiner: KeyID.json(me.publicKey), roomKey: grant.key.symmetricKey, token: invite.token.bytes)
        return (state, confirmation)
    }
}

/// The owner's side of joins: remembers the tokens it handed out.
public struct OwnerJoins: Sendable {
    /// `respond` found a joining key this owner's key does not open: the link the joiner used
    /// named another owner key (altered on the way), so the join can never complete (§4.3).
    public struct UnreadableRequest: Error {}

    public let room: String
    private var tokens: [[UInt8]: [UInt8]] = [:]

    public init(room: String) { self.room = room }

    /// Makes a fresh invite; register `invite.inviteID` on the server and hand out the link.
    public mutating func makeInvite(owner: ThemisPublicKey, serverFingerprint: String, roomName: String? = nil,
                                    ownerName: String? = nil, history: HistoryForNewMembers = .rotation,
                                    relay: WebOrigin? = nil) -> InviteLink {
        let invite = InviteLink(room: room, token: RoomPayload.randomBytes(32), owner: KeyID.json(owner), server: serverFingerprint,
                                roomName: roomName.flatMap(RoomState.canonicalName), ownerName: ownerName.flatMap(RoomState.canonicalName),
                                history: history, relay: relay)
        tokens[invite.inviteID] = invite.token.bytes
        return invite
    }

    public mutating func remember(token: [UInt8]) { tokens[InviteLink.inviteID(token: token)] = token }

    /// Answers a `join_request`: the `sealed` field of `join_response`.
    public func respond(inviteID: [UInt8], joiner: String, joiningKeyBlob: [UInt8], state: RoomState) throws -> [UInt8] {
        guard let token = tokens[inviteID] else { throw HushError(.unknownInvite, "no token for this invite") }
        let joinerKey = try KeyID.key(fromJSON: joiner)
        guard let joiningKey = try? SecureMessage.decrypt(joiningKeyBlob, by: state.me, from: joinerKey) else {
            throw UnreadableRequest()
        }
        return try RoomPayload.sealJoinGrant(room: room, epoch: state.epoch, roomKey: state.currentKey,
                                             joiningKey: SymmetricKey(data: joiningKey), token: token)
    }

    /// Checks a `join_confirm`; on success returns the membership signature for `add_member`.
    public mutating func admit(inviteID: [UInt8], joiner: String, sealed: [UInt8], state: RoomState) throws -> [UInt8] {
        guard let token = tokens[inviteID] else { throw HushError(.unknownInvite, "no token for this invite") }
        guard RoomPayload.checkConfirmation(sealed, room: room, joiner: joiner, roomKey: state.currentKey, token: token)
        else { throw HushError(.badSignature, "confirmation does not open") }
        tokens[inviteID] = nil
        return try SecureMessage.sign(Statement.membership(room: room, key: joiner), with: state.me)
    }
}
