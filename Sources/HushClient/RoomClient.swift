import Foundation
import HushProtocol
import Logging
import ThemisKit

/// A room as one key sees it, over one connection: the owner's and the members' operations,
/// with the end-to-end logic delegated to the pure `RoomState`, `OwnerJoins` and `JoinerFlow`.
public actor RoomClient {
    public enum Event: Sendable, Equatable {
        case message(seq: Int, from: String, text: String)
        case rotated(seq: Int, epoch: Int)
        case memberJoined(key: String)
        case memberLeft(key: String)
        case rotationDue(count: Int)
        case rejected(seq: Int, reason: String)
        case removed
        case roomDeleted
    }

    public private(set) var server: ServerInfo
    public private(set) var state: RoomState
    private var joins: OwnerJoins
    private var connection: HushConnection
    private var pushTask: Task<Void, Never>?
    private var wrapRequired = false
    private var joinedWaiters: [String: CheckedContinuation<Void, Never>] = [:]
    public nonisolated let events: AsyncStream<Event>
    private let sink: AsyncStream<Event>.Continuation

    public var room: String { state.room }
    public var key: String { state.myKey }
    public var members: Set<String> { state.members }

    init(server: ServerInfo, state: RoomState, connection: HushConnection) {
        self.server = server
        self.state = state
        self.connection = connection
        joins = OwnerJoins(room: state.room)
        (events, sink) = AsyncStream.makeStream(of: Event.self)
    }

    // MARK: owner

    /// Creates a room owned by a fresh key.
    public static func create(server: ServerInfo, rotateEvery: Int? = nil) async throws -> RoomClient {
        let key = ThemisPrivateKey()
        let connection = try await HushConnection.open(server: server, key: key)
        var request = WireMessage(type: "create_room")
        request.rotateEvery = rotateEvery
        let reply = try await connection.request(request)
        guard let room = reply.room else { throw ClientError.unexpectedReply(reply.type) }
        let state = RoomState(room: room, owner: key.publicKey, me: key, epoch: 0, roomKey: RoomPayload.newRoomKey())
        let client = RoomClient(server: server, state: state, connection: connection)
        await client.startPushes()
        return client
    }

    /// Registers a fresh invite and returns its link.
    public func invite(expiresIn seconds: Int64 = 24 * 3600) async throws -> String {
        let invite = joins.makeInvite(owner: state.owner, serverFingerprint: server.fingerprint)
        var request = WireMessage(type: "invite")
        request.room = room
        request.inviteId = Base64Bytes(invite.inviteID)
        request.expiresAt = Int64(Date().timeIntervalSince1970) + seconds
        try await connection.request(request)
        return invite.link(serverURL: server.baseURL)
    }

    /// Waits until `key` has been added (the owner's side completes joins by itself).
    public func waitForMember(_ key: String) async {
        if state.members.contains(key) { return }
        await withCheckedContinuation { joinedWaiters[key] = $0 }
    }

    /// Rotates the room key: plain, or wrapped per member once anyone has left.
    @discardableResult
    public func rotate() async throws -> Int {
        var request = WireMessage(type: "rotate")
        request.room = room
        let rotation = try state.makeRotation(wrappedFor: wrapRequired ? state.members.sorted() : nil)
        request.epoch = rotation.epoch
        request.payload = rotation.payload.map(Base64Bytes.init)
        request.wraps = rotation.wraps
        let reply = try await connection.request(request)
        state.install(rotation)
        wrapRequired = false
        return reply.seq ?? 0
    }

    /// Removes a member with a signed request, then rotates with per-member wraps.
    public func remove(_ member: String) async throws {
        var request = WireMessage(type: "remove_member")
        request.room = room
        request.key = member
        request.signature = Base64Bytes(try SecureMessage.sign(Statement.removal(room: room, key: member), with: state.me))
        try await connection.request(request)
        state.forget(key: member)
        wrapRequired = true
        try await rotate()
    }

    public func deleteRoom() async throws {
        var request = WireMessage(type: "delete_room")
        request.room = room
        try await connection.request(request)
    }

    // MARK: joiner

    /// Joins through an invite link: pins the server key from the invite, runs the join and
    /// returns once the owner has admitted this key. The owner may be offline meanwhile.
    public static func join(link: String, timeout: Duration = .seconds(30)) async throws -> RoomClient {
        let (serverURL, invite) = try InviteLink.parse(link)
        let server = try await ServerInfo.fetch(serverURL, expectedFingerprint: invite.server)
        let flow = try JoinerFlow(invite: invite)
        let connection = try await HushConnection.open(server: server, key: flow.me)
        var request = WireMessage(type: "join")
        request.room = invite.room
        request.inviteId = Base64Bytes(invite.inviteID)
        request.joiningKey = Base64Bytes(try flow.joiningKeyBlob())
        try await connection.request(request)
        return try await withThrowingTaskGroup(of: RoomClient.self) { group in
            group.addTask {
                var state: RoomState?
                for await push in connection.pushes {
                    switch push.type {
                    case "join_response" where push.room == invite.room:
                        guard let sealed = push.sealed?.bytes else { continue }
                        let accepted = try flow.accept(sealed: sealed)
                        state = accepted.state
                        var confirm = WireMessage(type: "join_confirm")
                        confirm.room = invite.room
                        confirm.inviteId = Base64Bytes(invite.inviteID)
                        confirm.sealed = Base64Bytes(accepted.confirmation)
                        try await connection.request(confirm)
                    case "member_joined" where push.key == KeyID.json(flow.me.publicKey):
                        guard var state, let signature = push.signature?.bytes,
                              state.admit(key: KeyID.json(flow.me.publicKey), signature: signature)
                        else { throw ClientError.rejected("membership signature does not verify") }
                        let client = RoomClient(server: server, state: state, connection: connection)
                        try await client.reconnect(using: connection)
                        return client
                    default: continue
                    }
                }
                throw ClientError.connectionClosed
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ClientError.timedOut
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    // MARK: everyone

    @discardableResult
    public func send(_ text: String) async throws -> Int {
        var request = WireMessage(type: "send")
        request.room = room
        request.payload = Base64Bytes(try state.compose(text: text, now: Int64(Date().timeIntervalSince1970 * 1000)))
        return try await connection.request(request).seq ?? 0
    }

    /// Reads history after `after` (default: the last seen), every page, in order.
    public func history(after: Int? = nil) async throws -> [Event] {
        var after = after ?? state.lastSeq
        var events: [Event] = []
        while true {
            var request = WireMessage(type: "history")
            request.room = room
            request.after = after
            let reply = try await connection.request(request)
            for envelope in reply.messages ?? [] {
                events.append(interpret(state.receive(envelope)))
                after = envelope.seq
            }
            guard reply.more == true else { return events }
        }
    }

    public func leave() async throws {
        var request = WireMessage(type: "leave")
        request.room = room
        try await connection.request(request)
    }

    /// Opens a new connection with the same key (after a drop or a restart, optionally at a
    /// new address of the same server) and re-reads the room summary: members, and the
    /// delivered mark for "history since last departure".
    @discardableResult
    public func reconnect(to newServer: ServerInfo? = nil, using existing: HushConnection? = nil) async throws -> RoomSummary? {
        if let newServer {
            guard newServer.publicKey == server.publicKey else { throw ClientError.serverKeyMismatch }
            server = newServer
        }
        if existing == nil {
            connection.close()
            connection = try await HushConnection.open(server: server, key: state.me)
        }
        pushTask?.cancel()
        let hello = try await connection.request(WireMessage(type: "hello"))
        let summary = hello.rooms?.first { $0.room == room }
        for member in summary?.members ?? [] { state.admit(key: member.key, signature: member.signature.bytes) }
        wrapRequired = summary?.wrapRequired ?? false
        startPushes()
        return summary
    }

    /// Reopens a room from its saved state, e.g. after the server restarted elsewhere.
    public static func resume(_ state: RoomState, on server: ServerInfo) async throws -> RoomClient {
        let connection = try await HushConnection.open(server: server, key: state.me)
        let client = RoomClient(server: server, state: state, connection: connection)
        try await client.reconnect(using: connection)
        return client
    }

    public func disconnect() {
        pushTask?.cancel()
        connection.close()
    }

    /// The raw connection, for callers that speak the protocol themselves.
    public var rawConnection: HushConnection { connection }

    // MARK: pushes

    private func startPushes() {
        let pushes = connection.pushes
        pushTask = Task { [weak self] in
            for await push in pushes {
                guard let self else { return }
                await self.handle(push)
            }
        }
    }

    private func handle(_ push: WireMessage) async {
        switch push.type {
        case "message":
            guard let envelope = Envelope(push: push) else { return }
            sink.yield(interpret(state.receive(envelope)))
        case "member_joined":
            guard let key = push.key, let signature = push.signature?.bytes, state.admit(key: key, signature: signature) else { return }
            sink.yield(.memberJoined(key: key))
            joinedWaiters.removeValue(forKey: key)?.resume()
        case "member_removed", "member_left":
            guard let key = push.key else { return }
            state.forget(key: key)
            wrapRequired = true
            sink.yield(.memberLeft(key: key))
        case "rotation_due":
            sink.yield(.rotationDue(count: push.count ?? 0))
        case "removed":
            sink.yield(.removed)
        case "room_deleted":
            sink.yield(.roomDeleted)
        case "join_request":
            guard state.isOwner, let inviteID = push.inviteId?.bytes, let joiner = push.key,
                  let blob = push.joiningKey?.bytes,
                  let sealed = try? joins.respond(inviteID: inviteID, joiner: joiner, joiningKeyBlob: blob, state: state) else { return }
            var request = WireMessage(type: "join_response")
            request.room = room
            request.inviteId = Base64Bytes(inviteID)
            request.sealed = Base64Bytes(sealed)
            _ = try? await connection.request(request)
        case "join_confirm":
            guard state.isOwner, let inviteID = push.inviteId?.bytes, let joiner = push.key, let sealed = push.sealed?.bytes,
                  let signature = try? joins.admit(inviteID: inviteID, joiner: joiner, sealed: sealed, state: state) else { return }
            var request = WireMessage(type: "add_member")
            request.room = room
            request.inviteId = Base64Bytes(inviteID)
            request.key = joiner
            request.signature = Base64Bytes(signature)
            _ = try? await connection.request(request)
        default:
            return
        }
    }

    private func interpret(_ event: RoomState.Event) -> Event {
        switch event {
        case .chat(let seq, let from, _, _, let text): return .message(seq: seq, from: from, text: text)
        case .rotated(let seq, let epoch): return .rotated(seq: seq, epoch: epoch)
        case .rejected(let seq, let reason): return .rejected(seq: seq, reason: reason)
        }
    }
}
