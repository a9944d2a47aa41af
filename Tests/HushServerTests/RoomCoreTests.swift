import HushProtocol
@testable import HushServer
import Testing
import ThemisKit

/// The room core (`RoomRules`) as plain functions: every rule, each refusal with its code, and
/// what an accepted request turns the records into. No server, no store.
@Suite(.timeLimit(.minutes(5))) struct RoomCoreTests {
    let ownerKey = ThemisPrivateKey()
    let joinerKey = ThemisPrivateKey()
    var owner: String { KeyID.json(ownerKey.publicKey) }
    var joiner: String { KeyID.json(joinerKey.publicKey) }
    let now: Int64 = 1_800_000_000
    let limits = Limits.standard

    var room: RoomRecord {
        RoomRecord(id: "Jd7NeG0366hu3LTUT1LpWA", owner: owner, epoch: 2, lastSeq: 10, lastRotationSeq: 7, sinceRotation: 3,
                   rotateEvery: 100, wrapRequired: false, storedBytes: 0, expiredThrough: 0)
    }

    func invite(_ state: InviteState, joiner: String? = nil, responseEpoch: Int? = nil, expiresAt: Int64? = nil) -> InviteRecord {
        InviteRecord(room: room.id, inviteID: Array(repeating: 1, count: 32), expiresAt: expiresAt ?? now + 60, state: state,
                     joiner: joiner, joiningKey: joiner == nil ? nil : [1], response: nil, confirmation: nil, responseEpoch: responseEpoch)
    }

    func member(_ key: String, _ role: Role) -> MemberRecord {
        MemberRecord(room: room.id, key: key, role: role, signature: [], floor: 0, delivered: 0)
    }

    /// The code a rule refuses with (nil: accepted, or refused with something else than `HushError`).
    func refusal(_ body: () throws -> Void) -> ErrorCode? {
        do { try body(); return nil } catch { return (error as? HushError)?.code }
    }

    @Test func authorizeIsOneRuleForStrangersMembersAndOwners() throws {
        #expect(refusal { try RoomRules.authorize(nil, as: .member) } == .notMember)
        #expect(refusal { try RoomRules.authorize(nil, as: .owner) } == .notMember)
        #expect(refusal { try RoomRules.authorize(member(joiner, .member), as: .owner) } == .notOwner)
        #expect(try RoomRules.authorize(member(joiner, .member), as: .member).key == joiner)
        #expect(try RoomRules.authorize(member(owner, .owner), as: .owner).role == .owner)
    }

    @Test func joinTakesAnOpenUnexpiredInviteWithinTheBounds() throws {
        func join(_ invite: InviteRecord?, used: Bool = false, isMember: Bool = false, rooms: Int = 0, pending: Int = 0) -> ErrorCode? {
            refusal { _ = try RoomRules.join(invite: invite, inviteWasUsed: used, joiner: joiner, joiningKey: [9], isMember: isMember,
                                             roomsOfJoiner: rooms, pendingJoins: pending, now: now, limits: limits) }
        }
        #expect(join(invite(.open), isMember: true) == .alreadyMember)
        #expect(join(nil) == .unknownInvite)
        #expect(join(nil, used: true) == .inviteUsed)  // a member joined with it: said so, not "unknown"
        #expect(join(invite(.open, expiresAt: now)) == .inviteExpired)
        #expect(join(invite(.requested, joiner: owner)) == .inviteUsed)
        #expect(join(invite(.open), pending: limits.maxPendingJoinsPerRoom) == .limitReached)
        #expect(join(invite(.open), rooms: limits.maxRoomsPerKey) == .limitReached)
        let joined = try RoomRules.join(invite: invite(.open), inviteWasUsed: false, joiner: joiner, joiningKey: [9], isMember: false,
                                        roomsOfJoiner: 0, pendingJoins: 0, now: now, limits: limits)
        #expect(joined.state == .requested && joined.joiner == joiner && joined.joiningKey == [9])
    }

    @Test func respondConfirmAndAdmitFollowTheJoinInOrder() throws {
        #expect(refusal { _ = try RoomRules.respond(room: room, invite: invite(.open), sealed: [1], now: now) } == .noPendingJoin)
        #expect(refusal { _ = try RoomRules.respond(room: room, invite: invite(.requested, joiner: joiner, expiresAt: now), sealed: [1],
                                                     now: now) } == .inviteExpired)
        let responded = try RoomRules.respond(room: room, invite: invite(.confirmed, joiner: joiner, responseEpoch: 0), sealed: [5], now: now)
        #expect(responded.state == .responded && responded.response == [5] && responded.confirmation == nil && responded.responseEpoch == room.epoch)

        #expect(refusal { _ = try RoomRules.confirm(invite: responded, key: owner, sealed: [6], now: now) } == .noPendingJoin)
        let confirmed = try RoomRules.confirm(invite: responded, key: joiner, sealed: [6], now: now)
        #expect(confirmed.state == .confirmed && confirmed.confirmation == [6])

        let signature = try SecureMessage.sign(Statement.membership(room: room.id, key: joiner), with: ownerKey)
        func admit(_ invite: InviteRecord?, signature: [UInt8], members: Int = 1) -> ErrorCode? {
            refusal { _ = try RoomRules.admit(room: room, invite: invite, key: joiner, signature: signature, memberCount: members,
                                              now: now, limits: limits) }
        }
        #expect(admit(responded, signature: signature) == .noPendingJoin)
        var rotatedSince = confirmed
        rotatedSince.responseEpoch = room.epoch - 1
        #expect(admit(rotatedSince, signature: signature) == .epochChanged)
        let byTheJoiner = try SecureMessage.sign(Statement.membership(room: room.id, key: joiner), with: joinerKey)
        #expect(admit(confirmed, signature: byTheJoiner) == .badSignature)
        #expect(admit(confirmed, signature: signature, members: limits.maxMembersPerRoom) == .limitReached)
        let admitted = try RoomRules.admit(room: room, invite: confirmed, key: joiner, signature: signature, memberCount: 1, now: now,
                                           limits: limits)
        // A new member reads from the last rotation on (history since the last key rotation).
        #expect(admitted.role == .member && admitted.floor == room.lastRotationSeq && admitted.signature == signature)
    }

    @Test func sendIsUnderTheCurrentEpochAndNeverWhileARotationIsOwed() throws {
        func send(_ room: RoomRecord, epoch: Int, payload: [UInt8] = [1, 2, 3]) -> HushError? {
            do { _ = try RoomRules.send(room: room, from: joiner, epoch: epoch, payload: payload, messageID: [7], now: now,
                                        databaseBytes: 0, limits: limits); return nil } catch { return error }
        }
        var owed = room
        owed.wrapRequired = true
        #expect(send(owed, epoch: room.epoch)?.code == .rotationPending && send(owed, epoch: room.epoch)?.epoch == room.epoch)
        #expect(send(room, epoch: room.epoch - 1)?.code == .staleEpoch && send(room, epoch: room.epoch - 1)?.epoch == room.epoch)
        var full = room
        full.storedBytes = limits.roomQuotaBytes - StorageRules.messageCost(payload: [1, 2]) + 1
        #expect(send(full, epoch: room.epoch, payload: [1, 2])?.code == .roomFull)
        let (after, message) = try RoomRules.send(room: room, from: joiner, epoch: room.epoch, payload: [1, 2, 3], messageID: [7],
                                                  now: now, databaseBytes: 0, limits: limits)
        #expect(message.seq == room.lastSeq + 1 && message.epoch == room.epoch && message.kind == "message" && message.messageID == [7])
        #expect(after.lastSeq == message.seq && after.sinceRotation == room.sinceRotation + 1
                && after.storedBytes == StorageRules.messageCost(payload: [1, 2, 3]))
    }

    @Test func rotationIsTheNextEpochAndWrappedForEveryKeyOnceAnyoneLeft() throws {
        let keys: Set = [owner, joiner]
        func rotate(_ room: RoomRecord, epoch: Int, payload: [UInt8]?, wraps: [Wrap]?) -> ErrorCode? {
            refusal { _ = try RoomRules.rotate(room: room, by: owner, epoch: epoch, payload: payload, wraps: wraps, roomKeys: keys,
                                               now: now, databaseBytes: 0, limits: limits) }
        }
        #expect(rotate(room, epoch: room.epoch, payload: [1], wraps: nil) == .epochMismatch)
        #expect(rotate(room, epoch: room.epoch + 2, payload: [1], wraps: nil) == .epochMismatch)
        #expect(rotate(room, epoch: room.epoch + 1, payload: nil, wraps: nil) == .badRequest)
        var owed = room
        owed.wrapRequired = true
        #expect(rotate(owed, epoch: room.epoch + 1, payload: [1], wraps: nil) == .wrapsRequired)
        // Without the owner's own wrap, or with one for a key not in the room.
        #expect(rotate(owed, epoch: room.epoch + 1, payload: nil, wraps: [Wrap(key: joiner, wrap: [1])]) == .wrapsRequired)
        #expect(rotate(owed, epoch: room.epoch + 1, payload: nil,
                       wraps: [Wrap(key: joiner, wrap: [1]), Wrap(key: owner, wrap: [2]), Wrap(key: "stranger", wrap: [3])]) == .wrapsRequired)
        let (after, rotation) = try RoomRules.rotate(room: owed, by: owner, epoch: room.epoch + 1, payload: nil,
                                                     wraps: [Wrap(key: joiner, wrap: [1]), Wrap(key: owner, wrap: [2])], roomKeys: keys,
                                                     now: now, databaseBytes: 0, limits: limits)
        #expect(rotation.kind == "rotation" && rotation.seq == room.lastSeq + 1 && rotation.epoch == room.epoch + 1)
        #expect(after.epoch == room.epoch + 1 && after.lastRotationSeq == rotation.seq && after.sinceRotation == 0 && !after.wrapRequired)
    }

    @Test func departureNeedsItsSignatureAndOwesARotation() throws {
        let removal = try SecureMessage.sign(Statement.removal(room: room.id, key: joiner), with: ownerKey)
        let leave = try SecureMessage.sign(Statement.leave(room: room.id, key: joiner), with: joinerKey)
        func depart(_ member: MemberRecord?, _ departure: Departure, _ signature: [UInt8]) -> ErrorCode? {
            refusal { _ = try RoomRules.depart(room: room, member: member, departure: departure, signature: signature) }
        }
        #expect(depart(nil, .removed, removal) == .notMember)
        #expect(depart(member(owner, .owner), .removed, removal) == .notMember)
        #expect(depart(member(owner, .owner), .left, leave) == .badRequest)
        #expect(depart(member(joiner, .member), .removed, leave) == .badSignature)
        #expect(depart(member(joiner, .member), .left, removal) == .badSignature)
        for (departure, signature) in [(Departure.removed, removal), (.left, leave)] {
            let (after, departed) = try RoomRules.depart(room: room, member: member(joiner, .member), departure: departure,
                                                         signature: signature)
            #expect(after.wrapRequired && departed.until == room.lastSeq && departed.departure == departure
                    && departed.departureSignature == signature)
        }
    }

    /// Who hears of what: the pushes of each accepted request, without a hub.
    @Test func pushesReachTheRightKeysOnceAndInTheirOrder() throws {
        let third = KeyID.json(ThemisPrivateKey().publicKey)
        let keys = [owner, joiner, third]
        func targets(_ effects: [ConnectionEffect]) -> [(type: String, keys: [String], skipsRequester: Bool)] {
            effects.compactMap { if case .push(let message, let keys, let skips) = $0 { (message.type, keys, skips) } else { nil } }
        }
        // A message goes to every key but the sending connection; the owner hears once that a
        // rotation is due, when the message that makes it due is sent.
        var due = room
        due.sinceRotation = due.rotateEvery - 1
        let (dueRoom, message) = try RoomRules.send(room: due, from: joiner, epoch: room.epoch, payload: [1], messageID: [1],
                                                    now: now, databaseBytes: 0, limits: limits)
        let sent = AppendOutcome(message: message, room: dueRoom, recipients: keys, wraps: [:])
        let sentTargets = targets(RoomPushes.sent(sent))
        #expect(sentTargets.map(\.type) == ["message", "rotation_due"])
        #expect(sentTargets[0].keys == keys && sentTargets[0].skipsRequester)
        #expect(sentTargets[1].keys == [owner] && !sentTargets[1].skipsRequester)
        var later = sent
        later.room.sinceRotation += 1
        #expect(targets(RoomPushes.sent(later)).map(\.type) == ["message"])
        #expect(RoomRules.isRotationDue(later.room) && RoomPushes.waitingForOwner(room: later.room, pendingJoins: []).map(\.type) == ["rotation_due"])
        var repeated = sent
        repeated.isRepeat = true
        #expect(RoomPushes.sent(repeated).isEmpty)

        // A wrapped rotation reaches each key with its own wrap and no key without one.
        let rotation = MessageRecord(room: room.id, seq: 11, kind: "rotation", sender: owner, epoch: 3, at: now, payload: nil, messageID: nil)
        let wrapped = AppendOutcome(message: rotation, room: room, recipients: keys, wraps: [owner: [1], joiner: [2]])
        let pushes = RoomPushes.rotated(wrapped)
        #expect(pushes.count == 2)
        for case .push(let push, let to, let skips) in pushes {
            #expect(to.count == 1 && skips && push.wrap?.bytes == wrapped.wraps[to[0]])
        }
        let plain = AppendOutcome(message: rotation, room: room, recipients: keys, wraps: [:])
        #expect(targets(RoomPushes.rotated(plain)).map(\.keys) == [keys])

        // A removed key is retired and closed before the others hear of the removal.
        let removal = RoomPushes.removed(room: room.id, member: joiner, signature: [9],
                                         outcome: DepartureOutcome(remaining: [owner, third], until: 10))
        guard case .retire(joiner, let closing)? = removal.first else { Issue.record("the removed key is not retired first"); return }
        #expect(closing?.type == "removed")
        #expect(targets(removal).map(\.type) == ["member_removed"] && targets(removal)[0].keys == [owner, third])
        let leave = RoomPushes.left(room: room.id, key: joiner, signature: [9], outcome: DepartureOutcome(remaining: [owner], until: 10))
        guard case .retire(joiner, nil)? = leave.first else { Issue.record("the leaving key is not retired"); return }

        // Joins: the owner is asked and told of confirmations; the joiner gets the answer.
        let requested = JoinOutcome(room: room, invite: invite(.requested, joiner: joiner))
        #expect(targets(RoomPushes.joinRequested(requested)).map(\.keys) == [[owner]])
        var responded = requested
        responded.invite.state = .responded
        #expect(targets(RoomPushes.joinResponded(responded)).map(\.keys) == [[joiner]])
        #expect(RoomPushes.joinResponded(JoinOutcome(room: room, invite: invite(.open))).isEmpty)
        #expect(RoomPushes.inviteRevoked(invite(.open)).isEmpty)
        #expect(targets(RoomPushes.inviteRevoked(invite(.confirmed, joiner: joiner))).map(\.keys) == [[joiner]])
        let waiting = RoomPushes.waitingForOwner(room: room, pendingJoins: [invite(.open), invite(.requested, joiner: joiner),
                                                                            invite(.responded, joiner: joiner), invite(.confirmed, joiner: third)])
        #expect(waiting.map(\.type) == ["join_request", "join_confirm"])
        #expect(RoomPushes.waitingForJoiner(joins: [invite(.requested, joiner: joiner), responded.invite]).map(\.type) == ["join_response"])
    }

    /// The per-connection request budget: a burst, then `rate` a second of monotonic time.
    @Test func requestBudgetRefillsWithTimeUpToItsBurst() {
        let start = ContinuousClock.now
        var limiter = RateLimiter(rate: 2, burst: 4, now: start)
        // The burst, then nothing at once, 0.8 of a request back after 400 ms, one after 600 ms;
        // after a minute idle no more than the burst again.
        let answers = [0, 0, 0, 0, 0, 400, 600, 600, 60_000, 60_000, 60_000, 60_000, 60_000].map {
            limiter.allow(now: start + .milliseconds($0))
        }
        #expect(answers == [true, true, true, true, false, false, true, false, true, true, true, true, false])
    }

    /// A `hush_events` notification is read strictly: anyone who may `NOTIFY` on the database
    /// could send one, and a malformed one is ignored rather than trusted.
    @Test func crossNodeNotificationsAreReadStrictly() {
        let event = PostgresFanOut.Event(room: room.id, seq: 7, id: "0F6C1E4B-7A3E-4C2B-9E7D-2B1F1A9C0D11")
        #expect(PostgresFanOut.event(fromNotification: "\(room.id) 7 \(event.id)") == event)
        for hostile in ["", "\(room.id) 7", "\(room.id) 0 \(event.id)", "\(room.id) -1 \(event.id)", "\(room.id) x \(event.id)",
                        "\(room.id) 7 not-a-uuid", " 7 \(event.id)", "\(room.id)  7 \(event.id)", "\(room.id) 7 \(event.id) extra",
                        String(repeating: "a", count: 300) + " 7 \(event.id)"] {
            #expect(PostgresFanOut.event(fromNotification: hostile) == nil, "\(hostile)")
        }
    }
}
