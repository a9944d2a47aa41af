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

    public let room: String
    public let owner: ThemisPublicKey
    public let me: ThemisPrivateKey
    public private(set) var epoch: Int
    public private(set) var keys: [Int: [UInt8]]
    /// Non-owner keys admitted by a verified membership signature.
    public private(set) var members: Set<String> = []
    /// Keys that were admitted and then left or were removed: their messages with
    /// `seq <= until` stay valid, later ones are from a non-member (docs/PROTOCOL.md §4.1).
    public private(set) var former: [String: FormerMember] = [:]
    public private(set) var lastSeq = 0
    private var myCounter = 0
    /// The sequence number each (sender, counter) was first accepted at: the same message
    /// again (history after a push) is a duplicate, the same counter at another seq a replay.
    private var accepted: [String: [Int: Int]] = [:]

    public init(room: String, owner: ThemisPublicKey, me: ThemisPrivateKey, epoch: Int, roomKey: [UInt8]) {
        self.room = room
        self.owner = owner
        self.me = me
        self.epoch = epoch
        self.keys = [epoch: roomKey]
    }

    /// Restores a saved state (a key store): the keys of every epoch, the last seen sequence
    /// number, this key's message counter and the accepted (sender, counter) → seq table.
    /// Members are not restored: admit them again through their membership signatures.
    public init(room: String, owner: ThemisPublicKey, me: ThemisPrivateKey, epoch: Int, keys: [Int: [UInt8]],
                lastSeq: Int, sentCounter: Int, accepted: [String: [Int: Int]]) {
        precondition(keys[epoch] != nil, "the key of the current epoch is required")
        self.room = room
        self.owner = owner
        self.me = me
        self.epoch = epoch
        self.keys = keys
        self.lastSeq = lastSeq
        self.myCounter = sentCounter
        self.accepted = accepted
    }

    /// The counter of the last message this key sent (for saving).
    public var sentCounter: Int { myCounter }
    /// The accepted (sender, counter) → seq table (for saving).
    public var acceptedCounters: [String: [Int: Int]] { accepted }

    public var isOwner: Bool { me.publicKey == owner }
    public var myKey: String { KeyID.json(me.publicKey) }
    public var currentKey: [UInt8] { keys[epoch]! }

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
    public mutating func recordSent(counter: Int, seq: Int) {
        guard (1...Self.maxSeq).contains(seq) else { return }
        accepted[myKey, default: [:]][counter] = seq
        lastSeq = max(lastSeq, seq)
    }

    /// Moves the counter forward (never back): the next message uses `counter + 1`. A key
    /// store that reserved a counter for this key hands it over here.
    public mutating func raiseCounter(to counter: Int) {
        myCounter = max(myCounter, counter)
    }

    /// Seals the next chat message of this key.
    public mutating func compose(text: String, now: Int64) throws(ThemisError) -> [UInt8] {
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
        public let key: [UInt8]
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

    /// Interprets one envelope from the server (push or history). One that is not well formed
    /// (another room, a sequence number, epoch or time out of range, an oversized `from`, an
    /// unknown kind) changes nothing, not even `lastSeq`.
    public mutating func receive(_ envelope: Envelope) -> Event {
        guard envelope.room == room, (1...Self.maxSeq).contains(envelope.seq), (0...Self.maxSeq).contains(envelope.epoch),
              (0...Int64(Self.maxSeq)).contains(envelope.at), envelope.from.utf16.count <= Self.maxFromLength,
              ["message", "rotation"].contains(envelope.kind) else {
            return .rejected(seq: envelope.seq, reason: .malformed)
        }
        lastSeq = max(lastSeq, envelope.seq)
        switch envelope.kind {
        case "rotation": return receiveRotation(envelope)
        default: return receiveChat(envelope)
        }
    }

    private mutating func receiveChat(_ envelope: Envelope) -> Event {
        let reject = { (reason: Reason) in Event.rejected(seq: envelope.seq, reason: reason) }
        let formerMember = former[envelope.from].map { envelope.seq <= $0.until } ?? false
        guard envelope.from == KeyID.json(owner) || members.contains(envelope.from) || envelope.from == myKey || formerMember else {
            return reject(.notMember)
        }
        guard let key = keys[envelope.epoch] else { return reject(.missingKey) }
        guard let payload = envelope.payload?.bytes, let sender = try? KeyID.key(fromJSON: envelope.from) else {
            return reject(.malformed)
        }
        let message: ChatMessage
        do {
            message = try RoomPayload.open(payload, roomKey: key, room: room, epoch: envelope.epoch, sender: sender)
        } catch {
            return reject(Reason(error))
        }
        if let seq = accepted[envelope.from]?[message.counter] {
            guard seq == envelope.seq else { return reject(.replay) }
            return .duplicate(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, text: message.text)
        }
        accepted[envelope.from, default: [:]][message.counter] = envelope.seq
        if envelope.from == myKey { myCounter = max(myCounter, message.counter) }
        return .chat(seq: envelope.seq, from: envelope.from, counter: message.counter, ts: message.ts, text: message.text)
    }

    private mutating func receiveRotation(_ envelope: Envelope) -> Event {
        let reject = { (reason: Reason) in Event.rejected(seq: envelope.seq, reason: reason) }
        // Only the owner rotates: anyone else's rotation is as good as a bad signature.
        guard envelope.from == KeyID.json(owner) else { return reject(.badSignature) }
        // Epoch 0 is the room's first key, never the result of a rotation.
        guard envelope.epoch >= 1 else { return reject(.malformed) }
        if keys[envelope.epoch] != nil { return .rotated(seq: envelope.seq, epoch: envelope.epoch) }
        let newKey: [UInt8]
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
