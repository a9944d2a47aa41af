import HushProtocol
import ThemisKit

/// Who may do what (docs/PROTOCOL.md §4), as pure checks over stored records. The store calls
/// these inside its transaction, so a refusal changes nothing.
public enum RoomRules {
    public static func requireRoom(_ room: RoomRecord?) throws(HushError) -> RoomRecord {
        guard let room else { throw HushError(.notFound, "no such room") }
        return room
    }

    public static func requireOwner(_ room: RoomRecord, key: String) throws(HushError) {
        guard room.owner == key else { throw HushError(.notOwner, "only the room owner may do this") }
    }

    public static func requireMember(_ member: MemberRecord?) throws(HushError) -> MemberRecord {
        guard let member else { throw HushError(.notMember, "this key is not in the room") }
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

    /// The invite a `join` names: registered, unexpired, unused.
    public static func checkJoin(invite: InviteRecord?, now: Int64, pendingJoins: Int, limits: Limits) throws(HushError) -> InviteRecord {
        guard let invite else { throw HushError(.unknownInvite, "no such invite in this room") }
        guard invite.expiresAt > now else { throw HushError(.inviteExpired, "the invite has expired") }
        guard invite.state == .open else { throw HushError(.inviteUsed, "the invite was already used") }
        guard pendingJoins < limits.maxPendingJoinsPerRoom else { throw HushError(.limitReached, "too many pending joins") }
        return invite
    }

    public static func checkResponse(invite: InviteRecord?) throws(HushError) -> InviteRecord {
        guard let invite, [.requested, .responded, .confirmed].contains(invite.state) else {
            throw HushError(.noPendingJoin, "no join request is pending for this invite")
        }
        return invite
    }

    public static func checkConfirm(invite: InviteRecord?, key: String) throws(HushError) -> InviteRecord {
        guard let invite, invite.state == .responded, invite.joiner == key else {
            throw HushError(.noPendingJoin, "no join response is waiting for this key")
        }
        return invite
    }

    public static func checkAddMember(room: RoomRecord, invite: InviteRecord?, key: String, signature: [UInt8],
                                      memberCount: Int, limits: Limits) throws(HushError) {
        guard let invite, invite.state == .confirmed, invite.joiner == key else {
            throw HushError(.noPendingJoin, "no confirmed join for this key")
        }
        guard invite.responseEpoch == room.epoch else {
            throw HushError(.epochChanged, "the room key rotated since the join response")
        }
        try checkOwnerSignature(signature, statement: Statement.membership(room: room.id, key: key), room: room)
        guard memberCount < limits.maxMembersPerRoom else { throw HushError(.limitReached, "the room is full") }
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
    /// key still holds that epoch's key (the owner's wrapped rotation comes first).
    public static func checkSend(room: RoomRecord, epoch: Int) throws(HushError) {
        guard !room.wrapRequired else {
            throw HushError(.rotationPending, "a member left: wait for the owner's key rotation, then send", epoch: room.epoch)
        }
        guard epoch == room.epoch else {
            throw HushError(.staleEpoch, "the room key rotated: seal under the current epoch and send again", epoch: room.epoch)
        }
    }

    /// A rotation: next epoch; once anyone has left, wraps for exactly the room's keys: every
    /// current member and the owner itself (so the owner's other clients can follow it).
    public static func checkRotation(room: RoomRecord, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?,
                                     roomKeys: Set<String>) throws(HushError) {
        guard epoch == room.epoch + 1 else { throw HushError(.epochMismatch, "epoch must be the current epoch + 1") }
        if let wraps {
            guard payload == nil, Set(wraps.map(\.key)) == roomKeys, wraps.count == roomKeys.count else {
                throw HushError(.wrapsRequired, "a wrapped rotation needs exactly one wrap per current member and one for the owner, and no payload")
            }
        } else {
            guard !room.wrapRequired else { throw HushError(.wrapsRequired, "a member left: the rotation must be wrapped per member") }
            guard payload != nil else { throw HushError(.badRequest, "a rotation needs a payload or wraps") }
        }
    }

    public static func historyPage(after: Int?, limit: Int?, floor: Int, limits: Limits) throws(HushError) -> (after: Int, limit: Int) {
        let after = after ?? 0
        guard after >= 0 else { throw HushError(.badRequest, "after must be ≥ 0") }
        let limit = min(max(limit ?? limits.maxHistoryPage, 1), limits.maxHistoryPage)
        return (max(after, floor), limit)
    }
}
