import ArgumentParser
import Foundation
import HushClient
import HushProtocol
import HushTerminal

extension Chat {
    /// The interactive chat: typed lines are sent, events print as they come.
    struct Open: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Chat interactively in a room (type /help for commands).",
            discussion: LineCommand.helpText)
        @OptionGroup var options: StoreOption
        @Argument(help: "Room name or id.") var room: String

        func run() async throws {
            try await reportingErrors {
                try await withSession(store: options.store, room: room) { session in
                    let record = await session.record
                    printOut("* \(record.name) (\(record.role.rawValue)); you are \(Format.short(session.me)); /help for commands, /quit to leave")
                    printOut(await session.historyForNewMembers == .joined
                             ? "* people who join later read only what comes after they join"
                             : "* people who join later can read messages since the last key rotation")
                    let events = try await session.catchUp()
                    let state = await session.roomState
                    for event in events {
                        if let line = Format.line(event, me: session.me, room: state, roomName: record.name) { printOut(line) }
                    }
                    // Lines typed while offline go out when they can; each is shown once, when committed.
                    await session.onDelivered { line, seq, shown in
                        guard !shown else { return }
                        printOut(Format.line(.chat(seq: seq, from: session.me, ts: line.at, text: line.text),
                                             me: session.me, room: await session.roomState) ?? "")
                    }
                    do {
                        try await session.sendQueued()
                    } catch {
                        printOut("! \(describe(error))")
                    }
                    let (quit, quitSink) = AsyncStream.makeStream(of: Void.self)
                    let input = Task {
                        for await line in StandardInput.lines() {
                            if await !Self.run(LineCommand.parse(line), session) { break }
                        }
                        quitSink.yield()
                    }
                    await followEvents(session, until: quit) { event, room in
                        if let line = Format.line(event, me: session.me, room: room, roomName: record.name) { printOut(line) }
                    }
                    input.cancel()
                }
            }
        }

        /// Runs one typed line; false to quit.
        static func run(_ command: LineCommand, _ session: ChatSession) async -> Bool {
            do {
                switch command {
                case .empty: break
                case .quit: return false
                case .help: printOut(LineCommand.helpText)
                case .unknown(let why): printOut("! \(why)")
                case .say(let text):
                    if try await session.send(text) == .queued {
                        printOut("* not connected: the message waits in the outbox and is sent when the connection is back")
                    }
                case .name(let name):
                    let sent = try await session.setName(name)
                    printOut("* your name in this room is now \"\(Format.sanitize(sent))\"")
                case .file(let path):
                    printOut("* " + Format.sentFile(try await session.sendFile(path: path)))
                case .save(let seq):
                    printOut("* " + Format.savedFile(try await session.saveFile(seq: seq, in: URL(fileURLWithPath: ".", isDirectory: true))))
                case .invite:
                    printOut("* one-time invite link (valid 24 h):")
                    printOut(try await session.invite())
                case .members:
                    let state = await session.roomState
                    for member in await session.members() {
                        printOut("* " + Format.memberLine(member, me: session.me, room: state))
                    }
                case .remove(let prefix):
                    let removed = try await session.remove(prefix: prefix)
                    printOut("* removed \(Format.fingerprint(ofKey: removed)); the room key was rotated")
                case .rotate:
                    try await session.rotate()
                    printOut("* the room key was rotated (epoch \(await session.client.state.epoch))")
                case .history:
                    let events = try await session.catchUp(all: true)
                    let state = await session.roomState
                    let roomName = await session.record.name
                    for event in events {
                        if let line = Format.line(event, me: session.me, room: state, roomName: roomName) { printOut(line) }
                    }
                }
            } catch {
                printOut("! \(describe(error))")
            }
            return true
        }
    }
}

/// Lines of standard input, read on their own thread; the stream ends at EOF.
enum StandardInput {
    static func lines() -> AsyncStream<String> {
        let (stream, sink) = AsyncStream.makeStream(of: String.self)
        let thread = Thread {
            while let line = readLine(strippingNewline: true) { sink.yield(line) }
            sink.finish()
        }
        thread.start()
        return stream
    }
}
