import Foundation

/// One JSON object inside the Secure Session, in either direction (docs/PROTOCOL.md §4).
/// A flat record: each message type uses the fields its table lists and leaves the rest nil,
/// which keeps the JSON exactly as documented and easy to produce from any language.
public struct WireMessage: Codable, Sendable, Equatable {
    public var type: String
    public var id: String?
    // errors
    public var code: String?
    public var message: String?
    // rooms
    public var room: String?
    public var rotateEvery: Int?
    public var epoch: Int?
    public var role: String?
    // invites and joins
    public var inviteId: Base64Bytes?
    public var expiresAt: Int64?
    public var joiningKey: Base64Bytes?
    public var sealed: Base64Bytes?
    public var key: String?
    public var signature: Base64Bytes?
    // messages
    public var seq: Int?
    public var kind: String?
    public var from: String?
    public var at: Int64?
    public var payload: Base64Bytes?
    /// `send`: the sender's idempotency id for this message (§4.4).
    public var messageId: Base64Bytes?
    public var wrap: Base64Bytes?
    public var wraps: [Wrap]?
    public var count: Int?
    /// `member_left` / `member_removed`: the room's last sequence number when the key departed.
    public var until: Int?
    // files (§4.9)
    /// `file_put`, `file_get`, `file_stored`, `file_chunk`: the file id (16 bytes).
    public var file: Base64Bytes?
    /// The file's chunk count.
    public var chunks: Int?
    public var index: Int?
    /// One sealed chunk.
    public var data: Base64Bytes?
    /// `file_stored`: every chunk of the file is stored.
    public var complete: Bool?
    /// `send`: the pending files the message carries.
    public var files: [Base64Bytes]?
    // history and hello
    public var after: Int?
    public var limit: Int?
    public var more: Bool?
    /// `history`: retention deleted the room's chat messages up to this sequence number (§4.7).
    public var expiredThrough: Int?
    /// `history`: one entry of the wrong shape (only a hostile server sends one) is dropped
    /// alone, as the web client drops it, and the rest of the page is read.
    @SkippingMalformed public var messages: [Envelope]? = nil
    public var rooms: [RoomSummary]?
    public var joins: [JoinSummary]?
    /// `invites` reply: the room's open invites and the joins through them.
    public var invites: [InviteSummary]?

    public init(type: String, id: String? = nil) {
        self.type = type
        self.id = id
    }

    public static func error(_ error: HushError, id: String?) -> WireMessage {
        var reply = WireMessage(type: "error", id: id)
        reply.code = error.code.rawValue
        reply.message = error.message
        reply.epoch = error.epoch
        return reply
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try! encoder.encode(self))
    }

    public static func decode(_ bytes: [UInt8]) throws(HushError) -> WireMessage {
        do {
            return try JSONDecoder().decode(WireMessage.self, from: Data(bytes))
        } catch {
            throw HushError(.badRequest, "not a valid request object")
        }
    }
}

/// What a client makes of one decrypted frame from the server (docs/PROTOCOL.md §4.4): a
/// message, or a JSON object with a string `type` whose other fields have the wrong shape
/// (only a hostile server sends one), refused alone with the id of the request it claims to
/// answer, so that the request fails at once and the connection goes on. A frame that is no
/// JSON object with a string `type` is no message at all: `init` throws, and the connection ends.
public enum ServerFrame: Sendable, Equatable {
    case message(WireMessage)
    case refused(requestID: String?)

    public init(_ plaintext: [UInt8]) throws(HushError) {
        if let message = try? WireMessage.decode(plaintext) {
            self = .message(message)
            return
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(plaintext)) as? [String: Any], object["type"] is String else {
            throw HushError(.badRequest, "the server sent a frame that is no message object")
        }
        self = .refused(requestID: object["id"] as? String)
    }
}

/// A list in which an element that does not decode is dropped, not the whole message.
@propertyWrapper
public struct SkippingMalformed<Element: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    public var wrappedValue: [Element]?
    public init(wrappedValue: [Element]?) { self.wrappedValue = wrappedValue }

    public init(from decoder: any Decoder) throws {
        var list = try decoder.unkeyedContainer()
        var kept: [Element] = []
        while !list.isAtEnd {
            if let element = try? list.decode(Element.self) {
                kept.append(element)
            } else {
                _ = try list.decode(Skipped.self)  // a failed decode does not move the container on
            }
        }
        wrappedValue = kept
    }

    public func encode(to encoder: any Encoder) throws {
        try wrappedValue.encode(to: encoder)
    }

    private struct Skipped: Decodable { init(from decoder: any Decoder) throws {} }
}

extension KeyedDecodingContainer {
    /// Absent or `null`: nil, as for any optional field.
    public func decode<Element>(_ type: SkippingMalformed<Element>.Type, forKey key: Key) throws -> SkippingMalformed<Element> {
        try decodeIfPresent(type, forKey: key) ?? SkippingMalformed(wrappedValue: nil)
    }
}

extension KeyedEncodingContainer {
    /// nil is left out, as for any optional field.
    public mutating func encode<Element>(_ value: SkippingMalformed<Element>, forKey key: Key) throws {
        if value.wrappedValue != nil { try encodeIfPresent(value, forKey: key) }
    }
}

/// One member's copy of a wrapped rotation.
public struct Wrap: Codable, Sendable, Equatable {
    public var key: String
    public var wrap: Base64Bytes
    public init(key: String, wrap: [UInt8]) {
        self.key = key
        self.wrap = Base64Bytes(wrap)
    }
}

/// A stored room message as delivered to a member (push `message`, `history` entries).
public struct Envelope: Codable, Sendable, Equatable {
    public var room: String
    public var seq: Int
    public var kind: String
    public var from: String
    public var epoch: Int
    public var at: Int64
    public var payload: Base64Bytes?
    public var wrap: Base64Bytes?

    public init(room: String, seq: Int, kind: String, from: String, epoch: Int, at: Int64,
                payload: [UInt8]?, wrap: [UInt8]?) {
        self.room = room
        self.seq = seq
        self.kind = kind
        self.from = from
        self.epoch = epoch
        self.at = at
        self.payload = payload.map(Base64Bytes.init)
        self.wrap = wrap.map(Base64Bytes.init)
    }

    public var push: WireMessage {
        var push = WireMessage(type: "message")
        push.room = room
        push.seq = seq
        push.kind = kind
        push.from = from
        push.epoch = epoch
        push.at = at
        push.payload = payload
        push.wrap = wrap
        return push
    }

    public init?(push: WireMessage) {
        guard push.type == "message", let room = push.room, let seq = push.seq, let kind = push.kind,
              let from = push.from, let epoch = push.epoch, let at = push.at else { return nil }
        self.init(room: room, seq: seq, kind: kind, from: from, epoch: epoch, at: at,
                  payload: push.payload?.bytes, wrap: push.wrap?.bytes)
    }
}

public struct MemberEntry: Codable, Sendable, Equatable {
    public var key: String
    public var signature: Base64Bytes
    public init(key: String, signature: [UInt8]) {
        self.key = key
        self.signature = Base64Bytes(signature)
    }
}

/// A member that left or was removed (docs/PROTOCOL.md §4.1): its membership signature, the
/// room's last sequence number at its departure (its messages have `seq <= until`), how it
/// departed and the signature of that departure (§6.5).
public struct FormerMemberEntry: Codable, Sendable, Equatable {
    public var key: String
    public var signature: Base64Bytes
    public var until: Int
    public var departure: Departure
    public var departureSignature: Base64Bytes
    public init(key: String, signature: [UInt8], until: Int, departure: Departure, departureSignature: [UInt8]) {
        self.key = key
        self.signature = Base64Bytes(signature)
        self.until = until
        self.departure = departure
        self.departureSignature = Base64Bytes(departureSignature)
    }
}

public struct RoomSummary: Codable, Sendable, Equatable {
    public var room: String
    public var role: String
    public var owner: String
    public var epoch: Int
    public var lastSeq: Int
    public var floor: Int
    public var delivered: Int
    public var rotateEvery: Int
    public var sinceRotation: Int
    public var wrapRequired: Bool
    public var members: [MemberEntry]
    /// Absent from servers before departures were kept.
    public var formerMembers: [FormerMemberEntry]?
    /// Retention deleted the chat messages up to this sequence number; absent from servers
    /// without retention.
    public var expiredThrough: Int?

    public init(room: String, role: String, owner: String, epoch: Int, lastSeq: Int, floor: Int,
                delivered: Int, rotateEvery: Int, sinceRotation: Int, wrapRequired: Bool, members: [MemberEntry],
                formerMembers: [FormerMemberEntry]? = nil, expiredThrough: Int? = nil) {
        self.room = room
        self.role = role
        self.owner = owner
        self.epoch = epoch
        self.lastSeq = lastSeq
        self.floor = floor
        self.delivered = delivered
        self.rotateEvery = rotateEvery
        self.sinceRotation = sinceRotation
        self.wrapRequired = wrapRequired
        self.members = members
        self.formerMembers = formerMembers
        self.expiredThrough = expiredThrough
    }
}

/// An unexpired invite as its owner sees it (`invites`, §4.3): its state and, once a key
/// asked to join through it, that key.
public struct InviteSummary: Codable, Sendable, Equatable {
    public var inviteId: Base64Bytes
    public var expiresAt: Int64
    public var state: String
    public var key: String?
    public init(inviteId: [UInt8], expiresAt: Int64, state: String, key: String?) {
        self.inviteId = Base64Bytes(inviteId)
        self.expiresAt = expiresAt
        self.state = state
        self.key = key
    }
}

public struct JoinSummary: Codable, Sendable, Equatable {
    public var room: String
    public var inviteId: Base64Bytes
    public var state: String
    public init(room: String, inviteId: [UInt8], state: String) {
        self.room = room
        self.inviteId = Base64Bytes(inviteId)
        self.state = state
    }
}
