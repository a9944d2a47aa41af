import HushProtocol

/// What an accepted request does to open connections besides its reply.
public enum ConnectionEffect: Sendable, Equatable, Codable {
    /// `message` to every connection of `keys`; with `skipsRequester`, not to the connection
    /// that made the request (its reply already says it).
    case push(WireMessage, to: [String], skipsRequester: Bool)
    /// Every connection of `key` is refused from now on (it left or was removed), and closed
    /// after `closingWith` when there is one.
    case retire(String, closingWith: WireMessage?)
}

/// The room core's pushes (docs/PROTOCOL.md §4): who hears of each accepted request, and what,
/// as pure functions of what the store committed. `Relay` hands their effects to the hub.
public enum RoomPushes {
    /// A join request reaches the owner (§4.3).
    public static func joinRequested(_ outcome: JoinOutcome) -> [ConnectionEffect] {
        [.push(joinRequest(outcome.invite), to: [outcome.room.owner], skipsRequester: false)]
    }

    /// The owner's sealed grant reaches the joiner.
    public static func joinResponded(_ outcome: JoinOutcome) -> [ConnectionEffect] {
        guard let joiner = outcome.invite.joiner else { return [] }
        return [.push(joinResponse(outcome.invite), to: [joiner], skipsRequester: false)]
    }

    /// The joiner's confirmation reaches the owner.
    public static func joinConfirmed(_ outcome: JoinOutcome) -> [ConnectionEffect] {
        [.push(joinConfirm(outcome.invite), to: [outcome.room.owner], skipsRequester: false)]
    }

    /// Every key of the room, the new member's included, learns of it with the owner's signature.
    public static func memberJoined(room: String, member: String, signature: [UInt8], roomKeys: [String]) -> [ConnectionEffect] {
        var push = WireMessage(type: "member_joined")
        push.room = room
        push.key = member
        push.signature = Base64Bytes(signature)
        return [.push(push, to: roomKeys, skipsRequester: false)]
    }

    /// A revoked invite's joiner, if it had one, learns that its join ended.
    public static func inviteRevoked(_ invite: InviteRecord) -> [ConnectionEffect] {
        guard let joiner = invite.joiner else { return [] }
        var push = WireMessage(type: "join_revoked")
        push.room = invite.room
        push.inviteId = Base64Bytes(invite.inviteID)
        return [.push(push, to: [joiner], skipsRequester: false)]
    }

    /// A chat message reaches every key of the room but the sending connection (the sender's
    /// other connections included); the owner hears once that a rotation became due.
    public static func sent(_ outcome: AppendOutcome) -> [ConnectionEffect] {
        guard !outcome.isRepeat else { return [] }
        var effects: [ConnectionEffect] = [.push(outcome.message.envelope(wrap: nil).push, to: outcome.recipients,
                                                 skipsRequester: true)]
        if RoomRules.becameRotationDue(outcome.room) {
            effects.append(.push(rotationDue(outcome.room), to: [outcome.room.owner], skipsRequester: false))
        }
        return effects
    }

    /// A rotation reaches every key of the room; a wrapped one reaches each key with its own
    /// wrap (the owner's other connections included) and no key without one.
    public static func rotated(_ outcome: AppendOutcome) -> [ConnectionEffect] {
        guard !outcome.wraps.isEmpty else {
            return [.push(outcome.message.envelope(wrap: nil).push, to: outcome.recipients, skipsRequester: true)]
        }
        return outcome.recipients.compactMap { recipient in
            outcome.wraps[recipient].map { .push(outcome.message.envelope(wrap: $0).push, to: [recipient], skipsRequester: true) }
        }
    }

    /// A removed key's connections get `removed` and are closed; the remaining keys get the
    /// owner's signed removal.
    public static func removed(room: String, member: String, signature: [UInt8], outcome: DepartureOutcome) -> [ConnectionEffect] {
        var removed = WireMessage(type: "removed")
        removed.room = room
        return [.retire(member, closingWith: removed),
                .push(departure("member_removed", room: room, key: member, signature: signature, until: outcome.until),
                      to: outcome.remaining, skipsRequester: true)]
    }

    /// A key that left is refused from now on (its reply is `left`); the remaining keys get its
    /// signed leave.
    public static func left(room: String, key: String, signature: [UInt8], outcome: DepartureOutcome) -> [ConnectionEffect] {
        [.retire(key, closingWith: nil),
         .push(departure("member_left", room: room, key: key, signature: signature, until: outcome.until),
               to: outcome.remaining, skipsRequester: false)]
    }

    /// Every key that was in a deleted room learns of it.
    public static func roomDeleted(_ room: String, keys: [String]) -> [ConnectionEffect] {
        [.push(roomDeletedMessage(room), to: keys, skipsRequester: true)]
    }

    /// What waits for an owner at `hello` in one of its rooms: the joins it has to answer, and
    /// the rotation while one is due (§4.1).
    public static func waitingForOwner(room: RoomRecord, pendingJoins: [InviteRecord]) -> [WireMessage] {
        var waiting: [WireMessage] = pendingJoins.compactMap { invite in
            switch invite.state {
            case .requested: joinRequest(invite)
            case .confirmed: joinConfirm(invite)
            case .open, .responded: nil
            }
        }
        if RoomRules.isRotationDue(room) { waiting.append(rotationDue(room)) }
        return waiting
    }

    /// What waits for a joiner at `hello`: the owner's answers to its joins.
    public static func waitingForJoiner(joins: [InviteRecord]) -> [WireMessage] {
        joins.filter { $0.state == .responded }.map(joinResponse)
    }

    public static func roomDeletedMessage(_ room: String) -> WireMessage {
        var message = WireMessage(type: "room_deleted")
        message.room = room
        return message
    }

    // MARK: messages

    static func joinRequest(_ invite: InviteRecord) -> WireMessage {
        var push = WireMessage(type: "join_request")
        push.room = invite.room
        push.inviteId = Base64Bytes(invite.inviteID)
        push.key = invite.joiner
        push.joiningKey = invite.joiningKey.map(Base64Bytes.init)
        return push
    }

    static func joinResponse(_ invite: InviteRecord) -> WireMessage {
        var push = WireMessage(type: "join_response")
        push.room = invite.room
        push.inviteId = Base64Bytes(invite.inviteID)
        push.sealed = invite.response.map(Base64Bytes.init)
        return push
    }

    static func joinConfirm(_ invite: InviteRecord) -> WireMessage {
        var push = WireMessage(type: "join_confirm")
        push.room = invite.room
        push.inviteId = Base64Bytes(invite.inviteID)
        push.key = invite.joiner
        push.sealed = invite.confirmation.map(Base64Bytes.init)
        return push
    }

    static func rotationDue(_ room: RoomRecord) -> WireMessage {
        var push = WireMessage(type: "rotation_due")
        push.room = room.id
        push.count = room.sinceRotation
        return push
    }

    private static func departure(_ type: String, room: String, key: String, signature: [UInt8], until: Int) -> WireMessage {
        var push = WireMessage(type: type)
        push.room = room
        push.key = key
        push.signature = Base64Bytes(signature)
        push.until = until
        return push
    }
}
