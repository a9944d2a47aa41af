import Crypto
import Foundation
import HushProtocol
import NIOConcurrencyHelpers
import ThemisKit
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: model

/// Everything a user's terminal client keeps between runs: one record per room. Serialised as
/// JSON and sealed as a whole with Secure Cell passphrase mode (`KeyStoreFile`).
public struct KeyStore: Codable, Sendable, Equatable {
    public static let version = 1
    public var version = KeyStore.version
    public var rooms: [StoredRoom] = []

    public init() {}

    /// A room by local name or room id.
    public func find(_ nameOrID: String) throws(KeyStoreError) -> StoredRoom {
        if let byID = rooms.first(where: { $0.room == nameOrID }) { return byID }
        guard let byName = rooms.first(where: { $0.name == nameOrID }) else { throw .unknownRoom(nameOrID) }
        return byName
    }

    public mutating func upsert(_ record: StoredRoom) {
        if let index = rooms.firstIndex(where: { $0.room == record.room }) { rooms[index] = record } else { rooms.append(record) }
    }

    /// A local name not used yet: `name`, else `name-2`, `name-3`, …
    public func freeName(_ name: String) -> String {
        var candidate = name
        var index = 2
        while rooms.contains(where: { $0.name == candidate }) {
            candidate = "\(name)-\(index)"
            index += 1
        }
        return candidate
    }

    /// Checks what JSON decoding cannot: versions, unique ids and names, key sizes, parseable keys.
    public func validate() throws(KeyStoreError) {
        guard version == KeyStore.version else { throw .corrupt("unsupported key store version \(version)") }
        guard Set(rooms.map(\.room)).count == rooms.count else { throw .corrupt("a room id appears twice") }
        guard Set(rooms.map(\.name)).count == rooms.count else { throw .corrupt("a room name appears twice") }
        for room in rooms { try room.validate() }
    }
}

/// One room as this user's key knows it.
public struct StoredRoom: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable { case owner, member }
    public enum Status: String, Codable, Sendable {
        /// A member whose join is still waiting for the owner.
        case joining
        case active
        /// Removed by the owner, left, or the room was deleted: kept for its history only.
        case closed
    }

    public struct Invite: Codable, Sendable, Equatable {
        public var token: Base64Bytes
        public var expiresAt: Int64
        /// The joiner was admitted; kept until it expires so that concurrent writers agree.
        public var used: Bool
    }

    public struct JoinRequestRecord: Codable, Sendable, Equatable {
        public var inviteId: Base64Bytes
        public var key: String
        public var joiningKey: Base64Bytes
    }

    /// A joiner's saved join: the invite and `J` (§6.2).
    public struct PendingJoin: Codable, Sendable, Equatable {
        public var invite: InviteLink
        public var joiningKey: Base64Key
        public init(invite: InviteLink, joiningKey: Base64Key) {
            self.invite = invite
            self.joiningKey = joiningKey
        }
    }

    public struct Accepted: Codable, Sendable, Equatable {
        public var from: String
        public var counter: Int
        public var seq: Int
    }

    /// A sender's counters folded out of the replay window (`RoomState.ReplayFloor`).
    public struct StoredReplayFloor: Codable, Sendable, Equatable {
        public var from: String
        public var counter: Int
        public var seq: Int
    }

    public struct StoredName: Codable, Sendable, Equatable {
        public var key: String
        public var name: String
        public var seq: Int
        /// The epoch its message was sealed under; absent in stores written before.
        public var epoch: Int?
    }

    /// A line written in the terminal and not yet committed by the server: saved before it is
    /// first sent, with the `messageId` every retry of it reuses (docs/PROTOCOL.md §4.4), so a
    /// lost connection, a crash or a quit neither loses nor doubles it (the browser's outbox).
    public struct QueuedLine: Codable, Sendable, Equatable {
        public var id: Base64Bytes
        public var text: String
        public var at: Int64
        public init(id: Base64Bytes, text: String, at: Int64) {
            self.id = id
            self.text = text
            self.at = at
        }
    }

    public struct PendingRotation: Codable, Sendable, Equatable {
        public var epoch: Int
        public var key: Base64Key
        public init(epoch: Int, key: Base64Key) {
            self.epoch = epoch
            self.key = key
        }
    }

    public var room: String
    public var name: String
    public var server: String
    /// The pinned server key (b64 container).
    public var serverKey: String
    public var role: Role
    public var status: Status
    /// This room's own key pair (private container).
    public var privateKey: Base64Bytes
    public var owner: String
    public var epoch: Int
    /// Room keys by epoch (decimal string → 32 bytes).
    public var keys: [String: Base64Key]
    public var members: [MemberEntry]
    public var lastSeq: Int
    public var sentCounter: Int
    /// The newest accepted counters of each sender (at most `RoomState.defaultReplayWindow`).
    public var accepted: [Accepted]
    /// Each sender's older counters, folded (docs/PROTOCOL.md §6.1). Absent in stores written
    /// before the window, whose `accepted` is folded on the next save.
    public var replayFloors: [StoredReplayFloor]?
    /// Who is called what (docs/PROTOCOL.md §6.7): history is read only after `lastSeq`, so the
    /// names read before are kept here. Absent in stores written before names.
    public var names: [StoredName]?
    public var rotateEvery: Int
    public var invites: [Invite]
    public var joinRequests: [JoinRequestRecord]
    public var pendingRotation: PendingRotation?
    /// Lines waiting to be sent, oldest first (at most `maxOutbox`). Absent in stores written
    /// before the outbox.
    public var outbox: [QueuedLine]?
    /// What new members may read (§6.6); absent: the default, `rotation`.
    public var history: HistoryForNewMembers?
    public var join: PendingJoin?
    public var createdAt: Int64

    public init(room: String, name: String, server: String, serverKey: String, role: Role, status: Status,
                privateKey: ThemisPrivateKey, owner: String, rotateEvery: Int) {
        self.room = room
        self.name = name
        self.server = server
        self.serverKey = serverKey
        self.role = role
        self.status = status
        self.privateKey = Base64Bytes(privateKey.containerBytes)
        self.owner = owner
        epoch = 0
        keys = [:]
        members = []
        lastSeq = 0
        sentCounter = 0
        accepted = []
        self.rotateEvery = rotateEvery
        invites = []
        joinRequests = []
        createdAt = Int64(Date().timeIntervalSince1970)
    }

    func validate() throws(KeyStoreError) {
        let label = "room \(name)"
        guard !room.isEmpty, room.count <= 64, !name.isEmpty, name.count <= 200 else { throw .corrupt("\(label): bad id or name") }
        guard (try? ThemisPrivateKey(containerBytes: privateKey.bytes)) != nil else { throw .corrupt("\(label): bad private key") }
        guard (try? KeyID.key(fromJSON: owner)) != nil, (try? KeyID.key(fromJSON: serverKey)) != nil else {
            throw .corrupt("\(label): bad owner or server key")
        }
        guard epoch >= 0, lastSeq >= 0, sentCounter >= 0, rotateEvery >= 1 else { throw .corrupt("\(label): negative counters") }
        for (epochText, key) in keys {
            guard let value = Int(epochText), value >= 0, key.symmetricKey.byteCount == RoomPayload.roomKeyBytes else { throw .corrupt("\(label): bad room key entry") }
        }
        if status != .joining, keys[String(epoch)] == nil { throw .corrupt("\(label): no key for the current epoch") }
        if status == .joining, join == nil { throw .corrupt("\(label): a join without its invite") }
        if let join, join.joiningKey.symmetricKey.byteCount != JoinerFlow.joiningKeyBytes { throw .corrupt("\(label): bad joining key") }
        if let pendingRotation, pendingRotation.key.symmetricKey.byteCount != RoomPayload.roomKeyBytes { throw .corrupt("\(label): bad pending rotation") }
        guard invites.allSatisfy({ $0.token.bytes.count == 32 }) else { throw .corrupt("\(label): bad invite token") }
        guard (replayFloors ?? []).allSatisfy({ $0.counter >= 0 && $0.seq >= 0 }) else { throw .corrupt("\(label): bad replay floor") }
        let queued = outbox ?? []
        guard queued.count <= Self.maxOutbox, queued.allSatisfy({ $0.id.bytes.count == 16 && Self.isQueueable($0.text) }) else {
            throw .corrupt("\(label): bad outbox")
        }
    }

    // MARK: the outbox

    /// Lines waiting at most, as in the browser: a person offline for long is told to wait.
    public static let maxOutbox = 100
    /// A line that may wait: one the client may send (`ChatMessage.maxTextLength`).
    static func isQueueable(_ text: String) -> Bool { !text.isEmpty && ChatMessage.isSendable(text) }

    /// Puts a line at the end of the outbox; false (and nothing changes) when it is full or the
    /// line is empty or too long.
    public mutating func enqueue(_ line: QueuedLine) -> Bool {
        var queued = outbox ?? []
        guard queued.count < Self.maxOutbox, line.id.bytes.count == 16, Self.isQueueable(line.text) else { return false }
        if !queued.contains(where: { $0.id == line.id }) { queued.append(line) }
        outbox = queued
        return true
    }

    /// Takes a line out of the outbox: it was committed, or refused for good.
    public mutating func dequeue(id: Base64Bytes) {
        outbox?.removeAll { $0.id == id }
        if outbox?.isEmpty == true { outbox = nil }
    }

    // MARK: to and from the live state

    public var key: ThemisPrivateKey { get throws { try ThemisPrivateKey(containerBytes: privateKey.bytes) } }
    public var ownerKey: ThemisPublicKey { get throws { try KeyID.key(fromJSON: owner) } }
    public var myKey: String { (try? key).map { KeyID.json($0.publicKey) } ?? "" }

    /// The live room state this record describes (members admitted again by their signatures).
    public func roomState() throws -> RoomState {
        var keys: [Int: SymmetricKey] = [:]
        for (epochText, key) in self.keys { if let value = Int(epochText) { keys[value] = key.symmetricKey } }
        var state = RoomState(room: room, owner: try ownerKey, me: try key, epoch: epoch, keys: keys, lastSeq: lastSeq,
                              sentCounter: sentCounter, accepted: acceptedTable, replayFloors: floorTable)
        for member in members { state.admit(key: member.key, signature: member.signature.bytes) }
        state.restoreNames(Dictionary((names ?? []).map { ($0.key, RoomState.Naming(name: $0.name, seq: $0.seq, epoch: $0.epoch)) },
                                      uniquingKeysWith: { $0.seq >= $1.seq ? $0 : $1 }))
        return state
    }

    private var acceptedTable: [String: [Int: Int]] {
        var table: [String: [Int: Int]] = [:]
        for entry in accepted { table[entry.from, default: [:]][entry.counter] = entry.seq }
        return table
    }

    private var floorTable: [String: RoomState.ReplayFloor] {
        Dictionary((replayFloors ?? []).map { ($0.from, RoomState.ReplayFloor(counter: $0.counter, seq: $0.seq)) },
                   uniquingKeysWith: { $0.counter >= $1.counter ? $0 : $1 })
    }

    /// Folds a live state into the record. Monotone, so that two processes of the same user
    /// writing one after the other never lose each other's keys or counters. `shownThrough`:
    /// the terminal showed everything up to it, so `lastSeq`, from which its next `read`
    /// starts, goes no further (the state's own sends can be past messages not shown yet).
    public mutating func absorb(_ state: RoomState, memberSignatures: [MemberEntry]? = nil, shownThrough: Int? = nil) {
        for (epoch, key) in state.keys { keys[String(epoch)] = Base64Key(key) }
        epoch = max(epoch, state.epoch)
        lastSeq = max(lastSeq, min(state.lastSeq, shownThrough ?? state.lastSeq))
        sentCounter = max(sentCounter, state.sentCounter)
        // The union of both, kept to the replay window as the live state keeps it.
        var table = acceptedTable
        var floors = floorTable
        for (from, counters) in state.acceptedCounters { table[from, default: [:]].merge(counters) { first, _ in first } }
        for (from, floor) in state.replayFloors {
            floors[from] = RoomState.ReplayFloor(counter: max(floors[from]?.counter ?? 0, floor.counter),
                                                 seq: max(floors[from]?.seq ?? 0, floor.seq))
        }
        accepted = []
        var storedFloors: [StoredReplayFloor] = []
        for from in table.keys.sorted() {
            let (kept, floor) = RoomState.folded(table[from] ?? [:], floor: floors[from], window: RoomState.defaultReplayWindow)
            accepted += kept.sorted { $0.key < $1.key }.map { Accepted(from: from, counter: $0.key, seq: $0.value) }
            if let floor { storedFloors.append(StoredReplayFloor(from: from, counter: floor.counter, seq: floor.seq)) }
        }
        for (from, floor) in floors where table[from] == nil {
            storedFloors.append(StoredReplayFloor(from: from, counter: floor.counter, seq: floor.seq))
        }
        replayFloors = storedFloors.isEmpty ? replayFloors : storedFloors.sorted { $0.from < $1.from }
        var named = Dictionary((names ?? []).map { ($0.key, $0) }, uniquingKeysWith: { $0.seq >= $1.seq ? $0 : $1 })
        for (key, naming) in state.names where named[key].map({ $0.seq < naming.seq }) ?? true {
            named[key] = StoredName(key: key, name: naming.name, seq: naming.seq, epoch: naming.epoch)
        }
        names = named.isEmpty ? names : named.values.sorted { $0.key < $1.key }
        if let memberSignatures {
            members = memberSignatures.filter { state.members.contains($0.key) }.sorted { $0.key < $1.key }
        }
        if let pending = pendingRotation, keys[String(pending.epoch)] != nil { pendingRotation = nil }
    }

    /// Owner: records an invite token.
    public mutating func addInvite(token: [UInt8], expiresAt: Int64) {
        guard !invites.contains(where: { $0.token.bytes == token }) else { return }
        invites.append(Invite(token: Base64Bytes(token), expiresAt: expiresAt, used: false))
    }

    /// Owner: folds the live join bookkeeping in (requests answered, invites used).
    public mutating func absorb(joinRequests live: [RoomClient.JoinRequest], completed: Set<[UInt8]>) {
        for request in live where !joinRequests.contains(where: { $0.inviteId.bytes == request.inviteID }) {
            joinRequests.append(JoinRequestRecord(inviteId: Base64Bytes(request.inviteID), key: request.joiner,
                                                  joiningKey: Base64Bytes(request.joiningKey)))
        }
        for index in invites.indices where completed.contains(InviteLink.inviteID(token: invites[index].token.bytes)) {
            invites[index].used = true
        }
        let used = Set(invites.filter(\.used).map { InviteLink.inviteID(token: $0.token.bytes) })
        joinRequests.removeAll { used.contains($0.inviteId.bytes) }
    }

    /// Drops invites past their expiry.
    public mutating func pruneInvites(now: Int64) {
        let expired = Set(invites.filter { $0.expiresAt < now }.map { InviteLink.inviteID(token: $0.token.bytes) })
        invites.removeAll { $0.expiresAt < now }
        joinRequests.removeAll { expired.contains($0.inviteId.bytes) }
    }

    public var openInviteTokens: [[UInt8]] { invites.filter { !$0.used }.map(\.token.bytes) }

    public var liveJoinRequests: [RoomClient.JoinRequest] {
        joinRequests.map { RoomClient.JoinRequest(inviteID: $0.inviteId.bytes, joiner: $0.key, joiningKey: $0.joiningKey.bytes) }
    }
}

public enum KeyStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case wrongPassphrase
    case corrupt(String)
    case tooLarge(Int)
    case missing(String)
    case io(String)
    case unknownRoom(String)

    public var description: String {
        switch self {
        case .wrongPassphrase: "cannot open the key store: wrong passphrase (or the file was altered). Nothing was changed."
        case .corrupt(let why): "the key store is damaged: \(why)"
        case .tooLarge(let size): "the key store is too large (\(size) bytes; the limit is \(KeyStoreFile.maxBytes)); refusing to read it"
        case .missing(let path): "no key store at \(path) (create a room with `hush chat new` or join one with `hush chat join`)"
        case .io(let why): "key store: \(why)"
        case .unknownRoom(let name): "no room named \(name) in the key store (see `hush chat list`)"
        }
    }
}

// MARK: file

/// The sealed key store file, the same design as the browser's: `HUSHKS2\n`, a 4-byte
/// big-endian length, the store key (32 random bytes) sealed with the passphrase (Secure Cell
/// passphrase mode, PBKDF2 with `passphraseIterations` for new stores; the header carries the
/// count), then the JSON sealed with the store key (Secure Cell Seal). So a process runs PBKDF2
/// once, when it unlocks the store, and never per write. Files of the first format
/// (`HUSHKS1\n` + the JSON in a passphrase cell) still open; the next write converts them.
/// Every write goes to a temporary file in the same folder (mode 0600), is fsynced, then
/// renamed over the old one and the folder fsynced: a crash leaves the old or the new file,
/// never a torn one. Writers take an exclusive `flock` on `<path>.lock` around load-change-save.
public struct KeyStoreFile: Sendable {
    public static let magic = Array("HUSHKS2\n".utf8)
    static let legacyMagic = Array("HUSHKS1\n".utf8)
    public static let maxBytes = 16 << 20
    static let legacyContext = Array("hush-keystore:v1".utf8)
    static let storeKeyContext = Array("hush-keystore-key:v2".utf8)
    static let dataContext = Array("hush-keystore:v2".utf8)
    /// PBKDF2-SHA256 rounds for a new store key (OWASP's current figure for PBKDF2-SHA256).
    public static let passphraseIterations: UInt32 = 600_000
    static let maxSealedKeyBytes = 4096

    public let path: String
    private let passphrase: String
    /// The store key once unlocked, with the sealed form it came from: a file whose sealed key
    /// is the same bytes opens without running PBKDF2 again.
    private let unlocked = UnlockedKey()

    public init(path: String, passphrase: String) {
        self.path = path
        self.passphrase = passphrase
    }

    final class UnlockedKey: Sendable {
        let value = NIOLockedValueBox<(sealed: [UInt8], key: SymmetricKey)?>(nil)
    }

    /// `--store`, else `HUSH_STORE`, else `~/.hush/keystore.hush`.
    public static func defaultPath(flag: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let flag, !flag.isEmpty { return flag }
        if let env = environment["HUSH_STORE"], !env.isEmpty { return env }
        let home = environment["HOME"] ?? FileManager.default.homeDirectoryForCurrentUser.path
        return home + "/.hush/keystore.hush"
    }

    public var exists: Bool { FileManager.default.fileExists(atPath: path) }

    // MARK: pure sealing

    /// A new store key sealed with `passphrase` (runs PBKDF2 once).
    public static func sealStoreKey(_ key: SymmetricKey, passphrase: String,
                                    iterations: UInt32 = passphraseIterations) throws -> [UInt8] {
        try SecureCell.PassphraseSeal(passphrase: passphrase).encrypt(key.bytes, context: storeKeyContext, iterations: iterations)
    }

    /// The file: header, the sealed store key, the JSON sealed with the store key.
    public static func seal(_ store: KeyStore, storeKey: SymmetricKey, sealedKey: [UInt8]) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(store)
        let data = try SecureCell.Seal(key: storeKey).encrypt(json, context: dataContext)
        let length = UInt32(sealedKey.count)
        return magic + [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            + sealedKey + data
    }

    /// Opens a file; `unlock` turns its sealed store key into the key (the passphrase's work).
    static func open(_ bytes: [UInt8], unlock: ([UInt8]) throws(KeyStoreError) -> SymmetricKey) throws(KeyStoreError) -> KeyStore {
        let (sealedKey, data) = try split(bytes)
        let storeKey = try unlock(sealedKey)
        let json: [UInt8]
        do {
            json = try SecureCell.Seal(key: storeKey).decrypt(data, context: dataContext)
        } catch {
            throw .corrupt("the sealed content does not open with its store key (\(error))")
        }
        return try parse(json)
    }

    /// Header checks, then the sealed store key and the sealed data, each bounded.
    static func split(_ bytes: [UInt8]) throws(KeyStoreError) -> (sealedKey: [UInt8], data: ArraySlice<UInt8>) {
        guard bytes.count <= maxBytes else { throw .tooLarge(bytes.count) }
        guard bytes.count > magic.count + 4, Array(bytes.prefix(magic.count)) == magic else {
            throw .corrupt("not a Hush key store (bad header)")
        }
        let at = magic.count
        let length = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        guard length > 0, length <= maxSealedKeyBytes, bytes.count > at + 4 + length else {
            throw .corrupt("the sealed store key has a bad length")
        }
        return (Array(bytes[(at + 4)..<(at + 4 + length)]), bytes[(at + 4 + length)...])
    }

    /// Opens a file with the passphrase alone (either format).
    public static func open(_ bytes: [UInt8], passphrase: String) throws(KeyStoreError) -> KeyStore {
        if bytes.starts(with: legacyMagic) { return try openLegacy(bytes, passphrase: passphrase) }
        return try open(bytes) { (sealed: [UInt8]) throws(KeyStoreError) -> SymmetricKey in
            try openStoreKey(sealed, passphrase: passphrase)
        }
    }

    static func openStoreKey(_ sealed: [UInt8], passphrase: String) throws(KeyStoreError) -> SymmetricKey {
        let key = try openPassphraseCell(sealed, passphrase: passphrase, context: storeKeyContext)
        guard key.count == 32 else { throw .corrupt("the store key is not 32 bytes") }
        return SymmetricKey(data: key)
    }

    static func openPassphraseCell(_ sealed: some Collection<UInt8>, passphrase: String,
                                   context: [UInt8]) throws(KeyStoreError) -> [UInt8] {
        let cell: SecureCell.PassphraseSeal
        do { cell = try SecureCell.PassphraseSeal(passphrase: passphrase) } catch { throw .io("bad passphrase: \(error)") }
        do {
            return try cell.decrypt(Array(sealed), context: context)
        } catch ThemisError.authenticationFailed {
            throw .wrongPassphrase
        } catch {
            throw .corrupt("the sealed container is malformed (\(error))")
        }
    }

    /// The first format: the whole JSON in one passphrase cell.
    static func openLegacy(_ bytes: [UInt8], passphrase: String) throws(KeyStoreError) -> KeyStore {
        guard bytes.count <= maxBytes else { throw .tooLarge(bytes.count) }
        guard bytes.count > legacyMagic.count else { throw .corrupt("not a Hush key store (bad header)") }
        return try parse(try openPassphraseCell(bytes[legacyMagic.count...], passphrase: passphrase, context: legacyContext))
    }

    /// Strict: exactly the known fields, valid values.
    static func parse(_ json: [UInt8]) throws(KeyStoreError) -> KeyStore {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)) as? [String: Any] else {
            throw .corrupt("the content is not a JSON object")
        }
        try checkFields(object, allowed: ["version", "rooms"], what: "key store")
        for room in object["rooms"] as? [Any] ?? [] {
            guard let room = room as? [String: Any] else { throw .corrupt("a room is not an object") }
            try checkFields(room, allowed: StoredRoom.fieldNames, what: "room")
        }
        let store: KeyStore
        do { store = try JSONDecoder().decode(KeyStore.self, from: Data(json)) } catch {
            throw .corrupt("the content does not decode: \(error)")
        }
        try store.validate()
        return store
    }

    static func checkFields(_ object: [String: Any], allowed: Set<String>, what: String) throws(KeyStoreError) {
        if let unknown = object.keys.first(where: { !allowed.contains($0) }) { throw .corrupt("unknown field \(unknown) in \(what)") }
    }

    // MARK: I/O

    /// Reads and opens the store; `.missing` when there is no file yet. PBKDF2 runs only when
    /// the file's sealed store key is not the one this process already unlocked.
    public func load() throws(KeyStoreError) -> KeyStore {
        let bytes = try readBounded()
        if bytes.starts(with: Self.legacyMagic) { return try Self.openLegacy(bytes, passphrase: passphrase) }
        return try Self.open(bytes) { (sealed: [UInt8]) throws(KeyStoreError) -> SymmetricKey in
            if let known = unlocked.value.withLockedValue({ $0 }), constantTimeEquals(known.sealed, sealed) { return known.key }
            let key = try Self.openStoreKey(sealed, passphrase: passphrase)
            unlocked.value.withLockedValue { $0 = (sealed, key) }
            return key
        }
    }

    /// Load (empty when missing, if `create`), change, save — under the writers' lock. The file
    /// is not touched when `body` throws or the passphrase is wrong.
    @discardableResult
    public func update<T>(create: Bool = false, _ body: (inout KeyStore) throws -> T) throws -> T {
        try ensureFolder()
        return try withLock {
            var store: KeyStore
            if !exists, create { store = KeyStore() } else { store = try load() }
            let result = try body(&store)
            try write(store)
            return result
        }
    }

    /// Writes `store` atomically (no lock: callers hold it through `update`), under the store
    /// key this process unlocked; a new store (or one of the first format) gets a fresh key.
    func write(_ store: KeyStore) throws {
        let current = try unlocked.value.withLockedValue { known in
            if let known { return known }
            let key = SymmetricKey(size: .bits256)
            let fresh = (sealed: try Self.sealStoreKey(key, passphrase: passphrase), key: key)
            known = fresh
            return fresh
        }
        try Self.atomicWrite(try Self.seal(store, storeKey: current.key, sealedKey: current.sealed), to: path)
    }

    private func ensureFolder() throws {
        let folder = (path as NSString).deletingLastPathComponent
        guard !folder.isEmpty, !FileManager.default.fileExists(atPath: folder) else { return }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    private func readBounded() throws(KeyStoreError) -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { throw .missing(path) }
            throw .io("cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        guard Int(info.st_size) <= Self.maxBytes else { throw .tooLarge(Int(info.st_size)) }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .io("cannot read \(path)") }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: Self.maxBytes + 1)) ?? Data()
        guard data.count <= Self.maxBytes else { throw .tooLarge(data.count) }
        return Array(data)
    }

    private func withLock<T>(_ body: () throws -> T) throws -> T {
        let fd = Glibc.open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KeyStoreError.io("cannot open the lock file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw KeyStoreError.io("cannot lock the key store") }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    /// temp file (0600, same folder) → write → fsync → rename → fsync folder.
    public static func atomicWrite(_ bytes: [UInt8], to path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let temp = folder + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: .min ... .max))"
        let fd = Glibc.open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KeyStoreError.io("cannot create \(temp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            defer { close(fd) }
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    throw KeyStoreError.io("write failed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
            guard fsync(fd) == 0 else { throw KeyStoreError.io("fsync failed: \(String(cString: strerror(errno)))") }
        }
        guard rename(temp, path) == 0 else { throw KeyStoreError.io("rename failed: \(String(cString: strerror(errno)))") }
        ok = true
        let dirFD = Glibc.open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
    }
}

extension StoredRoom {
    static let fieldNames: Set<String> = [
        "room", "name", "server", "serverKey", "role", "status", "privateKey", "owner", "epoch", "keys", "members",
        "lastSeq", "sentCounter", "accepted", "replayFloors", "names", "rotateEvery", "invites", "joinRequests", "pendingRotation", "outbox", "history", "join", "createdAt",
    ]
}
