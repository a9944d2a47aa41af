import Crypto
import Foundation
import HushProtocol
import Logging
import NIOConcurrencyHelpers
import ThemisKit

/// A room as one key sees it, over one connection: the owner's and the members' operations,
/// with the end-to-end logic delegated to the pure `RoomState`, `OwnerJoins` and `JoinerFlow`.
public actor RoomClient {
    public enum Event: Sendable, Equatable {
        case message(seq: Int, from: String, text: String)
        case rotated(seq: Int, epoch: Int)
        case memberJoined(key: String)
        /// A member left; its leave signature verified.
        case memberLeft(key: String)
        /// The owner removed a member; the owner's removal signature verified.
        case memberRemoved(key: String)
        /// The server says a member is gone, but the departure signature does not verify.
        case memberGone(key: String)
        case rotationDue(count: Int)
        case rejected(seq: Int, reason: RoomState.Reason)
        case removed
        case roomDeleted
        /// A chat message with the sender's timestamp, instead of `message` once
        /// `useDetailedMessages()` was called (the terminal client shows the time).
        case chat(seq: Int, from: String, ts: Int64, text: String)
        /// Owner: a key asked to join through one of this owner's invites (and was answered).
        case joinRequested(key: String)
        /// Owner: a join request this key cannot read (the link's owner key was altered on the
        /// way); its invite was revoked, so the joiner stops waiting (§4.3).
        case joinRefused(key: String)
        /// A send is held until the owner's rotation after a departure (`rotation_pending`).
        case sendHeld
        /// A key set its display name (docs/PROTOCOL.md §6.7); `previous` is the name it had.
        /// Only names in force: one a later name already replaced is not news.
        case named(seq: Int, from: String, name: String, previous: String?)
        /// A file was shared (docs/PROTOCOL.md §6.8): its description, key included; `download`
        /// fetches and verifies it.
        case file(seq: Int, from: String, ts: Int64, file: RoomFile)
    }

    /// Owner: a join request as the server pushed it, kept so that the owner can answer it
    /// again with the current key when the room rotated in between (`epoch_changed`).
    public struct JoinRequest: Sendable, Equatable {
        public let inviteID: [UInt8]
        public let joiner: String
        public let joiningKey: [UInt8]
        public init(inviteID: [UInt8], joiner: String, joiningKey: [UInt8]) {
            self.inviteID = inviteID
            self.joiner = joiner
            self.joiningKey = joiningKey
        }
    }

    /// Joiner: how far a join got.
    public enum JoinProgress: Sendable {
        /// The server holds the join request; the owner answers whenever its client runs.
        case requested
        /// The owner's response opened: this is the room state to keep (and confirm).
        case accepted(RoomState)
    }

    public private(set) var server: ServerInfo
    public private(set) var state: RoomState
    private var joins: OwnerJoins
    private var connection: HushConnection
    private var pushTask: Task<Void, Never>?
    public private(set) var wrapRequired = false
    /// Membership pushes handled so far (`refresh` compares it around its `hello`).
    private var membershipPushes = 0
    /// Owner of a room whose new members read only what comes after they join (§6.6
    /// `history`): rotates before the first answer to each joiner, with this write-ahead for
    /// the new key (`rotate(prepare:)`). Nil: answers with the current key.
    private var rotateBeforeAnswering: RotationPrepare?

    public typealias RotationPrepare = @Sendable (_ epoch: Int, _ key: SymmetricKey) async throws -> Void

    public func rotateBeforeAnsweringJoiners(prepare: RotationPrepare?) { rotateBeforeAnswering = prepare }
    /// Owner: outstanding invite tokens by invite id, the join requests answered, and the
    /// invites whose joiner this client admitted (for a key store to keep in step).
    private var tokens: [[UInt8]: [UInt8]] = [:]
    public private(set) var joinRequests: [[UInt8]: JoinRequest] = [:]
    public private(set) var completedInvites: Set<[UInt8]> = []
    private var detailedMessages = false
    /// The owner's membership signature of every admitted member (for a key store).
    public private(set) var memberSignatures: [String: [UInt8]] = [:]
    private var joinedWaiters: [String: CheckedContinuation<Void, Never>] = [:]
    /// Sends held by `rotation_pending`, woken by the next rotation read.
    private var rotationWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextRotationWaiter = 0
    /// After a reconnect, the last sequence number read before it: a rotation committed in
    /// between is read from here (`history()`, `refresh()`), not from `lastSeq`.
    private var unreadAfter: Int?
    public nonisolated let events: AsyncStream<Event>
    private let sink: AsyncStream<Event>.Continuation

    public var room: String { state.room }
    public var key: String { state.myKey }
    public var members: Set<String> { state.members }
    /// Who is called what in this room (§6.7).
    public var names: [String: RoomState.Naming] { state.names }
    public var inviteTokens: [[UInt8]] { Array(tokens.values) }

    /// Emit `chat` (with the sender's timestamp) instead of `message`.
    public func useDetailedMessages() { detailedMessages = true }

    /// Where invites that another client of this key made (another process, say `hush chat
    /// invite` beside a running `hush chat read --follow`) are found: asked for the invite
    /// tokens when a join names an invite this client does not know.
    public func findInvitesWith(_ source: @escaping @Sendable () async -> [[UInt8]]) { inviteSource = source }
    private var inviteSource: (@Sendable () async -> [[UInt8]])?
    /// Invite ids already looked for and not found: a server naming unknown invites again and
    /// again costs one lookup each, at most this many.
    private var missedInvites: Set<[UInt8]> = []
    private static let maxMissedInvites = 64

    /// The token of `inviteID`, looking in the invite source once when this client does not
    /// know it.
    private func token(of inviteID: [UInt8]) async -> [UInt8]? {
        if let token = tokens[inviteID] { return token }
        guard let inviteSource, !missedInvites.contains(inviteID), missedInvites.count < Self.maxMissedInvites else { return nil }
        for token in await inviteSource() where tokens[InviteLink.inviteID(token: token)] == nil {
            joins.remember(token: token)
            tokens[InviteLink.inviteID(token: token)] = token
        }
        if tokens[inviteID] == nil { missedInvites.insert(inviteID) }
        return tokens[inviteID]
    }

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
    /// `roomName`: proposed to the joiner as the room's name (§6.6); the owner's own name in
    /// the room goes with it when it has one. `page`: the origin whose copy of the web client
    /// (`hush web export`) the link opens; the link then names this relay, which must be an origin.
    public func invite(expiresIn seconds: Int64 = 24 * 3600, roomName: String? = nil,
                       history: HistoryForNewMembers = .rotation, page: WebOrigin? = nil) async throws -> String {
        var relay: WebOrigin?
        if let page, page.description != server.baseURL {
            do { relay = try WebOrigin(server.baseURL) } catch {
                throw HushError(.badRequest, "a link for another page names this relay, and \(server.baseURL) is not an origin (no path)")
            }
        }
        let invite = joins.makeInvite(owner: state.owner, serverFingerprint: server.fingerprint, roomName: roomName,
                                      ownerName: state.name(of: KeyID.json(state.owner)), history: history, relay: relay)
        var request = WireMessage(type: "invite")
        request.room = room
        request.inviteId = Base64Bytes(invite.inviteID)
        request.expiresAt = Int64(Date().timeIntervalSince1970) + seconds
        try await connection.request(request)
        tokens[invite.inviteID] = invite.token.bytes
        return invite.link(serverURL: page?.description ?? server.baseURL)
    }

    /// Owner: the room's unexpired invites and the joins through them.
    public func openInvites() async throws -> [InviteSummary] {
        var request = WireMessage(type: "invites")
        request.room = room
        return try await connection.request(request).invites ?? []
    }

    /// Owner: ends an invite and any join through it (the joiner is told `join_revoked`).
    public func revokeInvite(_ inviteID: [UInt8]) async throws {
        var request = WireMessage(type: "revoke_invite")
        request.room = room
        request.inviteId = Base64Bytes(inviteID)
        try await connection.request(request)
        tokens[inviteID] = nil
        joinRequests[inviteID] = nil
    }

    /// Waits until `key` has been added (the owner's side completes joins by itself).
    public func waitForMember(_ key: String) async {
        if state.members.contains(key) { return }
        await withCheckedContinuation { joinedWaiters[key] = $0 }
    }

    /// Rotates the room key: plain, or wrapped per member once anyone has left.
    /// `prepare` sees the new epoch and key before the request leaves (a key store saves it
    /// there, so that a crash right after the server accepted it cannot lose the key).
    @discardableResult
    public func rotate(prepare: (@Sendable (_ epoch: Int, _ key: SymmetricKey) async throws -> Void)? = nil) async throws -> Int {
        var refreshed = false
        while true {
            var request = WireMessage(type: "rotate")
            request.room = room
            let rotation = try state.makeRotation(wrappedFor: wrapRequired ? state.members.sorted() : nil)
            try await prepare?(rotation.epoch, rotation.key)
            request.epoch = rotation.epoch
            request.payload = rotation.payload.map(Base64Bytes.init)
            request.wraps = rotation.wraps
            let reply: WireMessage
            do {
                reply = try await connection.request(request)
            } catch let error as HushError where error.code == .epochMismatch {
                // Another client of this owner rotated first: catch up with the server (members,
                // and the rotation through history) before the caller tries again.
                try await refresh()
                throw error
            } catch let error as HushError where error.code == .wrapsRequired && !refreshed {
                // A departure (or a join) whose push this client has not read yet: the room's
                // keys are the server's. Read them (`hello`) and wrap again, once.
                refreshed = true
                try await refresh()
                continue
            }
            state.install(rotation)
            wrapRequired = false
            return reply.seq ?? 0
        }
    }

    /// Removes a member with a signed request, then rotates with per-member wraps.
    public func remove(_ member: String, prepare: (@Sendable (_ epoch: Int, _ key: SymmetricKey) async throws -> Void)? = nil) async throws {
        var request = WireMessage(type: "remove_member")
        request.room = room
        request.key = member
        request.signature = Base64Bytes(try SecureMessage.sign(Statement.removal(room: room, key: member), with: state.me))
        let reply = try await connection.request(request)
        state.depart(key: member, until: reply.until ?? state.lastSeq, departure: .removed, signature: request.signature?.bytes)
        memberSignatures[member] = nil
        wrapRequired = true
        try await rotate(prepare: prepare)
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
        let (pageURL, invite) = try InviteLink.parse(link)
        let server = try await ServerInfo.fetch(invite.relayURL(pageURL: pageURL), expectedFingerprint: invite.server)
        return try await join(flow: try JoinerFlow(invite: invite), server: server, timeout: timeout)
    }

    /// Runs a join with a given flow (key pair and `J`), or resumes it: when the server already
    /// holds this key's join request it is not sent again, and `accepted` (the state from an
    /// earlier response) lets a join that was confirmed, or already completed, finish.
    /// `timeout` nil waits for the owner for as long as it takes.
    public static func join(flow: JoinerFlow, server: ServerInfo, accepted: RoomState? = nil, timeout: Duration?,
                            progress: @escaping @Sendable (JoinProgress) -> Void = { _ in }) async throws -> RoomClient {
        let invite = flow.invite
        let connection = try await HushConnection.open(server: server, key: flow.me)
        let hello = try await connection.request(WireMessage(type: "hello"))
        if hello.rooms?.contains(where: { $0.room == invite.room }) == true {
            guard let accepted else { throw ClientError.rejected("this key is already a member, but its room key was not kept") }
            let client = RoomClient(server: server, state: accepted, connection: connection)
            try await client.reconnect(using: connection)
            return client
        }
        if hello.joins?.contains(where: { $0.room == invite.room }) != true {
            var request = WireMessage(type: "join")
            request.room = invite.room
            request.inviteId = Base64Bytes(invite.inviteID)
            request.joiningKey = Base64Bytes(try flow.joiningKeyBlob())
            try await connection.request(request)
        }
        progress(.requested)
        return try await withThrowingTaskGroup(of: RoomClient.self) { group in
            group.addTask {
                var state: RoomState? = accepted
                for await push in connection.pushes {
                    switch push.type {
                    case "join_response" where push.room == invite.room:
                        guard let sealed = push.sealed?.bytes else { continue }
                        let accepted = try flow.accept(sealed: sealed)
                        state = accepted.state
                        progress(.accepted(accepted.state))
                        var confirm = WireMessage(type: "join_confirm")
                        confirm.room = invite.room
                        confirm.inviteId = Base64Bytes(invite.inviteID)
                        confirm.sealed = Base64Bytes(accepted.confirmation)
                        // The owner may answer one request twice (its live push and its next
                        // `hello` both list it): when both responses arrive before the first
                        // confirmation, the second confirmation finds the join confirmed
                        // already. That join goes on; the owner admits it, or responds again.
                        let reply = try await connection.exchange(confirm)
                        if reply.type == "error", reply.code != ErrorCode.noPendingJoin.rawValue {
                            throw HushError(ErrorCode(rawValue: reply.code ?? "") ?? .internal, reply.message ?? "")
                        }
                    case "join_revoked" where push.room == invite.room && push.inviteId?.bytes == invite.inviteID:
                        throw ClientError.joinEnded
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
            if let timeout {
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw ClientError.timedOut
                }
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    // MARK: everyone

    /// Sends a chat message and returns its sequence number (protocol v2, §4.4). The same
    /// `messageID` goes with every attempt, so a retry can never store the message twice.
    /// `stale_epoch` (a rotation this client has not read yet): it reads the rotation and
    /// seals the text again under the new key. `rotation_pending` (a member left): the owner
    /// rotates; a member waits up to `rotationWait` for a rotation past the room's epoch that
    /// the refusal carries. Each new attempt needs a newer key than the one before, and there
    /// are at most `maxReseals` of them: in a busy room a rotation can land again between
    /// reading one and sending, and the person must still see one message, not an error.
    /// `reserveCounter` sees the counter the message would use and returns the one to use
    /// (≥ it) once that is saved: a key store keeps counters unique across processes and
    /// crashes by saving before anything leaves (write-ahead). `room_full` and `server_full` are
    /// thrown at once: nothing was stored, and space comes back only as old messages expire.
    /// A text over `ChatMessage.maxTextLength` is refused before anything is sealed.
    @discardableResult
    public func send(_ text: String, messageID: [UInt8] = RoomPayload.randomBytes(16), rotationWait: Duration = .seconds(60),
                     reserveCounter: (@Sendable (_ next: Int) async throws -> Int)? = nil) async throws -> Int {
        guard ChatMessage.isSendable(text) else {
            throw ClientError.rejected("a message can have at most \(ChatMessage.maxTextLength) characters")
        }
        return try await post(.chat(text), messageID: messageID, rotationWait: rotationWait, reserveCounter: reserveCounter)
    }

    /// Sends a name message (§6.7): `name` must be canonical (`RoomState.canonicalName`). Sent,
    /// it is this key's name at its seq. Everything else is as `send`.
    @discardableResult
    public func setName(_ name: String, messageID: [UInt8] = RoomPayload.randomBytes(16), rotationWait: Duration = .seconds(60),
                        reserveCounter: (@Sendable (_ next: Int) async throws -> Int)? = nil) async throws -> Int {
        guard RoomState.isCanonicalName(name) else { throw ClientError.rejected("a name is 1 to 64 characters, without control characters") }
        return try await post(.name(name), messageID: messageID, rotationWait: rotationWait, reserveCounter: reserveCounter)
    }

    /// Shares a file (§4.9, §6.8): its chunks are stored first (`uploadChunks`), then the file
    /// message goes out like a chat message, naming the file in `files`, with every retry of
    /// `send` (the same `messageID` and `files`). Returns the file and its message's seq.
    @discardableResult
    public func sendFile(_ bytes: [UInt8], name: String, type: String, preview: [UInt8]? = nil,
                         messageID: [UInt8] = RoomPayload.randomBytes(16), rotationWait: Duration = .seconds(60),
                         reserveCounter: (@Sendable (_ next: Int) async throws -> Int)? = nil,
                         progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil) async throws -> (file: RoomFile, seq: Int) {
        let (file, chunks) = try RoomFile.seal(bytes, room: room, name: name, type: type, preview: preview)
        try await uploadChunks(chunks, of: file, progress: progress)
        let seq = try await sendFileMessage(file, messageID: messageID, rotationWait: rotationWait, reserveCounter: reserveCounter)
        return (file, seq)
    }

    /// Sends the message of a file whose chunks this key stored (`uploadChunks`), as `send` does.
    @discardableResult
    public func sendFileMessage(_ file: RoomFile, messageID: [UInt8] = RoomPayload.randomBytes(16), rotationWait: Duration = .seconds(60),
                                reserveCounter: (@Sendable (_ next: Int) async throws -> Int)? = nil) async throws -> Int {
        try await post(.file(file), messageID: messageID, rotationWait: rotationWait, reserveCounter: reserveCounter)
    }

    /// Stores a file's sealed chunks with `file_put`, at most `maxFileRequestsInFlight` at once. A
    /// chunk the server already holds with the same bytes is answered as stored, so this can run
    /// again after a lost reply; `rate_limited` is waited out and the chunk sent again.
    public func uploadChunks(_ chunks: [[UInt8]], of file: RoomFile,
                             progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil) async throws {
        guard chunks.count == file.chunks else { throw FileError.chunkCountMismatch }
        let (connection, room, slots) = (connection, room, fileSlots)
        let requests = chunks.enumerated().map { index, data in
            var request = WireMessage(type: "file_put")
            request.room = room
            request.file = Base64Bytes(file.id)
            request.chunks = file.chunks
            request.index = index
            request.data = Base64Bytes(data)
            return request
        }
        try await Self.inFlight(requests, progress: progress) { request in
            let reply = try await Self.fileRequest(request, on: connection, slots: slots)
            guard reply.type == "file_stored", reply.index == request.index else { throw ClientError.unexpectedReply(reply.type) }
        }
    }

    /// Fetches a file's chunks with `file_get` (at most `maxFileRequestsInFlight` at once) and
    /// opens them: the whole file, verified against its description, or an error and nothing.
    /// The chunk count is the description's: a server stating another is refused.
    public func download(_ file: RoomFile, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil) async throws -> [UInt8] {
        let (connection, room, slots) = (connection, room, fileSlots)
        let requests = (0..<file.chunks).map { index in
            var request = WireMessage(type: "file_get")
            request.room = room
            request.file = Base64Bytes(file.id)
            request.index = index
            return request
        }
        let sealed = ChunkTable(count: file.chunks)
        try await Self.inFlight(requests, progress: progress) { request in
            let reply = try await Self.fileRequest(request, on: connection, slots: slots)
            guard reply.type == "file_chunk", let index = request.index, reply.index == index, let data = reply.data?.bytes
            else { throw ClientError.unexpectedReply(reply.type) }
            guard reply.chunks == file.chunks else { throw FileError.chunkCountMismatch }
            sealed.set(index, data)
        }
        return try file.open(sealed.chunks, room: room)
    }

    /// File requests a client keeps in flight (§4.9): their replies stay far below the
    /// connection's outgoing queue.
    public static let maxFileRequestsInFlight = 8
    /// Shared by every upload and download of this client, so that running several at once
    /// still keeps `maxFileRequestsInFlight` on its connection.
    private let fileSlots = RequestSlots(count: maxFileRequestsInFlight)

    /// Runs `perform` for every request, at most `maxFileRequestsInFlight` at once; the first
    /// error cancels the rest.
    private static func inFlight(_ requests: [WireMessage], progress: (@Sendable (Int, Int) -> Void)?,
                                 perform: @escaping @Sendable (WireMessage) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0, done = 0
            for request in requests.prefix(maxFileRequestsInFlight) {
                group.addTask { try await perform(request) }
                next += 1
            }
            while try await group.next() != nil {
                done += 1
                progress?(done, requests.count)
                if next < requests.count {
                    let request = requests[next]
                    group.addTask { try await perform(request) }
                    next += 1
                }
            }
        }
    }

    /// One `file_put` or `file_get`, sent again after `rate_limited` (the file budget, §7) with a
    /// doubling pause; any other error is thrown as the server's `HushError`.
    private static func fileRequest(_ request: WireMessage, on connection: HushConnection, slots: RequestSlots) async throws -> WireMessage {
        var attempt = 0
        while true {
            await slots.acquire()
            let reply: WireMessage
            do {
                reply = try await connection.exchange(request)
                slots.release()
            } catch {
                slots.release()
                throw error
            }
            if reply.type != "error" { return reply }
            let error = HushError(ErrorCode(rawValue: reply.code ?? "") ?? .internal, reply.message ?? "", epoch: reply.epoch)
            guard error.code == .rateLimited, attempt < fileRateLimitedAttempts else { throw error }
            try await Task.sleep(for: .milliseconds(min(50 << attempt, 2000)))
            attempt += 1
        }
    }

    /// Retries of a rate-limited file request: 50 ms, doubling up to 2 s (≈ 30 s in all).
    static let fileRateLimitedAttempts = 20

    private enum Outgoing {
        case chat(String)
        case name(String)
        case file(RoomFile)
    }

    private func post(_ outgoing: Outgoing, messageID: [UInt8], rotationWait: Duration,
                      reserveCounter: (@Sendable (_ next: Int) async throws -> Int)?) async throws -> Int {
        var reseals = 0
        while true {
            if let reserveCounter { state.raiseCounter(to: try await reserveCounter(state.sentCounter + 1) - 1) }
            var request = WireMessage(type: "send")
            request.room = room
            request.epoch = state.epoch
            request.messageId = Base64Bytes(messageID)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            switch outgoing {
            case .chat(let text): request.payload = Base64Bytes(try state.compose(text: text, now: now))
            case .name(let name): request.payload = Base64Bytes(try state.composeName(name, now: now))
            case .file(let file):
                request.payload = Base64Bytes(try state.composeFile(file, now: now))
                request.files = [Base64Bytes(file.id)]
            }
            let counter = state.sentCounter
            do {
                let seq = try await connection.request(request).seq ?? 0
                if case .name(let name) = outgoing {
                    state.recordSent(counter: counter, seq: seq, name: name, epoch: request.epoch)
                } else {
                    state.recordSent(counter: counter, seq: seq)
                }
                return seq
            } catch let error as HushError where reseals < Self.maxReseals && [.staleEpoch, .rotationPending].contains(error.code) {
                reseals += 1
                let sealedUnder = request.epoch ?? 0
                if error.code == .staleEpoch {
                    try await refresh()
                } else if state.isOwner {
                    wrapRequired = true
                    try await rotate()
                } else {
                    sink.yield(.sendHeld)
                    // Past the epoch the room had when it refused, not just past the one this
                    // was sealed under: a rotation committed before the departure (and read
                    // after the refusal) still leaves the room owing the wrapped one.
                    try await waitForRotation(beyond: max(sealedUnder, error.epoch ?? sealedUnder), timeout: rotationWait)
                }
                guard state.epoch > sealedUnder else { throw error }
            }
        }
    }

    /// How many times one `send` seals its text again under a newer key before it gives up.
    static let maxReseals = 8

    /// Waits until a rotation past `epoch` has been read (push or history), or `timeout`, or
    /// the connection ends (no rotation can arrive on it then: `connectionClosed` at once).
    private func waitForRotation(beyond epoch: Int, timeout: Duration) async throws {
        if state.epoch > epoch { return }
        guard !connection.isClosed else { throw ClientError.connectionClosed }
        let id = nextRotationWaiter
        nextRotationWaiter += 1
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.wakeRotationWaiter(id)
        }
        await withCheckedContinuation { rotationWaiters[id] = $0 }
        timer.cancel()
        guard state.epoch > epoch else { throw connection.isClosed ? ClientError.connectionClosed : ClientError.timedOut }
    }

    private func wakeRotationWaiter(_ id: Int) { rotationWaiters.removeValue(forKey: id)?.resume() }

    private func wakeRotationWaiters() {
        for waiter in rotationWaiters.values { waiter.resume() }
        rotationWaiters = [:]
    }

    /// Reads history after `after` (default: the last seen, or where a reconnect left a gap),
    /// every page, in order. Messages already read come back too: the caller asked for this
    /// stretch of history.
    public func history(after: Int? = nil) async throws -> [Event] {
        try await readHistory(after: after).compactMap(interpret)
    }

    private func readHistory(after: Int?) async throws -> [RoomState.Reading] {
        let start = after ?? unreadAfter ?? state.lastSeq
        var after = start
        var events: [RoomState.Reading] = []
        while true {
            var request = WireMessage(type: "history")
            request.room = room
            request.after = after
            let reply = try await connection.request(request)
            let asked = after
            for envelope in (reply.messages ?? []).prefix(Limits.standard.maxHistoryPage) {
                events.append(state.read(envelope))
                after = max(after, envelope.seq)
            }
            guard reply.more == true else { break }
            // A server that says `more` without moving forward would keep this loop busy forever.
            guard after > asked else { throw ClientError.unexpectedReply("history page without progress") }
        }
        if let gap = unreadAfter, start <= gap { unreadAfter = nil }
        return events
    }

    /// Leaves the room with a signed statement (§6.5); the key is retired.
    public func leave() async throws {
        var request = WireMessage(type: "leave")
        request.room = room
        request.signature = Base64Bytes(try SecureMessage.sign(Statement.leave(room: room, key: key), with: state.me))
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
        // What was committed while no connection was open is never pushed, and the first push
        // on the new one moves `lastSeq` past it: history reads from here until that is read.
        unreadAfter = min(unreadAfter ?? state.lastSeq, state.lastSeq)
        if existing == nil {
            connection.close()
            connection = try await HushConnection.open(server: server, key: state.me)
        }
        pushTask?.cancel()
        let hello = try await connection.request(WireMessage(type: "hello"))
        let summary = hello.rooms?.first { $0.room == room }
        apply(summary)
        startPushes()
        return summary
    }

    /// Re-reads the room summary (`hello`) and the history not seen yet on this connection;
    /// duplicates of messages already shown (pushed meanwhile) are not shown again.
    public func refresh() async throws {
        // A membership push handled while the `hello` was on its way may be newer than the
        // `hello`'s list, which would then undo it (retire a member that just joined). A push
        // leaves the server after its commit, so a `hello` asked after the push includes it:
        // ask again. Pushes that keep coming leave the members as the pushes made them.
        for attempt in 1...Self.helloAttempts {
            let pushesBefore = membershipPushes
            let hello = try await connection.request(WireMessage(type: "hello"))
            let summary = hello.rooms?.first { $0.room == room }
            if membershipPushes == pushesBefore {
                apply(summary)
                break
            }
            if attempt == Self.helloAttempts { wrapRequired = summary?.wrapRequired ?? false }
        }
        for reading in try await readHistory(after: nil) where !reading.isDuplicate {
            if let event = interpret(reading) { sink.yield(event) }
        }
    }

    /// `hello`s one `refresh` asks while membership pushes keep arriving.
    static let helloAttempts = 3

    private func apply(_ summary: RoomSummary?) {
        wrapRequired = summary?.wrapRequired ?? false
        guard let summary else { return }
        memberSignatures = state.sync(members: summary.members, former: summary.formerMembers ?? [])
    }

    /// Reopens a room from its saved state, e.g. after the server restarted elsewhere. An owner
    /// passes its outstanding invite tokens and answered join requests, so that joins started
    /// before a restart still complete. `summary` is what the server's `hello` said.
    public static func resume(_ state: RoomState, on server: ServerInfo, inviteTokens: [[UInt8]] = [],
                              joinRequests: [JoinRequest] = []) async throws -> RoomClient {
        try await resumeWithSummary(state, on: server, inviteTokens: inviteTokens, joinRequests: joinRequests).client
    }

    /// `rotateBeforeAnsweringJoiners`: set before the first push can arrive (§6.6 `history`).
    public static func resumeWithSummary(_ state: RoomState, on server: ServerInfo, inviteTokens: [[UInt8]] = [],
                                         joinRequests: [JoinRequest] = [], rotateBeforeAnsweringJoiners: RotationPrepare? = nil)
        async throws -> (client: RoomClient, summary: RoomSummary?) {
        let connection = try await HushConnection.open(server: server, key: state.me)
        let client = RoomClient(server: server, state: state, connection: connection)
        await client.restore(inviteTokens: inviteTokens, joinRequests: joinRequests)
        await client.rotateBeforeAnsweringJoiners(prepare: rotateBeforeAnsweringJoiners)
        let summary = try await client.reconnect(using: connection)
        return (client, summary)
    }

    private func restore(inviteTokens: [[UInt8]], joinRequests: [JoinRequest]) {
        for token in inviteTokens {
            joins.remember(token: token)
            tokens[InviteLink.inviteID(token: token)] = token
        }
        for request in joinRequests { self.joinRequests[request.inviteID] = request }
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
            // The connection ended: a send waiting for a rotation must not wait for a push
            // that can no longer come.
            await self?.wakeRotationWaiters()
        }
    }

    private func handle(_ push: WireMessage) async {
        switch push.type {
        case "message":
            guard let envelope = Envelope(push: push) else { return }
            let reading = state.read(envelope)
            if case .event(.rotated) = reading { wakeRotationWaiters() }
            if !reading.isDuplicate, let event = interpret(reading) { sink.yield(event) }
        case "member_joined":
            membershipPushes += 1
            guard let key = push.key, let signature = push.signature?.bytes, state.admit(key: key, signature: signature) else { return }
            memberSignatures[key] = signature
            sink.yield(.memberJoined(key: key))
            joinedWaiters.removeValue(forKey: key)?.resume()
        case "member_removed", "member_left":
            membershipPushes += 1
            guard let key = push.key, state.members.contains(key) else { return }
            let departure: Departure = push.type == "member_left" ? .left : .removed
            let verified = state.depart(key: key, until: push.until ?? state.lastSeq, departure: departure,
                                        signature: push.signature?.bytes)
            memberSignatures[key] = nil
            wrapRequired = true
            sink.yield(!verified ? .memberGone(key: key) : departure == .left ? .memberLeft(key: key) : .memberRemoved(key: key))
        case "rotation_due":
            sink.yield(.rotationDue(count: push.count ?? 0))
        case "removed":
            sink.yield(.removed)
        case "room_deleted":
            sink.yield(.roomDeleted)
        case "join_request":
            guard state.isOwner, let inviteID = push.inviteId?.bytes, let joiner = push.key,
                  let blob = push.joiningKey?.bytes, await token(of: inviteID) != nil else { return }
            let earlier = joinRequests[inviteID]
            let firstAnswer = earlier?.joiner != joiner
            joinRequests[inviteID] = JoinRequest(inviteID: inviteID, joiner: joiner, joiningKey: blob)
            if firstAnswer, let prepare = rotateBeforeAnswering {
                do {
                    _ = try await rotate(prepare: prepare)
                } catch let error as HushError where error.code == .epochMismatch {
                    // Another client of this owner rotated first (it read the same request):
                    // the key is fresh either way.
                } catch {
                    // Unanswered for now: the request is listed again at the next `hello`.
                    joinRequests[inviteID] = nil
                    return
                }
            }
            do {
                try await respond(inviteID: inviteID, joiner: joiner)
                sink.yield(.joinRequested(key: joiner))
            } catch is OwnerJoins.UnreadableRequest {
                // A request this invite's readable one already stands for is not the joiner's.
                if let earlier {
                    joinRequests[inviteID] = earlier
                    return
                }
                await refuseUnreadableJoin(inviteID: inviteID, joiner: joiner)
            } catch {
                return
            }
        case "join_confirm":
            guard state.isOwner, let inviteID = push.inviteId?.bytes, let joiner = push.key, let sealed = push.sealed?.bytes,
                  let token = await token(of: inviteID) else { return }
            guard let signature = try? joins.admit(inviteID: inviteID, joiner: joiner, sealed: sealed, state: state) else {
                // The confirmation was sealed under an older room key: the room rotated after
                // the response. Answer again with the current key (§4.3).
                try? await respond(inviteID: inviteID, joiner: joiner)
                return
            }
            var request = WireMessage(type: "add_member")
            request.room = room
            request.inviteId = Base64Bytes(inviteID)
            request.key = joiner
            request.signature = Base64Bytes(signature)
            guard let reply = try? await exchangeThroughRateLimit(request) else { return }
            if reply.type == "error" {
                joins.remember(token: token)
                if reply.code == ErrorCode.epochChanged.rawValue { try? await respond(inviteID: inviteID, joiner: joiner) }
                return
            }
            tokens[inviteID] = nil
            joinRequests[inviteID] = nil
            completedInvites.insert(inviteID)
        default:
            return
        }
    }

    /// Sends (or re-sends) the `join_response` for a stored join request, under the current key.
    /// Throws `OwnerJoins.UnreadableRequest` for a request this key cannot read.
    private func respond(inviteID: [UInt8], joiner: String) async throws {
        guard let stored = joinRequests[inviteID], stored.joiner == joiner else { return }
        let sealed = try joins.respond(inviteID: inviteID, joiner: joiner, joiningKeyBlob: stored.joiningKey, state: state)
        var request = WireMessage(type: "join_response")
        request.room = room
        request.inviteId = Base64Bytes(inviteID)
        request.sealed = Base64Bytes(sealed)
        _ = try? await exchangeThroughRateLimit(request)
    }

    /// A join request this owner cannot read can never complete: its invite is revoked, so the
    /// joiner hears `join_revoked` instead of waiting for ever (§4.3).
    private func refuseUnreadableJoin(inviteID: [UInt8], joiner: String) async {
        joinRequests[inviteID] = nil
        var request = WireMessage(type: "revoke_invite")
        request.room = room
        request.inviteId = Base64Bytes(inviteID)
        guard let reply = try? await exchangeThroughRateLimit(request),
              reply.type != "error" || reply.code == ErrorCode.unknownInvite.rawValue else { return }
        tokens[inviteID] = nil
        sink.yield(.joinRefused(key: joiner))
    }

    /// `exchange`, sent again while the server answers `rate_limited`: a burst of joins can
    /// meet the connection's request budget, and the owner's answers must still go out rather
    /// than leave joiners waiting for its next hello. Other replies are returned as they are.
    private func exchangeThroughRateLimit(_ request: WireMessage) async throws -> WireMessage {
        var attempt = 0
        while true {
            let reply = try await connection.exchange(request)
            guard reply.type == "error", reply.code == ErrorCode.rateLimited.rawValue, attempt < Self.rateLimitedAttempts else {
                return reply
            }
            try await Task.sleep(for: .milliseconds(100 << attempt))
            attempt += 1
        }
    }

    /// Retries of a rate-limited request, 0.1 s after the first and doubling (≈ 6 s in all).
    static let rateLimitedAttempts = 6

    private func interpret(_ reading: RoomState.Reading) -> Event? {
        let event: RoomState.Event
        switch reading {
        case .name(let change):
            return change.inForce ? .named(seq: change.seq, from: change.from, name: change.name, previous: change.previous) : nil
        case .file(let shared): return .file(seq: shared.seq, from: shared.from, ts: shared.ts, file: shared.file)
        case .event(let read): event = read
        }
        switch event {
        case .chat(let seq, let from, _, let ts, let text), .duplicate(let seq, let from, _, let ts, let text):
            return detailedMessages ? .chat(seq: seq, from: from, ts: ts, text: text) : .message(seq: seq, from: from, text: text)
        case .rotated(let seq, let epoch): return .rotated(seq: seq, epoch: epoch)
        case .rejected(let seq, let reason): return .rejected(seq: seq, reason: reason)
        }
    }
}

private extension RoomState.Reading {
    var isDuplicate: Bool {
        switch self {
        case .event(.duplicate): true
        case .name(let change): change.duplicate
        case .file(let shared): shared.duplicate
        default: false
        }
    }
}

/// Sealed chunks as they arrive from concurrent requests, each at its index.
private final class ChunkTable: Sendable {
    private let table: NIOLockedValueBox<[[UInt8]?]>
    init(count: Int) { table = NIOLockedValueBox(Array(repeating: nil, count: count)) }
    func set(_ index: Int, _ data: [UInt8]) { table.withLockedValue { $0[index] = data } }
    /// The chunks in order, up to the first one missing.
    var chunks: [[UInt8]] { table.withLockedValue { Array($0.prefix { $0 != nil }.compactMap { $0 }) } }
}

/// A count of requests allowed in flight; `acquire` waits (in order) for a free one.
private final class RequestSlots: Sendable {
    private let state: NIOLockedValueBox<(free: Int, waiting: [CheckedContinuation<Void, Never>])>
    init(count: Int) { state = NIOLockedValueBox((count, [])) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLockedValue { state in
                guard state.free > 0 else {
                    state.waiting.append(continuation)
                    return false
                }
                state.free -= 1
                return true
            }
            if granted { continuation.resume() }
        }
    }

    /// Hands the slot to the first waiter, or frees it.
    func release() {
        let next = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.free += 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
