import ArgumentParser
import Foundation
import HushClient
import HushProtocol
import HushTerminal

/// `hush chat …`: the terminal client.
struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The terminal chat client (rooms, invites, joins, messages).",
        discussion: """
            Keys live in one encrypted key store: --store, else HUSH_STORE, else ~/.hush/keystore.hush, \
            sealed with a passphrase from HUSH_PASSPHRASE or asked for on the terminal. ROOM is the local \
            name or the room id (see `hush chat list`).
            """,
        subcommands: [New.self, Invite.self, Invites.self, Revoke.self, Join.self, Open.self, Send.self, Read.self, Save.self, List.self, Members.self, Remove.self,
                      Rotate.self, Name.self])
}

struct StoreOption: ParsableArguments {
    @Option(help: "Key store file (env HUSH_STORE; default ~/.hush/keystore.hush).")
    var store: String?
}

extension Chat {
    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a room and print a one-time invite link.")
        @OptionGroup var options: StoreOption
        @Argument(help: "Local name of the room.") var name: String
        @Option(help: "Server URL, e.g. http://127.0.0.1:8080.") var server: String
        @Option(help: "Rotate the room key every N messages (1–10000; default 100).") var rotateEvery: Int?
        @Option(help: "Hours the invite link stays valid (max 720).") var expires: Double = 24
        @Option(help: "What people who join later can read: `rotation` (messages since the last key rotation, the default) or `joined` (only what comes after they join: the key rotates before each joiner is answered).")
        var history: HistoryForNewMembers = .rotation

        func run() async throws {
            try await reportingErrors {
                if let rotateEvery, !(1...Limits.standard.maxRotateEvery).contains(rotateEvery) {
                    throw CLIError("--rotate-every must be 1…\(Limits.standard.maxRotateEvery)")
                }
                let store = try StoreAccess.keyStore(path: options.store, creating: true)
                let session = try await ChatSession.create(store: store, name: name, serverURL: server, rotateEvery: rotateEvery,
                                                           history: history)
                let link = try await session.invite(expiresIn: try inviteSeconds(expires))
                let record = await session.record
                printOut("created room \(name) (id \(record.room)) on \(record.server)")
                printOut("server key fingerprint: \(Format.fingerprint(ofKey: record.serverKey)) (compare with the server's banner)")
                printOut("your fingerprint in this room: \(Format.fingerprint(ofKey: session.me))")
                printOut("one-time invite link (valid \(Int(expires)) h; send it over a channel you trust):")
                printOut(link)
                await session.close()
            }
        }
    }

    struct Invite: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new one-time invite link (owner).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Option(help: "Hours the link stays valid (max 720).") var expires: Double = 24
        @Option(help: "The origin of a copy of the web client (`hush web export`) the link opens, e.g. https://chat.example; the link then names the relay.")
        var page: String?

        func run() async throws {
            try await reportingErrors {
                let page = try page.map { text throws(HushError) in try WebOrigin(text) }
                try await withSession(store: options.store, room: room) { session in
                    let link = try await session.invite(expiresIn: try inviteSeconds(expires), page: page)
                    printOut(link)
                }
            }
        }
    }

    struct Join: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Join a room with an invite link; waits for the owner's client to admit you.",
            discussion: "Interrupted? Run the same command again: the saved join resumes.")
        @OptionGroup var options: StoreOption
        @Argument(help: "The invite link.") var link: String
        @Option(help: "Local name for the room (default: the name the invite proposes, else room-<id prefix>).") var name: String?
        @Option(help: "Give up after this many seconds (default: wait until the owner comes).") var timeout: Double?

        func run() async throws {
            try await reportingErrors {
                let store = try StoreAccess.keyStore(path: options.store, creating: true)
                let session = try await ChatSession.join(store: store, link: link, name: name,
                                                         timeout: timeout.map { .milliseconds(Int64($0 * 1000)) }) {
                    printOut("join requested; waiting for the owner… (their client must be running)")
                }
                let record = await session.record
                // The owner's name as the invite gives it: chosen by the owner, so only beside the fingerprint.
                let ownerName = (try? InviteLink.parse(link).invite.ownerName).flatMap { $0 }.map { " \"\(Format.sanitize($0))\"" } ?? ""
                printOut("joined room \(record.name) (id \(record.room)); owner \(Format.fingerprint(ofKey: record.owner))\(ownerName)")
                printOut("your fingerprint in this room: \(Format.fingerprint(ofKey: session.me))")
                await session.close()
            }
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send one message or one file (for scripts and bots).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Option(help: "Send this file (up to 25 MiB) instead of text; members save it with `hush chat save`.") var file: String?
        @Argument(parsing: .remaining, help: "The text (words are joined by spaces).") var text: [String] = []
        /// Exit status of a message queued, not yet sent (sysexits' EX_TEMPFAIL).
        static let queuedExitCode: Int32 = 75

        func run() async throws {
            try await reportingErrors {
                let message = text.joined(separator: " ")
                if let file {
                    guard message.isEmpty else { throw CLIError("send either a file or text, not both") }
                    try await withSession(store: options.store, room: room) { session in
                        printOut(Format.sentFile(try await session.sendFile(path: file)))
                    }
                    return
                }
                guard !message.isEmpty else { throw CLIError("nothing to send") }
                try await withSession(store: options.store, room: room) { session in
                    if try await session.send(message) == .queued {
                        // Not an error to retry: a retry would send a second message. The queued
                        // one goes out, once, with the next `send` or `open` of this room.
                        printErr("the connection was lost: the message waits in the key store's outbox and goes out with the next `hush chat send` or `hush chat open` of this room")
                        throw ExitCode(Self.queuedExitCode)
                    }
                }
            }
        }
    }

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch, verify and save the file shared by message SEQ (as `hush chat read` shows it).",
            discussion: "The file is written whole or not at all, never over an existing file: a name already taken gets \" (1)\" etc.")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Argument(help: "The number of the file's message.") var seq: Int
        @Option(help: "Folder to save into (default: the current folder).") var out: String = "."

        func run() async throws {
            try await reportingErrors {
                let folder = URL(fileURLWithPath: out, isDirectory: true)
                try await withSession(store: options.store, room: room) { session in
                    printOut(Format.savedFile(try await session.saveFile(seq: seq, in: folder)))
                }
            }
        }
    }

    struct Read: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the messages not seen yet; with --follow keep printing (and, as owner, admit joiners and rotate).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Flag(help: "Keep running and print new messages as they come.") var follow = false
        @Flag(help: "One JSON object per line.") var json = false
        @Flag(help: "Everything readable, not only what was not seen yet.") var all = false

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let roomName = await session.record.name
                    let show: @Sendable (RoomClient.Event, RoomState) -> Void = { [json] event, room in
                        if json {
                            printOut(Format.jsonLine(Format.json(event, room: room)))
                        } else if let line = Format.line(event, me: session.me, room: room, roomName: roomName) {
                            printOut(line)
                        }
                    }
                    let events = try await session.catchUp(all: all)
                    let room = await session.roomState
                    for event in events { show(event, room) }
                    if follow {
                        if !json { printErr("following \(await session.record.name); Ctrl-C to stop") }
                        await followEvents(session) { event, room in show(event, room) }
                    }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the rooms of the key store.")
        @OptionGroup var options: StoreOption
        @Flag(help: "JSON (no secrets).") var json = false

        func run() async throws {
            try await reportingErrors {
                let store = try StoreAccess.keyStore(path: options.store).load()
                if json {
                    struct Row: Codable { var name, room, role, status, server: String; var members, epoch, lastSeq: Int }
                    printOut(Format.jsonLine(store.rooms.map {
                        Row(name: $0.name, room: $0.room, role: $0.role.rawValue, status: $0.status.rawValue, server: $0.server,
                            members: $0.members.count + 1, epoch: $0.epoch, lastSeq: $0.lastSeq)
                    }))
                } else if store.rooms.isEmpty {
                    printOut("no rooms yet: `hush chat new NAME --server URL` or `hush chat join LINK`")
                } else {
                    printOut(Format.roomList(store))
                }
            }
        }
    }

    struct Invites: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a room's open invites and the joins through them (owner).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let invites = try await session.openInvites()
                    let now = Int64(Date().timeIntervalSince1970)
                    printOut(invites.isEmpty ? "no open invites" : invites.map { Format.inviteLine($0, now: now) }.joined(separator: "\n"))
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End an invite, and any join through it (owner).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Argument(help: "The invite's id as `hush chat invites` shows it, or its first characters.") var invite: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    printOut("revoked \(try await session.revokeInvite(prefix: invite))")
                }
            }
        }
    }

    struct Members: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a room's owner and members with their fingerprints.")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let state = await session.roomState
                    for member in await session.members() {
                        printOut(Format.memberLine(member, me: session.me, room: state))
                    }
                }
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (owner), by fingerprint prefix; rotates the key.")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Argument(help: "The member's fingerprint, or its first digits.") var member: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let removed = try await session.remove(prefix: member)
                    printOut("removed \(Format.fingerprint(ofKey: removed)); the room key was rotated")
                }
            }
        }
    }

    struct Name: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set or change your name in a room; members see it beside your fingerprint.",
            discussion: "1 to 64 characters after trimming spaces, without control or bidi characters; sent sealed, so the server never sees it.")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String
        @Argument(parsing: .remaining, help: "Your name (words are joined by spaces).") var name: [String]

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let sent = try await session.setName(name.joined(separator: " "))
                    printOut("your name in \(await session.record.name) is now \"\(Format.sanitize(sent))\"")
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rotate the room key now (owner).")
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    try await session.rotate()
                    printOut("rotated; epoch \(await session.client.state.epoch)")
                }
            }
        }
    }
}

func inviteSeconds(_ hours: Double) throws -> Int64 {
    guard hours > 0, hours <= 720 else { throw CLIError("--expires must be in (0, 720] hours") }
    return Int64(hours * 3600)
}

/// Feeds live events to `show` until the room closes for this key, SIGINT or SIGTERM. The
/// session saves what it must as events come; the unsaved rest is written on the way out.
func followEvents(_ session: ChatSession, until stop: AsyncStream<Void>? = nil,
                  show: @escaping @Sendable (RoomClient.Event, RoomState) -> Void) async {
    let signals = SignalWatcher.shared.stream()
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            for await event in session.client.events {
                guard let event = await session.handle(event) else { continue }
                show(event, await session.roomState)
                if event == .removed || event == .roomDeleted { return }
            }
        }
        group.addTask {
            for await _ in signals { return }
        }
        group.addTask {
            await session.stayConnected { printErr($0) }
        }
        if let stop {
            group.addTask { for await _ in stop { return } }
        }
        group.addTask {
            // Counters and the last seen mark are saved at most once a second.
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                try? await session.flush()
            }
        }
        await group.next()
        group.cancelAll()
    }
}

/// SIGINT/SIGTERM as an async stream (so a follower writes its key store before exiting).
final class SignalWatcher: @unchecked Sendable {
    static let shared = SignalWatcher()
    private let sources: [DispatchSourceSignal]
    private let continuation: AsyncStream<Void>.Continuation
    private let stream_: AsyncStream<Void>

    private init() {
        (stream_, continuation) = AsyncStream.makeStream(of: Void.self)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            let continuation = self.continuation
            source.setEventHandler { continuation.yield() }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func stream() -> AsyncStream<Void> { stream_ }
}

extension HistoryForNewMembers: ExpressibleByArgument {}
