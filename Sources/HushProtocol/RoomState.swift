import Crypto
import Foundation
import ThemisKit

/// A member's end-to-end view of one room: keys per epoch, admitted members, replay counters.
/// Pure: fed with server envelopes, it answers what they mean; it never does I/O.
public struct RoomState: Sendable {
    public enum Event: Sendable, Equatable {
        case chat(seq: Int, from: String, counter: Int, ts: Int64, text: String)
        case rotated(seq: Int, epoch: Int)
        /// The message already accepted at this very seq (a push read again through history):
        /// opened and verified again, it changes nothing and is not news. It carries the
        /// message so that an explicit re-read of history can list it.
        case duplicate(seq: Int, from: String, counter: Int, ts: Int64, text: String)
        /// Dropped: a replay, a sender the owner never admitted, or a blob that does not open.
        case rejected(seq: Int, reason: Reason)
    }

    /// Why an envelope was dropped. The same codes as the web client (`REASONS` in
    /// web/app/formats.mjs), so that both clients answer the shared room scenario vectors
    /// (Tests/Fixtures/room-scenarios) with the same code.
    public enum Reason: String, Sendable, Equatable, CustomStringConvertible {
        case missingKey, undecryptable, badSignature, notMember, malformed, wrongRoom, replay

        init(_ error: PayloadError) {
            switch error {
            case .undecryptable: self = .undecryptable
            case .badSignature: self = .badSignature
            case .malformed: self = .malformed
            case .wrongRoomOrEpoch: self = .wrongRoom
            }
        }

        public var description: String {
            switch self {
            case .missingKey: "missing epoch key"
            case .undecryptable: "cannot be decrypted"
            case .badSignature: "bad signature"
            case .notMember: "sender is not a member"
            case .malformed: "malformed content"
            case .wrongRoom: "wrong room or epoch"
            case .replay: "replayed message"
            }
        }
    }

    /// A name message read (docs/PROTOCOL.md §6.7). `previous` is the sender's name in force
    /// before it (nil: none); `inForce` whether it is the sender's name now (false when a name at
    /// a later seq is already known). A duplicate (the same message at the same seq) changes nothing.
    public struct NameChange: Sendable, Equatable {
        public let seq: Int
        public let from: String
        public let counter: Int
        public let ts: Int64
        public let name: String
        public let previous: String?
        public let inForce: Bool
        public let duplicate: Bool
    }

    /// A file message read (docs/PROTOCOL.md §6.8): the file's description, key included, for
    /// fetching its chunks. `duplicate`: the same message at the same seq, read again.
    public struct SharedFile: Sendable, Equatable {
        public let seq: Int
        public let from: String
        public let counter: Int
        public let ts: Int64
        public let file: RoomFile
        public let duplicate: Bool
    }

    /// What one envelope meant: a chat, rotation, duplicate or refusal, a name, or a file.
    public enum Reading: Sendable, Equatable {
        case event(Event)
        case name(NameChange)
        case file(SharedFile)
    }

    /// A key's display name and the seq of the message that set it.
    public struct Naming: Sendable, Equatable, Codable {
        public let name: String
        public let seq: Int
        /// The epoch the name message was sealed under (nil: not known, e.g. a store of before).
        public let epoch: Int?
        public init(name: String, seq: Int, epoch: Int? = nil) {
            self.name = name
            self.seq = seq
            self.epoch = epoch
        }
    }

    public let room: String
    public let owner: ThemisPublicKey
    public let me: ThemisPrivateKey
    public private(set) var epoch: Int
    public private(set) var keys: [Int: SymmetricKey]
    /// Non-owner keys admitted by a verified membership signature.
    public private(set) var members: Set<String> = []
    /// Keys that were admitted and then left or were removed: their messages with
    /// `seq <= until` stay valid, later ones are from a non-member (docs/PROTOCOL.md §4.1).
    public private(set) var former: [String: FormerMember] = [:]
    public private(set) var lastSeq = 0
    /// Who is called what (§6.7): each key's name from its latest name message by seq.
    public private(set) var names: [String: Naming] = [:]
    private var myCounter = 0
    /// The sequence number each (sender, counter) was first accepted at: the same message
    /// again (history after a push) is a duplicate, the same counter at another seq a replay.
    /// Bounded (§6.1): per sender only the newest `replayWindow` counters; older ones are
    /// folded into `replayFloors`.
    private var accepted: [String: [Int: Int]] = [:]
    private var floors: [String: ReplayFloor] = [:]
    /// Counters kept per sender before the oldest are folded into its floor.
    public var replayWindow = RoomState.defaultReplayWindow
    public static let defaultReplayWindow = 1024

    /// What is left of a sender's folded counters: the highest counter and the highest seq
    /// among them. A counter at or below it is a duplicate at a seq at or below it (history
    /// read again), a replay anywhere later.
    public struct ReplayFloor: Sendable, Equatable, Codable {
        public var counter: Int
        public var seq: Int
        public init(counter: Int, seq: Int) {
            self.counter = counter
            self.seq = seq
        }
    }

    public init(room: String, owner: ThemisPublicKey, me: ThemisPrivateKey, epoch: Int, roomKey: SymmetricKey) {
        self.room = room
        self.owner = owner
        self.me = me
        self.epoch = epoch
        self.keys = [epoch: roomKey]
    }

    /// Restores a saved state (a key store): the keys of every epoch, the last seen sequence
    /// number, this key's message counter and the accepted (sender, counter) → seq table.
    /// Members are not restored: admit them again through their membership signatures.
    public init(room: String, owner: ThemisPublicKey, me: ThemisPrivateKey, epoch: Int, keys: [Int: SymmetricKey],
                lastSeq: Int, sentCounter: Int, accepted: [String: [Int: Int]], replayFloors: [String: ReplayFloor] = [:]) {
        precondition(keys[epoch] != nil, "the key of the current epoch is required")
        self.room = room
        self.owner = owner
        self.me = me
        self.epoch = epoch
        self.keys = keys
        self.lastSeq = lastSeq
        self.myCounter = sentCounter
        self.accepted = accepted
        self.floors = replayFloors
        for sender in accepted.keys { fold(sender) }
    }

    /// The counter of the last message this key sent (for saving).
    public var sentCounter: Int { myCounter }
    /// The accepted (sender, counter) → seq table (for saving), within the window.
    public var acceptedCounters: [String: [Int: Int]] { accepted }
    /// Each sender's folded counters (for saving).
    public var replayFloors: [String: ReplayFloor] { floors }

    /// The replay rule (§6.1): a (sender, counter) at `seq` is new, the same message again, or
    /// a replay.
    private enum Replay { case new, duplicate, replay }

    private func replay(from sender: String, counter: Int, seq: Int) -> Replay {
        if let first = accepted[sender]?[counter] { return first == seq ? .duplicate : .replay }
        if let floor = floors[sender], counter <= floor.counter { return seq <= floor.seq ? .duplicate : .replay }
        return .new
    }

    /// Records a new (sender, counter) at `seq`, then keeps the sender's table to the window.
    private mutating func accept(from sender: String, counter: Int, seq: Int) {
        accepted[sender, default: [:]][counter] = seq
        fold(sender)
    }

    /// Folds a sender's oldest counters beyond the window into its floor.
    private mutating func fold(_ sender: String) {
        guard let table = accepted[sender] else { return }
        (accepted[sender], floors[sender]) = Self.folded(table, floor: floors[sender], window: replayWindow)
    }

    /// A sender's counter → seq table kept to the newest `window` counters, the older ones
    /// folded into the floor (the key store keeps what it saves to the same bound).
    public static func folded(_ table: [Int: Int], floor: ReplayFloor?, window: Int) -> ([Int: Int], ReplayFloor?) {
        let window = max(1, window)
        guard table.count > window else { return (table, floor) }
        var floor = floor ?? ReplayFloor(counter: 0, seq: 0)
        var kept = table
        for counter in table.keys.sorted().prefix(table.count - window) {
            floor.counter = max(floor.counter, counter)
            floor.seq = max(floor.seq, kept.removeValue(forKey: counter) ?? 0)
        }
        return (kept, floor)
    }

    public var isOwner: Bool { me.publicKey == owner }
    public var myKey: String { KeyID.json(me.publicKey) }
    public var currentKey: SymmetricKey { keys[epoch]! }

    /// Admits a member if the owner's signature over it verifies. The owner is never a member.
    @discardableResult
    public mutating func admit(key: String, signature: [UInt8]) -> Bool {
        // A departed key is retired for good (§4.7): its old signature cannot bring it back.
        guard key != KeyID.json(owner), former[key] == nil,
              Statement.verify(signature, signs: Statement.membership(room: room, key: key), by: owner) else { return false }
        members.insert(key)
        return true
    }

    /// The room lists of `hello` (§4.1), former members first: the server's member list replaces
    /// this one. Each entry is admitted through its signature; a member the list no longer holds
    /// is gone, unexplained, as of the last seq seen. Returns the verified member signatures.
    @discardableResult
    public mutating func sync(members entries: [MemberEntry], former formerEntries: [FormerMemberEntry]) -> [String: [UInt8]] {
        let bound = Limits.standard.maxMembersPerRoom
        for entry in formerEntries.prefix(bound) { admitFormer(entry) }
        var listed: [String: [UInt8]] = [:]
        for entry in entries.prefix(bound) where admit(key: entry.key, signature: entry.signature.bytes) {
            listed[entry.key] = entry.signature.bytes
        }
        for key in members where listed[key] == nil { retire(key, until: lastSeq, departure: nil) }
        return listed
    }

    /// A departed member as this state knows it: up to which sequence number its messages count,
    /// and how it departed when the departure signature verified (nil: not verifiable).
    public struct FormerMember: Sendable, Equatable {
        public let until: Int
        public let departure: Departure?
        public init(until: Int, departure: Departure?) {
            self.until = until
            self.departure = departure
        }
    }

    /// A departure pushed by the server (`member_left`, `member_removed`): the key stops being a
    /// member; if it was one, its messages up to `until` stay valid. Returns whether the
    /// departure signature verifies (a removal by the owner, a leave by the key itself).
    /// An `until` outside 0...2^53−1 means nothing: the last seq seen stands in for it.
    @discardableResult
    public mutating func depart(key: String, until: Int, departure: Departure, signature: [UInt8]?) -> Bool {
        let verified = signature.map {
            Statement.verifyDeparture(departure, signature: $0, room: room, key: key, owner: owner)
        } ?? false
        retire(key, until: (0...Self.maxSeq).contains(until) ? until : lastSeq, departure: verified ? departure : nil)
        return verified
    }

    /// Moves a member (or a former member) to `former`; nothing for a key never admitted.
    private mutating func retire(_ key: String, until: Int, departure: Departure?) {
        guard members.remove(key) != nil || former[key] != nil else { return }
        // A departure happens once: never let a later claim extend the window.
        former[key] = FormerMember(until: min(until, former[key]?.until ?? Int.max), departure: departure ?? former[key]?.departure)
    }

    /// A former member listed by `hello`: admitted like a member (the owner's membership
    /// signature must verify), then departed at `until`. Returns whether the entry was taken;
    /// one with an `until` outside 0...2^53−1 is not.
    @discardableResult
    public mutating func admitFormer(_ entry: FormerMemberEntry) -> Bool {
        guard entry.key != KeyID.json(owner), entry.key != myKey, (0...Self.maxSeq).contains(entry.until),
              Statement.verify(entry.signature.bytes, signs: Statement.membership(room: room, key: entry.key), by: owner)
        else { return false }
        if former[entry.key] == nil && !members.contains(entry.key) {
            former[entry.key] = FormerMember(until: Int.max, departure: nil)
        }
        depart(key: entry.key, until: entry.until, departure: entry.departure, signature: entry.departureSignature.bytes)
        return true
    }

    /// Records this key's own message once the server assigned its seq (it is not pushed back
    /// to the sending connection): read again through history it is a duplicate, as in the
    /// web client (`recordSent` in room.mjs).
    /// `name`: the message was a name message, now this key's name at that seq.
    public mutating func recordSent(counter: Int, seq: Int, name: String? = nil, epoch sealedUnder: Int? = nil) {
        guard (1...Self.maxSeq).contains(seq) else { return }
        accept(from: myKey, counter: counter, seq: seq)
        lastSeq = max(lastSeq, seq)
        if let name, Self.isCanonicalName(name) { _ = setName(name, of: myKey, seq: seq, epoch: sealedUnder) }
    }

    /// Moves the counter forward (never back): the next message uses `counter + 1`. A key
    /// store that reserved a counter for this key hands it over here.
    public mutating func raiseCounter(to counter: Int) {
        myCounter = max(myCounter, counter)
    }

    // MARK: names (docs/PROTOCOL.md §6.7)

    /// The longest name, in Unicode scalars.
    public static let maxNameScalars = 64

    /// White space trimmed from both ends of a name: the characters of JavaScript's `\s`, so that
    /// both clients trim alike.
    static func isNameSpace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x20, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF: true
        default: false
        }
    }

    /// Characters no name holds: C0 and C1 controls, line and paragraph separators, bidi
    /// controls (they reorder what is shown around them), the zero-width space and the BOM.
    static func isRefusedInName(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x061C, 0x200B, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF: true
        default: false
        }
    }

    /// The one name rule (§6.7): white space trimmed from both ends, NFC, then 1 to 64 scalars
    /// and none refused. Returns the name as it is sent, or nil when it is refused. A name read
    /// from a message must already be in this form (`isCanonicalName`).
    public static func canonicalName(_ input: String) -> String? {
        let scalars = Array(input.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !isNameSpace($0) }),
              let last = scalars.lastIndex(where: { !isNameSpace($0) }) else { return nil }
        var trimmed = String.UnicodeScalarView()
        trimmed.append(contentsOf: scalars[first...last])
        let name = String(trimmed).precomposedStringWithCanonicalMapping
        guard (1...maxNameScalars).contains(name.unicodeScalars.count), !name.unicodeScalars.contains(where: isRefusedInName) else {
            return nil
        }
        return name
    }

    /// Whether `name` is exactly its canonical form, scalar for scalar (Swift's `==` would call
    /// a decomposed name equal to its NFC form; the web client's `===` would not).
    public static func isCanonicalName(_ name: String) -> Bool {
        canonicalName(name).map { $0.unicodeScalars.elementsEqual(name.unicodeScalars) } ?? false
    }

    /// The name `key` gave itself, if any.
    public func name(of key: String) -> String? { names[key]?.name }

    /// Whether another key of this room (a member or a former one) holds the same name as `key`:
    /// names are self-chosen, so the clients mark them and show the fingerprint beside.
    public func sharesName(_ key: String) -> Bool {
        guard let mine = names[key]?.name else { return false }
        return names.contains { $0.key != key && $0.value.name.unicodeScalars.elementsEqual(mine.unicodeScalars) }
    }

    /// Takes names kept by a key store: each must be canonical, from a known seq; the latest wins.
    public mutating func restoreNames(_ saved: [String: Naming]) {
        for (key, naming) in saved where Self.isCanonicalName(naming.name) && (1...Self.maxSeq).contains(naming.seq) {
            if names[key].map({ $0.seq < naming.seq }) ?? true { names[key] = naming }
        }
    }

    /// Applies a name at `seq` unless a later one is known; returns the name in force before.
    private mutating func setName(_ name: String, of key: String, seq: Int, epoch: Int?) -> (previous: String?, inForce: Bool) {
        let previous = names[key]
        guard previous.map({ $0.seq < seq }) ?? true else { return (previous?.name, previous?.seq == seq) }
        names[key] = Naming(name: name, seq: seq, epoch: epoch)
        return (previous?.name, true)
    }

    /// Whether this key should send its name again now that a member joined (§6.7): a joiner
    /// reads only messages sealed under the epoch it was let in at, so a name sealed under an
    /// older one (or under one not known) never reaches it. One rule for every key, the owner's
    /// included; once sent again, the name is in the current epoch and nothing more is owed.
    public var owesNameToJoiners: Bool {
        guard let mine = names[myKey] else { return false }
        return (mine.epoch ?? -1) < epoch
    }

    /// Seals this key's next name message: `name` must be canonical (`canonicalName`).
    public mutating func composeName(_ name: String, now: Int64) throws -> [UInt8] {
        guard Self.isCanonicalName(name) else { throw PayloadError.malformed }
        myCounter += 1
        return try RoomPayload.seal(NameMessage(room: room, epoch: epoch, counter: myCounter, ts: now, name: name), roomKey: currentKey, signer: me)
    }

    /// Seals this key's next file message: the file's chunks must be stored (`file_put`) before
    /// it is sent.
    public mutating func composeFile(_ file: RoomFile, now: Int64) throws -> [UInt8] {
        myCounter += 1
        return try RoomPayload.seal(FileMessage(room: room, epoch: epoch, counter: myCounter, ts: now, file: file), roomKey: currentKey, signer: me)
    }

    /// Seals the next chat message of this key; a text too long to pad is `MessageTooLarge`.
    public mutating func compose(text: String, now: Int64) throws -> [UInt8] {
        myCounter += 1
        let message = ChatMessage(room: room, epoch: epoch, counter: myCounter, ts: now, text: text)
        return try RoomPayload.seal(message, roomKey: currentKey, signer: me)
    }

    /// Owner: a rotation to a fresh key, plain (sealed under the current key) or, with
    /// `recipients`, wrapped for each of them and for the owner itself, so that the owner's
    /// other clients follow it (§4.5). `install` it once the server accepted it.
    public func makeRotation(wrappedFor recipients: [String]? = nil) throws -> Rotation {
        let newKey = RoomPayload.newRoomKey()
        let signed = try RoomPayload.signRotation(room: room, epoch: epoch + 1, key: newKey, owner: me)
        guard let recipients else {
            let payload = try RoomPayload.sealRotation(signed, oldKey: currentKey, room: room, oldEpoch: epoch)
            return Rotation(epoch: epoch + 1, key: newKey, payload: payload, wraps: nil)
        }
        let wraps = try Set(recipients + [myKey]).sorted().map { key in
            Wrap(key: key, wrap: try RoomPayload.wrapRotation(signed, owner: me, member: try KeyID.key(fromJSON: key)))
        }
        return Rotation(epoch: epoch + 1, key: newKey, payload: nil, wraps: wraps)
    }

    public struct Rotation: Sendable {
        public let epoch: Int
        public let key: SymmetricKey
        public let payload: [UInt8]?
        public let wraps: [Wrap]?
    }

    public mutating func install(_ rotation: Rotation) {
        keys[rotation.epoch] = rotation.key
        epoch = max(epoch, rotation.epoch)
    }

    /// The largest sequence number and epoch a client accepts from a server: JSON numbers
    /// stay exact up to 2^53 (§1), and the web client holds the same bound.
    public static let maxSeq = (1 << 53) - 1

    /// The longest `from` an envelope may carry, counted in UTF-16 units like the web client
    /// (`parseEnvelope`), so that both refuse exactly the same envelopes.
    static let maxFromLength = 128

    /// `read` for a caller that follows the chat only (the relay benchmark): a name or file
    /// message is no chat news to it, so it comes back as a duplicate would, carrying the name
    /// (of the key or of the file) as its text.
    public mutating func receive(_ envelope: Envelope) -> Event {
        switch read(envelope) {
        case .event(let event): event
        case .name(let change): .duplicate(seq: change.seq, from: change.from, counter: change.counter, ts: change.ts, text: change.name)
        case .file(let shared): .duplicate(seq: shared.seq, from: shared.from, counter: shared.counter, ts: shared.ts, text: shared.file.name)
        }
    }

    /// Interprets one envelope from the server (push or history). One that is not well formed
    /// (another room, a sequence number, epoch or time out of range, an oversized `from`, an
    /// unknown kind) changes nothing, not even `lastSeq`.
    public mutating func read(_ envelope: Envelope) -> Reading {
        guard envelope.room == room, (1...Self.maxSeq).contains(envelope.seq), (0...Self.maxSeq).contains(envelope.epoch),
              (0...Int64(Self.maxSeq)).contains(envelope.at), envelope.from.utf16.count <= Self.maxFromLength,
              ["message", "rotation"].contains(envelope.kind) else {
            return .event(.rejected(seq: envelope.seq, reason: .malformed))
        }
        lastSeq = max(lastSeq, envelope.seq)
        switch envelope.kind {
        case "rotation": return .event(receiveRotation(envelope))
        default: return receiveMessage(envelope)
        }
    }

    private mutating func receiveMessage(_ envelope: Envelope) -> Reading {
        let reject = { (reason: Reason) in Reading.event(.rejected(seq: envelope.seq, reason: reason)) }
        let formerMember = former[envelope.from].map { envelope.seq <= $0.until } ?? false
        guard envelope.from == KeyID.json(owner) || members.contains(envelope.from) || envelope.from == myKey || formerMember else {
            return reject(.notMember)
        }
        guard let key = keys[envelope.epoch] else { return reject(.missingKey) }
        guard let payload = envelope.payload?.bytes, let sender = try? KeyID.key(fromJSON: envelope.from) else {
            return reject(.malformed)
        }
        let content: RoomContent
        do {
            content = try RoomPayload.open(payload, roomKey: key, room: room, epoch: envelope.epoch, sender: sender)
        } catch {
            return reject(Reason(error))
        }
        // A name outside the one rule is refused like any malformed content, before it counts.
        if case .name(let message) = content, !Self.isCanonicalName(message.name) { return reject(.malformed) }
        let duplicate: Bool
        switch replay(from: envelope.from, counter: content.counter, seq: envelope.seq) {
        case .replay:
            return reject(.replay)
        case .duplicate:
            duplicate = true
        case .new:
            duplicate = false
            accept(from: envelope.from, counter: content.counter, seq: envelope.seq)
            if envelope.from == myKey { myCounter = max(myCounter, content.counter) }
        }
        switch content {
        case .chat(let message):
            return .event(duplicate
                ? .duplicate(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, text: message.text)
                : .chat(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, text: message.text))
        case .name(let message):
            let (previous, inForce) = duplicate ? (names[envelope.from]?.name, names[envelope.from]?.seq == envelope.seq)
                                                : setName(message.name, of: envelope.from, seq: envelope.seq, epoch: envelope.epoch)
            return .name(NameChange(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, name: message.name,
                                    previous: previous, inForce: inForce, duplicate: duplicate))
        case .file(let message):
            return .file(SharedFile(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, file: message.file,
                                    duplicate: duplicate))
        }
    }

    private mutating func receiveRotation(_ envelope: Envelope) -> Event {
        let reject = { (reason: Reason) in Event.rejected(seq: envelope.seq, reason: reason) }
        // Only the owner rotates: anyone else's rotation is as good as a bad signature.
        guard envelope.from == KeyID.json(owner) else { return reject(.badSignature) }
        // Epoch 0 is the room's first key, never the result of a rotation.
        guard envelope.epoch >= 1 else { return reject(.malformed) }
        if keys[envelope.epoch] != nil { return .rotated(seq: envelope.seq, epoch: envelope.epoch) }
        let newKey: SymmetricKey
        do {
            if let wrap = envelope.wrap?.bytes {
                newKey = try RoomPayload.openRotation(wrap: wrap, me: me, room: room, newEpoch: envelope.epoch, owner: owner)
            } else if let payload = envelope.payload?.bytes, let old = keys[envelope.epoch - 1] {
                newKey = try RoomPayload.openRotation(payload: payload, oldKey: old, room: room, newEpoch: envelope.epoch, owner: owner)
            } else {
                return reject(.missingKey)
            }
        } catch {
            return reject(Reason(error))
        }
        keys[envelope.epoch] = newKey
        epoch = max(epoch, envelope.epoch)
        return .rotated(seq: envelope.seq, epoch: envelope.epoch)
    }
}
