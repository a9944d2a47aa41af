import Foundation
import HushProtocol
import Logging
import Prometheus

/// Turns one authenticated request into a reply, and gives the store the pushes the room core
/// decides on (`RoomPushes`) to deliver once the write is committed. The connection's key is the only identity: it comes from the
/// completed Secure Session handshake.
public struct Relay: Sendable {
    let store: any Store
    let hub: Hub
    let limits: Limits
    let metrics: ServerMetrics
    let clock: @Sendable () -> Date

    var nowSeconds: Int64 { Int64(clock().timeIntervalSince1970) }
    var nowMillis: Int64 { Int64(clock().timeIntervalSince1970 * 1000) }

    /// Answers `request` from `key`; pushes go through the hub. Never throws: a refusal is an
    /// `error` reply.
    /// The reply comes first, then any pushes that must follow it on this connection.
    func handle(_ request: WireMessage, from key: String, outbox: Outbox) async -> [WireMessage] {
        guard let id = request.id, (1...64).contains(id.count) else {
            return [.error(HushError(.badRequest, "every request needs an id of 1–64 characters"), id: nil)]
        }
        do {
            if outbox.isRetired { throw HushError(.removed, "this key was removed from its room") }
            if request.type == "hello" {
                var (reply, waiting) = try await hello(key: key)
                reply.id = id
                return [reply] + waiting
            }
            var reply = try await dispatch(request, from: key, outbox: outbox)
            reply.id = id
            return [reply]
        } catch let error as HushError {
            metrics.refused.increment()
            return [.error(error, id: id)]
        } catch {
            return [.error(HushError(.internal, "the server failed; nothing was committed"), id: id)]
        }
    }

    private func dispatch(_ request: WireMessage, from key: String, outbox: Outbox) async throws -> WireMessage {
        switch request.type {
        case "create_room":
            let rotateEvery = try RoomRules.checkRotateEvery(request.rotateEvery, limits: limits)
            let room = try await store.createRoom(id: Base64.encodeURL(RoomPayload.randomBytes(16)), owner: key,
                                                  rotateEvery: rotateEvery, now: nowSeconds, limits: limits)
            var reply = WireMessage(type: "room_created")
            reply.room = room.id
            reply.epoch = 0
            reply.rotateEvery = rotateEvery
            return reply
        case "invite":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            guard inviteID.count == 32 else { throw HushError(.badRequest, "inviteId must be 32 bytes") }
            try await store.addInvite(room: room, by: key, inviteID: inviteID, expiresAt: try field(request.expiresAt, "expiresAt"),
                                      now: nowSeconds, limits: limits)
            return reply("invited", room: room, inviteID: inviteID)
        case "join":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            let joiningKey = try bytes(request.joiningKey, "joiningKey", max: limits.maxSmallBlobBytes)
            _ = try await store.requestJoin(room: room, inviteID: inviteID, joiner: key, joiningKey: joiningKey,
                                            now: nowSeconds, limits: limits, announce: announce(outbox, RoomPushes.joinRequested))
            return reply("join_pending", room: room, inviteID: inviteID)
        case "join_response":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            let sealed = try bytes(request.sealed, "sealed", max: limits.maxSmallBlobBytes)
            _ = try await store.respondJoin(room: room, inviteID: inviteID, by: key, sealed: sealed, now: nowSeconds,
                                            announce: announce(outbox, RoomPushes.joinResponded))
            return reply("join_response_sent", room: room, inviteID: inviteID)
        case "join_confirm":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            let sealed = try bytes(request.sealed, "sealed", max: limits.maxSmallBlobBytes)
            _ = try await store.confirmJoin(room: room, inviteID: inviteID, by: key, sealed: sealed, now: nowSeconds,
                                            announce: announce(outbox, RoomPushes.joinConfirmed))
            return reply("join_confirm_sent", room: room, inviteID: inviteID)
        case "add_member":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            let member = try keyField(request.key, "key")
            let signature = try bytes(request.signature, "signature", max: limits.maxSmallBlobBytes)
            _ = try await store.addMember(room: room, inviteID: inviteID, key: member, signature: signature, by: key,
                                          now: nowSeconds, limits: limits, announce: announce(outbox) { keys in
                RoomPushes.memberJoined(room: room, member: member, signature: signature, roomKeys: keys)
            })
            var reply = WireMessage(type: "member_added")
            reply.room = room
            reply.key = member
            return reply
        case "invites":
            let room = try roomField(request.room)
            var reply = WireMessage(type: "invites")
            reply.room = room
            reply.invites = try await store.invites(room: room, by: key, now: nowSeconds).map {
                InviteSummary(inviteId: $0.inviteID, expiresAt: $0.expiresAt, state: $0.state.rawValue, key: $0.joiner)
            }
            return reply
        case "revoke_invite":
            let room = try roomField(request.room)
            let inviteID = try bytes(request.inviteId, "inviteId", max: 32)
            _ = try await store.revokeInvite(room: room, inviteID: inviteID, by: key,
                                             announce: announce(outbox, RoomPushes.inviteRevoked))
            return reply("invite_revoked", room: room, inviteID: inviteID)
        case "send":
            let room = try roomField(request.room)
            let payload = try bytes(request.payload, "payload", max: limits.maxPayloadBytes)
            let epoch = try field(request.epoch, "epoch")
            let messageID = try bytes(request.messageId, "messageId", max: limits.maxMessageIDBytes)
            let files = try fileIDs(request.files)
            let outcome = try await store.append(room: room, from: key, payload: payload, epoch: epoch, messageID: messageID,
                                                 files: files, now: nowMillis, limits: limits,
                                                 announce: announce(outbox, RoomPushes.sent))
            if !outcome.isRepeat { metrics.messages.increment() }
            var reply = WireMessage(type: "sent")
            reply.room = room
            reply.seq = outcome.message.seq
            return reply
        case "file_put":
            let room = try roomField(request.room)
            let file = try fileID(request.file)
            let index = try field(request.index, "index")
            let data = try bytes(request.data, "data", max: limits.maxFileChunkBytes)
            let stored = try await store.putChunk(room: room, file: file, by: key, chunks: try field(request.chunks, "chunks"),
                                                  index: index, data: data, now: nowMillis, limits: limits)
            var reply = WireMessage(type: "file_stored")
            reply.room = room
            reply.file = Base64Bytes(file)
            reply.index = index
            reply.complete = stored.isComplete
            return reply
        case "file_get":
            let room = try roomField(request.room)
            let file = try fileID(request.file)
            let index = try field(request.index, "index")
            let chunk = try await store.fileChunk(room: room, file: file, index: index, for: key)
            var reply = WireMessage(type: "file_chunk")
            reply.room = room
            reply.file = Base64Bytes(file)
            reply.chunks = chunk.chunks
            reply.index = index
            reply.data = Base64Bytes(chunk.data)
            return reply
        case "rotate":
            let room = try roomField(request.room)
            let payload = try request.payload.map { b throws(HushError) in try bytes(b, "payload", max: limits.maxPayloadBytes) }
            for wrap in request.wraps ?? [] {
                _ = try keyField(wrap.key, "wraps[].key")
                guard wrap.wrap.bytes.count <= limits.maxPayloadBytes else { throw HushError(.tooLarge, "a wrap is too large") }
            }
            let outcome = try await store.rotate(room: room, by: key, epoch: try field(request.epoch, "epoch"),
                                                 payload: payload, wraps: request.wraps, now: nowMillis,
                                                 limits: limits, announce: announce(outbox, RoomPushes.rotated))
            metrics.rotations.increment()
            var reply = WireMessage(type: "rotated")
            reply.room = room
            reply.seq = outcome.message.seq
            reply.epoch = outcome.room.epoch
            return reply
        case "history":
            let room = try roomField(request.room)
            let page = try await store.history(room: room, for: key, after: request.after, limit: request.limit, limits: limits)
            var reply = WireMessage(type: "history")
            reply.room = room
            reply.messages = page.messages
            reply.more = page.more
            reply.expiredThrough = page.expiredThrough
            return reply
        case "remove_member":
            let room = try roomField(request.room)
            let member = try keyField(request.key, "key")
            let signature = try bytes(request.signature, "signature", max: limits.maxSmallBlobBytes)
            let outcome = try await store.removeMember(room: room, key: member, signature: signature, by: key,
                                                       announce: announce(outbox) { outcome in
                RoomPushes.removed(room: room, member: member, signature: signature, outcome: outcome)
            })
            var reply = WireMessage(type: "member_removed")
            reply.room = room
            reply.key = member
            reply.until = outcome.until
            return reply
        case "leave":
            let room = try roomField(request.room)
            // A missing signature is a departure nobody can verify: refused like a forged one.
            let signature = request.signature?.bytes ?? []
            guard signature.count <= limits.maxSmallBlobBytes else { throw HushError(.tooLarge, "signature is too large") }
            _ = try await store.leave(room: room, key: key, signature: signature, announce: announce(outbox) { outcome in
                RoomPushes.left(room: room, key: key, signature: signature, outcome: outcome)
            })
            var reply = WireMessage(type: "left")
            reply.room = room
            return reply
        case "delete_room":
            let room = try roomField(request.room)
            _ = try await store.deleteRoom(room: room, by: key, announce: announce(outbox) { keys in RoomPushes.roomDeleted(room, keys: keys) })
            return RoomPushes.roomDeletedMessage(room)
        default:
            throw HushError(.badRequest, "unknown request type")
        }
    }

    /// The `hello` reply, then what waits for this key (docs/PROTOCOL.md §4.1).
    private func hello(key: String) async throws -> (WireMessage, [WireMessage]) {
        var reply = WireMessage(type: "hello")
        reply.key = key
        var rooms: [RoomSummary] = []
        var waiting: [WireMessage] = []
        for (room, member) in try await store.rooms(of: key) {
            let members = try await store.members(of: room.id).filter { $0.role == .member }
                .map { MemberEntry(key: $0.key, signature: $0.signature) }
            let former = try await store.formerMembers(of: room.id, after: member.floor, limit: limits.maxMembersPerRoom)
                .map(\.entry)
            rooms.append(RoomSummary(room: room.id, role: member.role.rawValue, owner: room.owner, epoch: room.epoch,
                                     lastSeq: room.lastSeq, floor: member.floor, delivered: member.delivered,
                                     rotateEvery: room.rotateEvery, sinceRotation: room.sinceRotation,
                                     wrapRequired: room.wrapRequired, members: members, formerMembers: former,
                                     expiredThrough: room.expiredThrough))
            guard member.role == .owner else { continue }
            waiting += RoomPushes.waitingForOwner(room: room, pendingJoins: try await store.pendingJoins(room: room.id, now: nowSeconds))
        }
        let joins = try await store.joins(of: key, now: nowSeconds)
        waiting += RoomPushes.waitingForJoiner(joins: joins)
        reply.rooms = rooms
        reply.joins = joins.map { JoinSummary(room: $0.room, inviteId: $0.inviteID, state: $0.state.rawValue) }
        return (reply, waiting)
    }

    /// The room core's pushes of a write's outcome, for the store to deliver once it is committed.
    private func announce<Outcome>(_ requester: Outbox,
                                   _ effects: @escaping @Sendable (Outcome) -> [ConnectionEffect]) -> Announcement<Outcome> {
        Announcement(hub: hub, requester: requester, effects: effects)
    }

    // MARK: field checks

    private func reply(_ type: String, room: String, inviteID: [UInt8]) -> WireMessage {
        var reply = WireMessage(type: type)
        reply.room = room
        reply.inviteId = Base64Bytes(inviteID)
        return reply
    }

    private func field<T>(_ value: T?, _ name: String) throws(HushError) -> T {
        guard let value else { throw HushError(.badRequest, "missing field \(name)") }
        return value
    }

    /// A room id as the server makes them (22 characters of unpadded base64url, §1), checked
    /// before any lookup: anything else is `bad_request`, never a query with odd bytes in it.
    private func roomField(_ value: String?) throws(HushError) -> String {
        let value = try field(value, "room")
        guard InviteLink.isRoomID(value) else { throw HushError(.badRequest, "room is not a room id") }
        return value
    }

    /// A field that names a key: well-formed and canonical before any lookup (`bad_request`).
    private func keyField(_ value: String?, _ name: String) throws(HushError) -> String {
        let value = try field(value, name)
        _ = try KeyID.key(fromJSON: value)
        return value
    }

    /// A file id: exactly 16 bytes (§4.9).
    private func fileID(_ value: Base64Bytes?) throws(HushError) -> [UInt8] {
        let id = try field(value, "file").bytes
        guard id.count == 16 else { throw HushError(.badRequest, "a file id is 16 bytes") }
        return id
    }

    /// `files` of a `send`: absent, or 1–4 distinct file ids.
    private func fileIDs(_ value: [Base64Bytes]?) throws(HushError) -> [[UInt8]] {
        guard let value else { return [] }
        guard (1...4).contains(value.count), Set(value.map(\.bytes)).count == value.count else {
            throw HushError(.badRequest, "files must name 1–4 distinct files")
        }
        var ids: [[UInt8]] = []
        for id in value { ids.append(try fileID(id)) }
        return ids
    }

    private func bytes(_ value: Base64Bytes?, _ name: String, max: Int) throws(HushError) -> [UInt8] {
        let value = try field(value, name)
        guard value.bytes.count <= max else { throw HushError(.tooLarge, "\(name) is larger than \(max) bytes") }
        guard !value.bytes.isEmpty else { throw HushError(.badRequest, "\(name) is empty") }
        return value.bytes
    }
}
