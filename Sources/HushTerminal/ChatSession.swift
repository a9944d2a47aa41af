import Crypto
import Foundation
import HushClient
import HushProtocol
import ThemisKit

/// Why a terminal command stopped, in words for the user.
public struct ChatError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One room of the key store, live: a `RoomClient` kept in step with its record. Every change
/// that matters (keys, members, invites, join requests) is written to the store at once;
/// counters and the last seen message at most once a second (and on `flush`).
public actor ChatSession {
    public nonisolated let store: KeyStoreFile
    public nonisolated let client: RoomClient
    public private(set) var record: StoredRoom
    public nonisolated let me: String
    private var sinceRotation: Int
    private var rotating = false
    private var dirty = false
    private var lastWrite = ContinuousClock.now
    /// Messages shown so far (history and pushes overlap).
    private var shownThrough = 0
    /// This client's own sends and rotations, shown when made: skipped when they come back.
    private var ownSeqs: Set<Int> = []
    /// The outbox is being sent, and who waits for that to end.
    private var sendingQueued = false
    private var queueWaiters: [CheckedContinuation<Void, Never>] = []
    private var deliveredHandler: (@Sendable (StoredRoom.QueuedLine, Int, Bool) async -> Void)?

    init(store: KeyStoreFile, client: RoomClient, record: StoredRoom, summary: RoomSummary?) async {
        self.store = store
        self.client = client
        self.record = record
        me = await client.key
        sinceRotation = summary?.sinceRotation ?? 0
        shownThrough = record.lastSeq
        await client.useDetailedMessages()
        // Invites made by another process of this key store are admitted too.
        await client.findInvitesWith { [store, room = record.room] in
            ((try? store.load().find(room))?.invites ?? []).map(\.token.bytes)
        }
    }

    /// Owner of a room whose new members read only what comes after they join (§6.6): the
    /// write-ahead of the rotation its client makes before each joiner's first answer (the key
    /// saved as every rotation here). Nil for other rooms.
    static func rotationBeforeAnswering(_ record: StoredRoom, store: KeyStoreFile) -> RoomClient.RotationPrepare? {
        guard record.role == .owner, record.history == .joined else { return nil }
        return { [room = record.room] epoch, key in try savePending(store: store, room: room, epoch: epoch, key: key) }
    }

    /// What new members of this room may read (§6.6).
    public var historyForNewMembers: HistoryForNewMembers { record.history ?? .rotation }

    public var room: String { record.room }
    public var isOwner: Bool { record.role == .owner }

    // MARK: creating and opening

    /// `hush chat new`: a room owned by a fresh key, saved before anything is shown.
    public static func create(store: KeyStoreFile, name: String, serverURL: String, rotateEvery: Int?,
                              history: HistoryForNewMembers = .rotation) async throws -> ChatSession {
        let server = try await ServerInfo.fetch(serverURL)
        if let existing = try? store.load(), existing.rooms.contains(where: { $0.name == name }) {
            throw ChatError("a room named \(name) already exists in this key store")
        }
        let client = try await RoomClient.create(server: server, rotateEvery: rotateEvery)
        let state = await client.state
        var record = StoredRoom(room: state.room, name: name, server: server.baseURL, serverKey: server.wellKnown.publicKey,
                                role: .owner, status: .active, privateKey: state.me, owner: KeyID.json(state.owner),
                                rotateEvery: rotateEvery ?? Limits.standard.defaultRotateEvery)
        record.absorb(state)
        record.history = history == .joined ? .joined : nil
        await client.rotateBeforeAnsweringJoiners(prepare: rotationBeforeAnswering(record, store: store))
        try store.update(create: true) { (store: inout KeyStore) throws in
            guard !store.rooms.contains(where: { $0.name == name }) else {
                throw ChatError("a room named \(name) already exists in this key store")
            }
            store.upsert(record)
        }
        return await ChatSession(store: store, client: client, record: record, summary: nil)
    }

    /// Reopens a room of the key store by local name or id: pinned server key, saved keys,
    /// invites and join requests; finishes a rotation that was under way; an owner rotates
    /// at once when the room's policy says so.
    public static func open(store: KeyStoreFile, room nameOrID: String) async throws -> ChatSession {
        var record = try store.load().find(nameOrID)
        switch record.status {
        case .joining: throw ChatError("the join of \(record.name) is not complete yet: run `hush chat join` with its link again")
        case .closed: throw ChatError("\(record.name) is closed (you were removed, left, or it was deleted)")
        case .active: break
        }
        let server = try await ServerInfo.fetch(record.server)
        guard server.wellKnown.publicKey == record.serverKey else {
            throw ChatError("the server at \(record.server) now has another key (\(server.fingerprint)); refusing to go on")
        }
        let opened: (client: RoomClient, summary: RoomSummary?)
        do {
            opened = try await RoomClient.resumeWithSummary(try record.roomState(), on: server, inviteTokens: record.openInviteTokens,
                                                            joinRequests: record.liveJoinRequests,
                                                            rotateBeforeAnsweringJoiners: rotationBeforeAnswering(record, store: store))
        } catch let error as HushError where error.code == .removed {
            try? markClosed(store: store, room: record.room)
            throw ChatError("you were removed from \(record.name) (or left it); it is closed now")
        }
        var (client, summary) = opened
        guard let summary else {
            await client.disconnect()
            try? markClosed(store: store, room: record.room)
            throw ChatError("the server no longer has \(record.name) (deleted?); it is closed now")
        }
        // A rotation this key sent just before a crash: the key was saved before sending.
        if let pending = record.pendingRotation, summary.epoch == pending.epoch, record.keys[String(pending.epoch)] == nil {
            record.keys[String(pending.epoch)] = pending.key
            record.epoch = pending.epoch
            record.pendingRotation = nil
            await client.disconnect()
            (client, _) = try await RoomClient.resumeWithSummary(try record.roomState(), on: server, inviteTokens: record.openInviteTokens,
                                                                 joinRequests: record.liveJoinRequests,
                                                                 rotateBeforeAnsweringJoiners: rotationBeforeAnswering(record, store: store))
        }
        record.rotateEvery = summary.rotateEvery
        let session = await ChatSession(store: store, client: client, record: record, summary: summary)
        try await session.persist(force: true)
        if record.role == .owner, summary.sinceRotation >= summary.rotateEvery { try await session.rotate() }
        return session
    }

    static func markClosed(store: KeyStoreFile, room: String) throws {
        try store.update { (store: inout KeyStore) throws in
            var record = try store.find(room)
            record.status = .closed
            store.upsert(record)
        }
    }

    /// `hush chat join`: runs or resumes a join. `progress` hears "waiting for the owner".
    public static func join(store: KeyStoreFile, link: String, name: String?, timeout: Duration?,
                            waiting: @escaping @Sendable () -> Void) async throws -> ChatSession {
        let (pageURL, invite) = try InviteLink.parse(link)
        let server = try await ServerInfo.fetch(invite.relayURL(pageURL: pageURL), expectedFingerprint: invite.server)
        // Reuse a saved join of this very invite (same token), else start a new one.
        let record: StoredRoom = try store.update(create: true) { (store: inout KeyStore) throws -> StoredRoom in
            if let existing = store.rooms.first(where: { $0.room == invite.room }) {
                guard existing.status == .joining, existing.join?.invite.token == invite.token else {
                    throw ChatError("this key store already holds room \(existing.name) (\(existing.status.rawValue))")
                }
                return existing
            }
            let key = ThemisPrivateKey()
            let flow = try JoinerFlow(invite: invite, me: key)
            var record = StoredRoom(room: invite.room, name: store.freeName(name ?? invite.roomName ?? "room-" + String(invite.room.prefix(6))),
                                    server: server.baseURL, serverKey: server.wellKnown.publicKey, role: .member,
                                    status: .joining, privateKey: key, owner: invite.owner, rotateEvery: Limits.standard.defaultRotateEvery)
            record.join = StoredRoom.PendingJoin(invite: invite, joiningKey: Base64Key(flow.joiningKeySecret))
            record.history = invite.historyForNewMembers == .joined ? .joined : nil
            store.upsert(record)
            return record
        }
        guard let pending = record.join else { throw ChatError("the saved join is incomplete") }
        let flow = try JoinerFlow(invite: pending.invite, me: try record.key, joiningKey: pending.joiningKey.symmetricKey)
        let accepted = record.keys.isEmpty ? nil : try record.roomState()
        let client: RoomClient
        do {
            client = try await RoomClient.join(flow: flow, server: server, accepted: accepted, timeout: timeout) { progress in
                switch progress {
                case .requested: waiting()
                case .accepted(let state):
                    // Keep the granted key at once: the join can then finish after a restart.
                    try? store.update { (store: inout KeyStore) throws in
                        var saved = try store.find(state.room)
                        saved.absorb(state)
                        store.upsert(saved)
                    }
                }
            }
        } catch let error as HushError where [.inviteUsed, .unknownInvite, .inviteExpired].contains(error.code) {
            try? store.update { (store: inout KeyStore) in store.rooms.removeAll { $0.room == invite.room && $0.status == .joining } }
            throw ChatError("the invite cannot be used: \(error.message.isEmpty ? error.code.rawValue : error.message) (\(error.code.rawValue))")
        }
        var joined = record
        joined.status = .active
        joined.join = nil
        let state = await client.state
        joined.absorb(state, memberSignatures: await Self.signatures(client))
        try store.update { (store: inout KeyStore) throws in
            var saved = (try? store.find(joined.room)) ?? joined
            saved.status = .active
            saved.join = nil
            saved.absorb(state, memberSignatures: joined.members)
            store.upsert(saved)
        }
        return await ChatSession(store: store, client: client, record: joined, summary: nil)
    }

    static func signatures(_ client: RoomClient) async -> [MemberEntry] {
        await client.memberSignatures.map { MemberEntry(key: $0.key, signature: $0.value) }
    }

    // MARK: actions

    /// What became of a line: committed, or waiting in the outbox for the connection.
    public enum Sending: Sendable, Equatable {
        case sent
        case queued
    }

    /// Sends a line: it goes into the room's outbox in the key store first (with the
    /// `messageId` all its retries reuse), then the outbox is sent in order. When the
    /// connection is gone the line stays queued and goes out, once, after the next connect
    /// (`stayConnected`, or the next `send`/`open` of this room). A room or server out of space
    /// refuses it at once: said plainly, since retrying before old messages expire is useless.
    /// An owner rotates when the room's count is reached.
    @discardableResult
    public func send(_ text: String) async throws -> Sending {
        let line = StoredRoom.QueuedLine(id: Base64Bytes(RoomPayload.randomBytes(16)), text: text,
                                         at: Int64(Date().timeIntervalSince1970 * 1000))
        try store.update { (store: inout KeyStore) throws in
            var saved = try store.find(self.record.room)
            guard saved.enqueue(line) else {
                throw ChatError(line.text.isEmpty || !ChatMessage.isSendable(line.text)
                    ? "not sent: a message is 1 to \(ChatMessage.maxTextLength) characters"
                    : "not sent: \(StoredRoom.maxOutbox) messages already wait for the connection; wait until they are sent")
            }
            store.upsert(saved)
        }
        try await sendQueued()
        // Still in the outbox: the connection is gone (a refusal would have thrown).
        return try store.load().find(record.room).outbox?.contains(where: { $0.id == line.id }) == true ? .queued : .sent
    }

    /// Hears each queued line once the server committed it (with `shown` true when it had
    /// already been shown, read back from history after a reconnect).
    public func onDelivered(_ handler: @escaping @Sendable (_ line: StoredRoom.QueuedLine, _ seq: Int, _ shown: Bool) async -> Void) {
        deliveredHandler = handler
    }

    /// Sends the room's outbox, oldest line first, until it is empty or the connection is
    /// gone. A line the server refuses is taken out and the refusal thrown; the lines after
    /// it stay queued for the next call. One sender at a time: a second caller waits for the
    /// running one, which also sends the lines queued meanwhile.
    public func sendQueued() async throws {
        if sendingQueued {
            await withCheckedContinuation { queueWaiters.append($0) }
            return
        }
        sendingQueued = true
        defer {
            sendingQueued = false
            for waiter in queueWaiters { waiter.resume() }
            queueWaiters = []
        }
        while let line = try store.load().find(record.room).outbox?.first {
            let seq: Int
            do {
                seq = try await client.send(line.text, messageID: line.id.bytes, reserveCounter: { next in try await self.reserveCounter(next) })
            } catch where Self.leavesQueued(error) {
                return
            } catch {
                try dequeue(line.id)
                throw Self.refusal(error)
            }
            try dequeue(line.id)
            let shown = seq <= shownThrough && !ownSeqs.contains(seq)
            try await madeOwnMessage(seq)
            await deliveredHandler?(line, seq, shown)
        }
    }

    /// Whether a failed send leaves its line queued: the connection, not the server, failed
    /// (or the person quit mid-send), so the same `messageId` goes again later.
    static func leavesQueued(_ error: any Error) -> Bool {
        switch error {
        case let error as ClientError: error == .connectionClosed || error == .timedOut
        case is HushError, is ThemisError, is ChatError, is KeyStoreError: false
        default: true  // the transport (NIO, WebSocket) or a cancellation
        }
    }

    static func refusal(_ error: any Error) -> any Error {
        switch (error as? HushError)?.code {
        case .roomFull: ChatError("not sent: the room is full; the server stores nothing more here until old messages expire (room_full)")
        case .serverFull: ChatError("not sent: the server is out of storage; try again later (server_full)")
        default: error
        }
    }

    private func dequeue(_ id: Base64Bytes) throws {
        try store.update { (store: inout KeyStore) throws in
            var saved = try store.find(self.record.room)
            saved.dequeue(id: id)
            store.upsert(saved)
        }
    }

    /// This key's message at `seq` counts towards the rotation, and is saved as shown.
    private func madeOwnMessage(_ seq: Int) async throws {
        madeOwn(seq)
        sinceRotation += 1
        dirty = true
        if isOwner, sinceRotation >= record.rotateEvery {
            try await rotate()
        } else {
            try await persist(force: true)
        }
    }

    /// `hush chat send --file`, `/file`: shares a local file of at most 25 MiB under its own
    /// name made a file name (§6.8), with the media type of its extension.
    public func sendFile(path: String) async throws -> (seq: Int, name: String, type: String, size: Int) {
        let bytes: [UInt8]
        do {
            bytes = try BoundedFile.read(path, maxBytes: RoomFile.maxSize)
        } catch .tooLarge {
            throw ChatError("\(path) is larger than 25 MiB (\(RoomFile.maxSize) bytes), the most a file may be")
        }
        let name = RoomFile.sanitizedName(URL(fileURLWithPath: path).lastPathComponent)
        let type = RoomFile.mediaType(forName: name)
        return (try await sendFile(bytes, name: name, type: type), name, type, bytes.count)
    }

    /// Shares a file (docs/PROTOCOL.md §6.8): its chunks are stored, then its message goes out
    /// like a line (`send`), counters reserved the same way. Returns the file message's seq.
    @discardableResult
    public func sendFile(_ bytes: [UInt8], name: String, type: String) async throws -> Int {
        let seq: Int
        do {
            seq = try await client.sendFile(bytes, name: name, type: type, reserveCounter: { next in try await self.reserveCounter(next) }).seq
        } catch let error as HushError where [.roomFull, .serverFull, .limitReached].contains(error.code) {
            throw ChatError("file not sent: \(Self.fileRefusal(error.code)) (\(error.code.rawValue))")
        }
        try await madeOwnMessage(seq)
        return seq
    }

    static func fileRefusal(_ code: ErrorCode) -> String {
        switch code {
        case .roomFull: "the room is full; the server stores nothing more here until old messages expire"
        case .serverFull: "the server is out of storage; try again later"
        default: "too many files of yours are waiting to be sent in this room; they expire within 24 hours"
        }
    }

    /// The file shared by the message at `seq`, read again from history: nil when there is no
    /// such message this key may read, or it is not a file.
    public func sharedFile(at seq: Int) async throws -> RoomFile? {
        guard seq >= 1 else { return nil }
        for event in try await client.history(after: seq - 1) {
            if case .file(seq, _, _, let file) = event { return file }
        }
        return nil
    }

    /// `hush chat save`, `/save`: fetches the file of the message at `seq`, verifies it and
    /// writes it whole into `folder` under a free name (`SavedFile`), or writes nothing.
    public func saveFile(seq: Int, in folder: URL) async throws -> (url: URL, file: RoomFile) {
        guard let file = try await sharedFile(at: seq) else { throw ChatError("message #\(seq) is not a file you can read in this room") }
        return (try SavedFile.write(try await download(file), name: file.name, in: folder), file)
    }

    /// Fetches and verifies a shared file: all its bytes, or an error and nothing.
    public func download(_ file: RoomFile) async throws -> [UInt8] {
        do {
            return try await client.download(file)
        } catch let error as FileError {
            throw ChatError("file refused: \(error); nothing was saved")
        } catch let error as HushError where error.code == .unknownFile {
            throw ChatError("the server has no such file for you (expired, deleted, or shared before you joined) (unknown_file)")
        }
    }

    /// Sets (or changes) this key's display name in the room (docs/PROTOCOL.md §6.7): trimmed,
    /// NFC, refused when empty, over 64 characters or holding a control character. Returns the
    /// name as sent.
    @discardableResult
    public func setName(_ input: String) async throws -> String {
        guard let name = RoomState.canonicalName(input) else {
            throw ChatError("a name is 1 to 64 characters (after trimming spaces), without control or bidi characters")
        }
        do {
            let seq = try await client.setName(name, reserveCounter: { next in try await self.reserveCounter(next) })
            madeOwn(seq)
        } catch let error as HushError where error.code == .roomFull || error.code == .serverFull {
            throw ChatError("name not sent: the room or the server is out of space (\(error.code.rawValue))")
        }
        sinceRotation += 1
        try await persist(force: true)
        return name
    }

    /// A member was admitted. A joiner reads history only from the last rotation before it
    /// joined, so this key's name, when its message was sealed under an older epoch, is sent
    /// again now (`RoomState.owesNameToJoiners`): the new member sees who is who, the owner
    /// (who invited them) included. Nothing when this key has no name.
    private func announceName(to member: String) async {
        let state = await client.state
        guard member != me, state.owesNameToJoiners, let name = state.name(of: me) else { return }
        _ = try? await setName(name)
    }

    /// Owner: a new room key now. The key is saved before the rotation is sent. When another
    /// client of this owner (a running `open`, a second process) rotated first, the client has
    /// caught up with that rotation and nothing is left to do: returns 0.
    @discardableResult
    public func rotate() async throws -> Int {
        guard isOwner else { throw ChatError("only the room's owner can rotate its key") }
        guard !rotating else { return 0 }
        rotating = true
        defer { rotating = false }
        do {
            let seq = try await client.rotate(prepare: { epoch, key in try await self.savePending(epoch: epoch, key: key) })
            sinceRotation = 0
            madeOwn(seq)
            try await persist(force: true)
            return seq
        } catch let error as HushError where error.code == .epochMismatch {
            try? clearPending()
            sinceRotation = 0
            try await persist(force: true)
            return 0
        } catch {
            try? clearPending()
            throw error
        }
    }

    /// Write-ahead for the message counter: the counter a message uses is saved, under the
    /// store's lock, before the message leaves, so neither a crash nor a second `hush chat send`
    /// process can use it again (receivers would drop the second message as a replay).
    private func reserveCounter(_ next: Int) throws -> Int {
        try store.update { (store: inout KeyStore) throws -> Int in
            var saved = try store.find(self.record.room)
            saved.sentCounter = max(saved.sentCounter + 1, next)
            store.upsert(saved)
            return saved.sentCounter
        }
    }

    /// This client's own send or rotation at `seq`, shown when made: it counts as shown only
    /// when nothing before it is left to show, so the next `read` still shows what others sent
    /// meanwhile.
    private func madeOwn(_ seq: Int) {
        ownSeqs.insert(seq)
        if seq == shownThrough + 1 { shownThrough = seq }
    }

    /// Whether an event at `seq` is new to show. Events reach this client in sequence order,
    /// so a high-water mark finds what was shown; this client's own sends and rotations were
    /// shown when made and are skipped once, without hiding anything queued before them.
    private func isNew(_ seq: Int) -> Bool {
        let own = ownSeqs.remove(seq) != nil
        defer {
            shownThrough = max(shownThrough, seq)
            // Own sends right after it were shown when made.
            while ownSeqs.contains(shownThrough + 1) { shownThrough += 1 }
            if ownSeqs.count > 1024 { ownSeqs = ownSeqs.filter { $0 > shownThrough } }
        }
        return seq > shownThrough && !own
    }

    private func savePending(epoch: Int, key: SymmetricKey) throws {
        record.pendingRotation = StoredRoom.PendingRotation(epoch: epoch, key: Base64Key(key))
        try Self.savePending(store: store, room: record.room, epoch: epoch, key: key)
    }

    /// Write-ahead of a rotation: its key is in the key store before the rotation is sent.
    static func savePending(store: KeyStoreFile, room: String, epoch: Int, key: SymmetricKey) throws {
        try store.update { (store: inout KeyStore) throws in
            var saved = try store.find(room)
            saved.pendingRotation = StoredRoom.PendingRotation(epoch: epoch, key: Base64Key(key))
            store.upsert(saved)
        }
    }

    private func clearPending() throws {
        record.pendingRotation = nil
        try store.update { (store: inout KeyStore) throws in
            var saved = try store.find(self.record.room)
            saved.pendingRotation = nil
            store.upsert(saved)
        }
    }

    /// Owner: a one-time invite link, its token saved.
    public func invite(expiresIn seconds: Int64 = 24 * 3600, page: WebOrigin? = nil) async throws -> String {
        guard isOwner else { throw ChatError("only the room's owner can invite") }
        let link = try await client.invite(expiresIn: seconds, roomName: record.name, history: historyForNewMembers, page: page)
        let token = try InviteLink.parse(link).invite.token.bytes
        record.addInvite(token: token, expiresAt: Int64(Date().timeIntervalSince1970) + seconds)
        try await persist(force: true)
        return link
    }

    /// Owner: the room's unexpired invites and the joins through them.
    public func openInvites() async throws -> [InviteSummary] {
        guard isOwner else { throw ChatError("only the room's owner can list invites") }
        return try await client.openInvites()
    }

    /// Owner: ends the invite whose short id (`Format.inviteID`) starts with `prefix`, and any
    /// join through it. Returns the invite's short id.
    public func revokeInvite(prefix: String) async throws -> String {
        let matches = try await openInvites().filter { Format.inviteID($0.inviteId.bytes).hasPrefix(prefix) }
        guard !prefix.isEmpty, matches.count == 1, let invite = matches.first else {
            throw ChatError(matches.isEmpty ? "no open invite starts with \(prefix) (see `hush chat invites`)"
                                            : "\(prefix) matches \(matches.count) invites: give more of the id")
        }
        // The token stays in the key store until it expires: the server refuses any join with it.
        try await client.revokeInvite(invite.inviteId.bytes)
        return Format.inviteID(invite.inviteId.bytes)
    }

    /// Owner: removes the member whose fingerprint starts with `prefix`, then rotates with
    /// per-member wraps. Returns the removed key.
    public func remove(prefix: String) async throws -> String {
        guard isOwner else { throw ChatError("only the room's owner can remove members") }
        let member: String
        switch LineCommand.resolve(member: prefix, among: await client.members.sorted()) {
        case .success(let key): member = key
        case .failure(let why): throw ChatError(why.description)
        }
        do {
            try await client.remove(member, prepare: { epoch, key in try await self.savePending(epoch: epoch, key: key) })
        } catch {
            try? clearPending()
            throw error
        }
        sinceRotation = 0
        try await persist(force: true)
        return member
    }

    /// The owner and the members, with fingerprints.
    public func members() async -> [(key: String, fingerprint: String, role: String)] {
        [(record.owner, Format.fingerprint(ofKey: record.owner), "owner")]
            + (await client.members.sorted()).map { ($0, Format.fingerprint(ofKey: $0), "member") }
    }

    /// The room as this key reads it now: who is called what, for display.
    public var roomState: RoomState { get async { await client.state } }

    /// Messages since the last one seen (or, with `all`, everything readable).
    public func catchUp(all: Bool = false) async throws -> [RoomClient.Event] {
        let events = try await client.history(after: all ? 0 : record.lastSeq)
        var shown: [RoomClient.Event] = []
        for event in events {
            if !all, let seq = Self.seq(of: event), !isNew(seq) { continue }
            shown.append(event)
        }
        dirty = true
        try await persist(force: true)
        return shown
    }

    /// Digests a live event: nil for a duplicate of something already shown; an owner rotates
    /// on `rotation_due`. Key-relevant events are saved at once.
    public func handle(_ event: RoomClient.Event) async -> RoomClient.Event? {
        if let seq = Self.seq(of: event), !isNew(seq) { return nil }
        dirty = true
        switch event {
        case .chat, .message, .file:
            sinceRotation += 1
            try? await persist(force: false)
        case .named:
            sinceRotation += 1
            try? await persist(force: true)
        case .memberJoined(let key):
            try? await persist(force: true)
            await announceName(to: key)
        case .rotationDue:
            if isOwner { _ = try? await rotate() }
        case .memberLeft, .memberGone:
            // A departed key holds the current room key: rotate (wrapped) at once, so that the
            // members' sends held by `rotation_pending` go out (the web owner does the same).
            try? await persist(force: true)
            if isOwner { _ = try? await rotate() }
        case .removed, .roomDeleted:
            try? await persist(force: true)
            try? Self.markClosed(store: store, room: record.room)
        default:
            try? await persist(force: true)
        }
        return event
    }

    static func seq(of event: RoomClient.Event) -> Int? {
        switch event {
        case .chat(let seq, _, _, _), .message(let seq, _, _), .rotated(let seq, _), .rejected(let seq, _), .named(let seq, _, _, _),
             .file(let seq, _, _, _): seq
        default: nil
        }
    }

    /// Writes what is not saved yet.
    public func flush() async throws {
        if dirty { try await persist(force: true) }
    }

    /// Folds the live state into the store (under its lock, merged with other writers).
    public func persist(force: Bool) async throws {
        if !force, ContinuousClock.now - lastWrite < .seconds(1) { return }
        let state = await client.state
        let signatures = await Self.signatures(client)
        let requests = Array(await client.joinRequests.values)
        let completed = await client.completedInvites
        var record = self.record
        record.absorb(state, memberSignatures: signatures, shownThrough: shownThrough)
        record.absorb(joinRequests: requests, completed: completed)
        let shownThrough = shownThrough
        let now = Int64(Date().timeIntervalSince1970)
        let merged: StoredRoom = try store.update { (store: inout KeyStore) throws -> StoredRoom in
            var saved = (try? store.find(record.room)) ?? record
            saved.absorb(state, memberSignatures: signatures, shownThrough: shownThrough)
            for invite in record.invites { saved.addInvite(token: invite.token.bytes, expiresAt: invite.expiresAt) }
            saved.absorb(joinRequests: requests, completed: completed)
            saved.rotateEvery = record.rotateEvery
            saved.pruneInvites(now: now)
            store.upsert(saved)
            return saved
        }
        self.record = merged
        dirty = false
        lastWrite = .now
    }

    public func close() async {
        try? await flush()
        await client.disconnect()
    }

    /// Keeps a follower connected: when its connection ends (the server restarted, the node
    /// behind a proxy went away), connects again, backing off from 1 s to 30 s, and reads what
    /// was committed meanwhile, which comes through `client.events` like any push. `notice`
    /// says what happens. Returns only when cancelled.
    public func stayConnected(notice: @escaping @Sendable (String) -> Void) async {
        while !Task.isCancelled {
            await client.rawConnection.waitUntilClosed()
            guard !Task.isCancelled else { return }
            notice("connection lost; reconnecting…")
            var delay: Duration = .seconds(1)
            while !Task.isCancelled {
                do {
                    try await client.reconnect()
                    try await client.refresh()
                    notice("reconnected")
                    do {
                        try await sendQueued()
                    } catch {
                        notice("! \(error)")
                    }
                    break
                } catch {
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(30))
                }
            }
        }
    }
}
