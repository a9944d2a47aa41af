import HushProtocol
import ThemisKit

/// The room core (docs/PROTOCOL.md §4): who may do what, and what each accepted request turns
/// the stored records into, as pure functions over records. A store reads the records a
/// request needs, calls one of these inside its transaction and writes back exactly what it
/// returns; a refusal throws before anything is written, so it changes nothing. Both stores
/// (SQLite, PostgreSQL) share these rules and only persist; who hears of each accepted
/// request is `RoomPushes`.
public enum RoomRules {
    public static func requireRoom(_ room: RoomRecord?) throws(HushError) -> RoomRecord {
        guard let room else { throw HushError(.notFound, "no such room") }
        return room
    }

    /// The one rule for room requests: a key that is not in the room is `not_member`, whatever
    /// it asks (so a stranger learns nothing about who owns the room); a member asking for
    /// what only the owner may do is `not_owner`.
    @discardableResult
    public static func authorize(_ member: MemberRecord?, as role: Role) throws(HushError) -> MemberRecord {
        guard let member else { throw HushError(.notMember, "this key is not in the room") }
        guard role == .member || member.role == .owner else { throw HushError(.notOwner, "only the room owner may do this") }
        return member
    }

    public static func checkRotateEvery(_ value: Int?, limits: Limits) throws(HushError) -> Int {
        let value = value ?? limits.defaultRotateEvery
        guard (1...limits.maxRotateEvery).contains(value) else { throw HushError(.badRequest, "rotateEvery out of range") }
        return value
    }

    public static func checkNewInvite(expiresAt: Int64, now: Int64, openInvites: Int, limits: Limits) throws(HushError) {
        guard expiresAt > now, expiresAt <= now + limits.maxInviteLifetime else {
            throw HushError(.badRequest, "expiresAt must be in the future and within 30 days")
        }
        guard openInvites < limits.maxOpenInvitesPerRoom else { throw HushError(.limitReached, "too many open invites") }
    }

    /// `join`: the invite it names (registered, unexpired, unused) becomes this key's request.
    /// An invite whose join ended in an admission is `invite_used` until it would have expired.
    public static func join(invite: InviteRecord?, inviteWasUsed: Bool, joiner: String, joiningKey: [UInt8], isMember: Bool,
                            roomsOfJoiner: Int, pendingJoins: Int, now: Int64, limits: Limits) throws(HushError) -> InviteRecord {
        guard !isMember else { throw HushError(.alreadyMember, "this key is already in the room") }
        guard !inviteWasUsed else { throw HushError(.inviteUsed, "the invite was already used: someone joined with it") }
        guard var invite else { throw HushError(.unknownInvite, "no such invite in this room") }
        guard invite.expiresAt > now else { throw HushError(.inviteExpired, "the invite has expired") }
        guard invite.state == .open else { throw HushError(.inviteUsed, "the invite was already used") }
        guard pendingJoins < limits.maxPendingJoinsPerRoom else { throw HushError(.limitReached, "too many pending joins") }
        guard roomsOfJoiner < limits.maxRoomsPerKey else { throw HushError(.limitReached, "this key is in too many rooms") }
        invite.state = .requested
        invite.joiner = joiner
        invite.joiningKey = joiningKey
        return invite
    }

    /// A join ends with its invite: past `expiresAt` no step of it goes on (§4.3).
    public static func checkUnexpired(_ invite: InviteRecord, now: Int64) throws(HushError) {
        guard invite.expiresAt > now else { throw HushError(.inviteExpired, "the invite, and the join through it, have expired") }
    }

    /// `join_response` (owner): the request gets the sealed grant under the current epoch; a
    /// repeat replaces it (and any confirmation of the old one).
    public static func respond(room: RoomRecord, invite: InviteRecord?, sealed: [UInt8], now: Int64) throws(HushError) -> InviteRecord {
        guard var invite, [.requested, .responded, .confirmed].contains(invite.state) else {
            throw HushError(.noPendingJoin, "no join request is pending for this invite")
        }
        try checkUnexpired(invite, now: now)
        invite.state = .responded
        invite.response = sealed
        invite.confirmation = nil
        invite.responseEpoch = room.epoch
        return invite
    }

    /// `join_confirm` (the joiner): the response it was given is confirmed.
    public static func confirm(invite: InviteRecord?, key: String, sealed: [UInt8], now: Int64) throws(HushError) -> InviteRecord {
        guard var invite, invite.state == .responded, invite.joiner == key else {
            throw HushError(.noPendingJoin, "no join response is waiting for this key")
        }
        try checkUnexpired(invite, now: now)
        invite.state = .confirmed
        invite.confirmation = sealed
        return invite
    }

    /// `add_member` (owner): a confirmed join under the current epoch, with the owner's
    /// membership signature, becomes a member who reads from the last rotation on (its floor).
    public static func admit(room: RoomRecord, invite: InviteRecord?, key: String, signature: [UInt8],
                             memberCount: Int, now: Int64, limits: Limits) throws(HushError) -> MemberRecord {
        guard let invite, invite.state == .confirmed, invite.joiner == key else {
            throw HushError(.noPendingJoin, "no confirmed join for this key")
        }
        try checkUnexpired(invite, now: now)
        guard invite.responseEpoch == room.epoch else {
            throw HushError(.epochChanged, "the room key rotated since the join response")
        }
        try checkOwnerSignature(signature, statement: Statement.membership(room: room.id, key: key), room: room)
        guard memberCount < limits.maxMembersPerRoom else { throw HushError(.limitReached, "the room is full") }
        return MemberRecord(room: room.id, key: key, role: .member, signature: signature,
                            floor: room.lastRotationSeq, delivered: room.lastRotationSeq)
    }

    public static func checkOwnerSignature(_ signature: [UInt8], statement: [UInt8], room: RoomRecord) throws(HushError) {
        let owner = try KeyID.key(fromJSON: room.owner)
        guard Statement.verify(signature, signs: statement, by: owner) else {
            throw HushError(.badSignature, "the signature does not verify against the owner key for this room and key")
        }
    }

    /// A leave carries the leaving key's own signature of `hush-leave:<room>:<key>` (§6.5).
    public static func checkLeaveSignature(_ signature: [UInt8], room: String, key: String) throws(HushError) {
        let member = try KeyID.key(fromJSON: key)
        guard Statement.verify(signature, signs: Statement.leave(room: room, key: key), by: member) else {
            throw HushError(.badSignature, "the leave signature does not verify against this key for this room")
        }
    }

    /// A chat message (§4.4): sealed under the room's current epoch, and never while a departed
    /// key still holds that epoch's key (the owner's wrapped rotation comes first). Returns the
    /// room after it and the message at the next sequence number.
    public static func send(room: RoomRecord, from key: String, epoch: Int, payload: [UInt8], messageID: [UInt8],
                            now: Int64, databaseBytes: Int, limits: Limits) throws(HushError) -> (RoomRecord, MessageRecord) {
        guard !room.wrapRequired else {
            throw HushError(.rotationPending, "a member left: wait for the owner's key rotation, then send", epoch: room.epoch)
        }
        guard epoch == room.epoch else {
            throw HushError(.staleEpoch, "the room key rotated: seal under the current epoch and send again", epoch: room.epoch)
        }
        let cost = StorageRules.messageCost(payload: payload)
        try StorageRules.checkMessage(cost: cost, room: room, databaseBytes: databaseBytes, limits: limits)
        var room = room
        room.lastSeq += 1
        room.sinceRotation += 1
        room.storedBytes += cost
        let message = MessageRecord(room: room.id, seq: room.lastSeq, kind: "message", sender: key,
                                    epoch: room.epoch, at: now, payload: payload, messageID: messageID)
        return (room, message)
    }

    /// The owner owes a rotation once `rotateEvery` messages were sent under the epoch; it is
    /// told when the message that makes it due is sent, and at every `hello` while it is due.
    public static func isRotationDue(_ room: RoomRecord) -> Bool { room.sinceRotation >= room.rotateEvery }

    /// This room state is the one the last message made due (the one time it is pushed).
    public static func becameRotationDue(_ room: RoomRecord) -> Bool { room.sinceRotation == room.rotateEvery }

    /// A rotation (owner): the next epoch; once anyone has left, wraps for exactly the room's
    /// keys, every current member and the owner itself (so the owner's other clients can
    /// follow it). Returns the room after it and the rotation at the next sequence number.
    public static func rotate(room: RoomRecord, by key: String, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?,
                              roomKeys: Set<String>, now: Int64, databaseBytes: Int,
                              limits: Limits) throws(HushError) -> (RoomRecord, MessageRecord) {
        guard epoch == room.epoch + 1 else { throw HushError(.epochMismatch, "epoch must be the current epoch + 1") }
        if let wraps {
            guard payload == nil, Set(wraps.map(\.key)) == roomKeys, wraps.count == roomKeys.count else {
                throw HushError(.wrapsRequired, "a wrapped rotation needs exactly one wrap per current member and one for the owner, and no payload")
            }
        } else {
            guard !room.wrapRequired else { throw HushError(.wrapsRequired, "a member left: the rotation must be wrapped per member") }
            guard payload != nil else { throw HushError(.badRequest, "a rotation needs a payload or wraps") }
        }
        let cost = StorageRules.rotationCost(payload: payload, wraps: wraps)
        try StorageRules.checkRotation(cost: cost, room: room, databaseBytes: databaseBytes, limits: limits)
        var room = room
        room.storedBytes += cost
        room.lastSeq += 1
        room.epoch = epoch
        room.lastRotationSeq = room.lastSeq
        room.sinceRotation = 0
        room.wrapRequired = false
        let rotation = MessageRecord(room: room.id, seq: room.lastSeq, kind: "rotation", sender: key,
                                     epoch: epoch, at: now, payload: payload, messageID: nil)
        return (room, rotation)
    }

    /// `remove_member` (owner) or `leave` (the key itself, with its own signature): the member
    /// becomes a departed record readable up to the room's last sequence number, the key is
    /// retired, and the room owes a wrapped rotation before anyone sends again.
    public static func depart(room: RoomRecord, member: MemberRecord?, departure: Departure,
                              signature: [UInt8]) throws(HushError) -> (RoomRecord, DepartedRecord) {
        guard let member else { throw HushError(.notMember, "that key is not a member of the room") }
        switch departure {
        case .removed:
            guard member.role != .owner else { throw HushError(.notMember, "that key is not a member of the room") }
            try checkOwnerSignature(signature, statement: Statement.removal(room: room.id, key: member.key), room: room)
        case .left:
            guard member.role != .owner else { throw HushError(.badRequest, "the owner deletes the room instead of leaving") }
            try checkLeaveSignature(signature, room: room.id, key: member.key)
        }
        var room = room
        room.wrapRequired = true
        return (room, DepartedRecord(room: room.id, key: member.key, signature: member.signature, until: room.lastSeq,
                                     departure: departure, departureSignature: signature))
    }

    public static func historyPage(after: Int?, limit: Int?, floor: Int, limits: Limits) throws(HushError) -> (after: Int, limit: Int) {
        let after = after ?? 0
        guard after >= 0 else { throw HushError(.badRequest, "after must be ≥ 0") }
        let limit = min(max(limit ?? limits.maxHistoryPage, 1), limits.maxHistoryPage)
        return (max(after, floor), limit)
    }
}
