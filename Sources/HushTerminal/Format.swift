import Foundation
import HushClient
import HushProtocol
import ThemisKit

/// What the terminal prints: pure functions from events to lines.
public enum Format {
    /// The fingerprint of a b64 key container (`1a2b 3c4d 5e6f 7a8b 9c0d`), or `?`.
    public static func fingerprint(ofKey key: String) -> String {
        (try? KeyID.key(fromJSON: key))?.fingerprint ?? "?"
    }

    /// The short form shown beside messages: the first two groups, `1a2b3c4d`.
    public static func short(_ key: String) -> String {
        String(fingerprint(ofKey: key).replacingOccurrences(of: " ", with: "").prefix(8))
    }

    /// Peers control message text: anything that could steer the terminal (escape sequences,
    /// carriage returns, other control characters, bidi overrides) is shown as `?`.
    public static func sanitize(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { scalar -> Unicode.Scalar in
            let value = scalar.value
            let control = value < 0x20 || (0x7F...0x9F).contains(value) || (0x202A...0x202E).contains(value)
                || (0x2066...0x2069).contains(value)
            return control ? "?" : scalar
        }))
    }

    /// `HH:mm:ss` in the local time zone, from milliseconds since 1970.
    public static func clock(_ milliseconds: Int64, timeZone: TimeZone = .current) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let parts = calendar.dateComponents([.hour, .minute, .second], from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
        return String(format: "%02d:%02d:%02d", parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
    }

    /// A key as the terminal shows it: the short fingerprint, then the name the key gave itself
    /// (docs/PROTOCOL.md §6.7) in quotes, never the name alone: names are self-chosen and anyone
    /// can take any name. A name another key of the room also holds is marked.
    public static func who(_ key: String, me: String, room: RoomState?) -> String {
        var shown = short(key)
        if let name = room?.name(of: key) {
            shown += " \"\(sanitize(name))\""
            if room?.sharesName(key) == true { shown += " [same name as another key]" }
        }
        return key == me ? shown + " (you)" : shown
    }

    /// A byte count for people, in decimal units: `512 B`, `70.0 kB`, `1.2 MB`.
    public static func byteCount(_ bytes: Int) -> String {
        switch bytes {
        case ..<1000: "\(bytes) B"
        case ..<1_000_000: String(format: "%.1f kB", Double(bytes) / 1e3)
        default: String(format: "%.1f MB", Double(bytes) / 1e6)
        }
    }

    /// What `send --file` and `/file` say once the file went out.
    public static func sentFile(_ sent: (seq: Int, name: String, type: String, size: Int)) -> String {
        "sent \(sanitize(sent.name)) (\(byteCount(sent.size)), \(sent.type)) as message #\(sent.seq)"
    }

    /// What `save` and `/save` say once the file is written.
    public static func savedFile(_ saved: (url: URL, file: RoomFile)) -> String {
        "saved \(sanitize(saved.url.path)) (\(byteCount(saved.file.size)), \(saved.file.type), SHA-256 verified)"
    }

    /// One printable line per event (nil: nothing to show). `room` supplies the names;
    /// `roomName` is what the person calls the room, for the command that saves a file.
    public static func line(_ event: RoomClient.Event, me: String, room: RoomState? = nil, roomName: String? = nil,
                            timeZone: TimeZone = .current) -> String? {
        let who = { (key: String) in Self.who(key, me: me, room: room) }
        switch event {
        case .chat(_, let from, let ts, let text):
            return "[\(clock(ts, timeZone: timeZone))] <\(who(from))> \(sanitize(text))"
        case .message(_, let from, let text):
            return "<\(who(from))> \(sanitize(text))"
        case .file(let seq, let from, let ts, let file):
            let save = "hush chat save \(sanitize(roomName ?? room?.room ?? "ROOM")) \(seq)"
            return "[\(clock(ts, timeZone: timeZone))] <\(who(from))> [file] \(sanitize(file.name)) (\(byteCount(file.size)), \(file.type)) — \(save)"
        case .rotated(_, let epoch): return "* the room key was rotated (epoch \(epoch))"
        case .memberJoined(let key): return "* \(who(key)) joined"
        case .memberLeft(let key): return "* \(who(key)) left"
        case .memberRemoved(let key): return "* \(who(key)) was removed by the owner"
        case .memberGone(let key): return "* \(who(key)) is gone (the departure signature does not verify)"
        case .joinRequested(let key): return "* \(short(key)) asked to join; answered with the room key"
        case .joinRefused(let key):
            return "! a join request (\(short(key))) could not be read: the invite link it came from was altered (its owner key is not yours). That invite is revoked; make a new one and send it through a channel you trust."
        case .rotationDue(let count): return "* \(count) messages since the last rotation: rotating the room key"
        case .sendHeld: return "* a member left: your message waits for the owner's key rotation"
        case .rejected(let seq, let reason): return "! message #\(seq) dropped: \(reason)"
        case .removed: return "* you were removed from this room"
        case .roomDeleted: return "* the room was deleted"
        case .named(_, let from, let name, let previous):
            let key = short(from) + (from == me ? " (you)" : "")
            guard let previous else { return "* \(key) set the name \"\(sanitize(name))\"" }
            if previous.unicodeScalars.elementsEqual(name.unicodeScalars) { return nil }
            return "* \(key) \"\(sanitize(previous))\" is now called \"\(sanitize(name))\""
        }
    }

    /// One line of `members`: the full fingerprint, the role, then the name the key gave itself.
    public static func memberLine(_ member: (key: String, fingerprint: String, role: String), me: String, room: RoomState?) -> String {
        var line = "\(member.fingerprint)  \(member.role)"
        if let name = room?.name(of: member.key) {
            line += "  \"\(sanitize(name))\""
            if room?.sharesName(member.key) == true { line += " [same name as another key]" }
        }
        return member.key == me ? line + " (you)" : line
    }

    /// An invite's short id for people: its first 6 bytes in hex (never mistaken for an option).
    public static func inviteID(_ id: [UInt8]) -> String { id.prefix(6).map { String(format: "%02x", $0) }.joined() }

    /// One line per open invite for `hush chat invites`.
    public static func inviteLine(_ invite: InviteSummary, now: Int64) -> String {
        let hours = max(0, invite.expiresAt - now) / 3600
        let minutes = max(0, invite.expiresAt - now) % 3600 / 60
        let who = invite.key.map { " by " + fingerprint(ofKey: $0) } ?? ""
        return "\(inviteID(invite.inviteId.bytes))  \(invite.state)\(who)  expires in \(hours) h \(minutes) min"
    }

    /// One JSON object per event for `read --json` (sorted keys, one line).
    public struct JSONEvent: Codable, Sendable, Equatable {
        public var type: String
        public var seq: Int?
        public var from: String?
        public var key: String?
        public var ts: Int64?
        public var text: String?
        public var epoch: Int?
        public var reason: String?
        public var count: Int?
        /// The sender's name (§6.7): for a message, its name now; for `named`, the name set.
        public var name: String?
        /// For `named`: the name before (absent: none); `sameName`: another key holds it too.
        public var previous: String?
        public var sameName: Bool?
        /// For `file`: what the file is, never its key (`hush chat save` fetches it).
        public var file: FileSummary?
    }

    public struct FileSummary: Codable, Sendable, Equatable {
        public var name: String
        public var size: Int
        public var type: String
        public init(name: String, size: Int, type: String) {
            self.name = name
            self.size = size
            self.type = type
        }
    }

    public static func json(_ event: RoomClient.Event, room: RoomState? = nil) -> JSONEvent {
        let named = { (key: String, event: JSONEvent) -> JSONEvent in
            var event = event
            event.name = room?.name(of: key)
            if event.name != nil { event.sameName = room?.sharesName(key) }
            return event
        }
        switch event {
        case .chat(let seq, let from, let ts, let text):
            return named(from, JSONEvent(type: "message", seq: seq, from: fingerprint(ofKey: from), key: from, ts: ts, text: text))
        case .message(let seq, let from, let text):
            return named(from, JSONEvent(type: "message", seq: seq, from: fingerprint(ofKey: from), key: from, text: text))
        case .file(let seq, let from, let ts, let file):
            var event = named(from, JSONEvent(type: "file", seq: seq, from: fingerprint(ofKey: from), key: from, ts: ts))
            event.file = FileSummary(name: file.name, size: file.size, type: file.type)
            return event
        case .named(let seq, let from, let name, let previous):
            var event = named(from, JSONEvent(type: "named", seq: seq, from: fingerprint(ofKey: from), key: from))
            event.name = name
            event.previous = previous
            return event
        case .rotated(let seq, let epoch): return JSONEvent(type: "rotated", seq: seq, epoch: epoch)
        case .memberJoined(let key): return JSONEvent(type: "member_joined", from: fingerprint(ofKey: key), key: key)
        case .memberLeft(let key): return JSONEvent(type: "member_left", from: fingerprint(ofKey: key), key: key)
        case .memberRemoved(let key): return JSONEvent(type: "member_removed", from: fingerprint(ofKey: key), key: key)
        case .memberGone(let key): return JSONEvent(type: "member_gone", from: fingerprint(ofKey: key), key: key)
        case .joinRequested(let key): return JSONEvent(type: "join_requested", from: fingerprint(ofKey: key), key: key)
        case .joinRefused(let key): return JSONEvent(type: "join_refused", from: fingerprint(ofKey: key), key: key)
        case .rotationDue(let count): return JSONEvent(type: "rotation_due", count: count)
        case .sendHeld: return JSONEvent(type: "send_held")
        case .rejected(let seq, let reason): return JSONEvent(type: "rejected", seq: seq, reason: reason.rawValue)
        case .removed: return JSONEvent(type: "removed")
        case .roomDeleted: return JSONEvent(type: "room_deleted")
        }
    }

    public static func jsonLine<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// Left-aligned columns.
    public static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// The rooms of a key store (no secrets).
    public static func roomList(_ store: KeyStore) -> String {
        table(["NAME", "ROOM", "ROLE", "STATUS", "MEMBERS", "EPOCH", "LAST", "SERVER"], store.rooms.map { room in
            [room.name, room.room, room.role.rawValue, room.status.rawValue, String(room.members.count + 1),
             String(room.epoch), String(room.lastSeq), room.server]
        })
    }
}

/// A line typed in `hush chat open`.
public enum LineCommand: Sendable, Equatable {
    case say(String)
    case invite
    case members
    case remove(String)
    case rotate
    case name(String)
    case file(String)
    case save(Int)
    case history
    case help
    case quit
    case empty
    case unknown(String)

    public static func parse(_ line: String) -> LineCommand {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return .empty }
        // `//text` sends `/text`.
        if trimmed.hasPrefix("//") { return .say(String(trimmed.dropFirst())) }
        guard trimmed.hasPrefix("/") else { return .say(line.trimmingCharacters(in: .newlines)) }
        let parts = trimmed.dropFirst().split(separator: " ", maxSplits: 1).map(String.init)
        let argument = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
        switch parts.first?.lowercased() ?? "" {
        case "invite": return .invite
        case "members", "who": return .members
        case "remove", "kick": return argument.isEmpty ? .unknown("/remove needs a member's fingerprint (prefix)") : .remove(argument)
        case "rotate": return .rotate
        case "name", "nick": return argument.isEmpty ? .unknown("/name needs your name in this room") : .name(argument)
        case "file": return argument.isEmpty ? .unknown("/file needs the path of the file to send") : .file(argument)
        case "save": return Int(argument).map { .save($0) } ?? .unknown("/save needs the number of a file's message (as shown)")
        case "history": return .history
        case "help", "?": return .help
        case "quit", "exit", "q": return .quit
        default: return .unknown("unknown command /\(parts.first ?? ""); try /help")
        }
    }

    public static let helpText = """
        commands: /invite  make a one-time invite link (owner)
                  /members list the members with their fingerprints
                  /remove FINGERPRINT  remove a member, by fingerprint prefix (owner)
                  /rotate  rotate the room key now (owner)
                  /name NAME  set or change your name in this room (members see it beside your fingerprint)
                  /file PATH  send a file (up to 25 MiB)
                  /save SEQ  save the file of message SEQ in the current folder
                  /history show the whole readable history
                  /quit    leave the chat (the room stays)
                  //text   send a line that starts with /
        """

    /// The one key among `keys` whose fingerprint starts with `prefix` (spaces and case ignored).
    public static func resolve(member prefix: String, among keys: [String]) -> Result<String, MemberLookupError> {
        let wanted = prefix.replacingOccurrences(of: " ", with: "").lowercased()
        guard wanted.count >= 4 else { return .failure(.tooShort) }
        let matches = keys.filter { Format.fingerprint(ofKey: $0).replacingOccurrences(of: " ", with: "").hasPrefix(wanted) }
        switch matches.count {
        case 0: return .failure(.none)
        case 1: return .success(matches[0])
        default: return .failure(.ambiguous(matches.count))
        }
    }

    public enum MemberLookupError: Error, Sendable, Equatable, CustomStringConvertible {
        case tooShort, none, ambiguous(Int)
        public var description: String {
            switch self {
            case .tooShort: "give at least 4 hex digits of the member's fingerprint"
            case .none: "no member has that fingerprint"
            case .ambiguous(let count): "\(count) members match; give more digits"
            }
        }
    }
}
