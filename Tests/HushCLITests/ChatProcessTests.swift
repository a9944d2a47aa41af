import Foundation
import HushTestSupport
import HushClient
import HushProtocol
import HushTerminal
import Testing
import ThemisKit

/// Real `hush chat` processes and `HushClient`s in one room through a real server.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ChatProcessTests {
    static func event(_ line: String) -> Format.JSONEvent? {
        try? JSONDecoder().decode(Format.JSONEvent.self, from: Data(line.utf8))
    }

    /// `hush chat new ARGUMENTS`, which must succeed: the invite link it prints.
    static func newRoom(_ arguments: [String], environment: [String: String]) async throws -> String {
        let created = try await HushProcess.run(["chat", "new"] + arguments, environment: environment)
        #expect(created.status == 0, "\(created.stderr)")
        return try #require(created.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init))
    }

    /// Room `club` made by a terminal key store in `folder`, and its owner's `read --follow`
    /// connected (the creating process's connection gone). The caller terminates the follower.
    static func clubWithFollowingOwner(on server: TestServer, in folder: TempFolder) async throws
        -> (env: [String: String], follower: HushProcess) {
        let env = ["HUSH_STORE": folder.path("owner.hush"), "HUSH_PASSPHRASE": "owner pass"]
        _ = try await newRoom(["club", "--server", server.url], environment: env)
        let owner = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club").myKey
        try await waitUntil("the creating process's connection is gone") { server.server.hub.connectionCount(of: owner) == 0 }
        let follower = try HushProcess(["chat", "read", "club", "--follow", "--json"], environment: env)
        try await waitUntil("the follower is connected") { server.server.hub.connectionCount(of: owner) == 1 }
        return (env, follower)
    }

    /// A `hush serve` process of its own (so that a test can kill and restart it on its data and
    /// port) and a room `lobby` created there by a terminal key store in `folder`.
    static func roomOnItsOwnServer(in folder: TempFolder) async throws -> (server: ServeProcess, env: [String: String], link: String) {
        let server = try await ServeProcess.start(data: URL(fileURLWithPath: folder.path("server")))
        let env = ["HUSH_STORE": folder.path("owner/keystore.hush"), "HUSH_PASSPHRASE": "owner's passphrase"]
        let link = try await Self.newRoom(["lobby", "--server", server.url], environment: env)
        return (server, env, link)
    }

    /// A follower outlives its server: when the server is killed and comes back (a restart, or
    /// a proxy sending it to another node), `read --follow` connects again by itself and prints
    /// what was sent while it was away, then what comes next.
    @Test func aFollowerReconnectsWhenItsServerComesBack() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let (first, env, link) = try await Self.roomOnItsOwnServer(in: folder)
        let data = first.data, port = first.port
        let follower = try HushProcess(["chat", "read", "lobby", "--follow", "--json"], environment: env)
        let alice = try await RoomClient.join(link: link)
        try await alice.send("before the restart")
        _ = try await follower.line { Self.event($0)?.text == "before the restart" }

        first.kill()
        _ = await first.waitForExit(timeout: .seconds(20))
        try await using(try await ServeProcess.start(data: data, port: port), stop: { await $0.stop() }) { second in
            _ = try await alice.reconnect(to: try await ServerInfo.fetch(second.url))
            try await alice.send("while the follower was away")
            try await alice.send("after it came back")
            _ = try await follower.line { Self.event($0)?.text == "while the follower was away" }
            _ = try await follower.line { Self.event($0)?.text == "after it came back" }
            kill(follower.pid, SIGINT)
            #expect(try await follower.exit() == 0)
        }
    }

    /// Lines typed while the server is down wait in the key store's outbox: `chat open` sends
    /// them when it has connected again, and a line left queued when `chat open` quit goes out
    /// with the next `chat send`, before that one. Each arrives once, in the order typed.
    @Test func linesTypedOfflineGoOutOnceInOrder() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let (first, env, link) = try await Self.roomOnItsOwnServer(in: folder)
        let data = first.data, port = first.port
        let queued = "* not connected: the message waits in the outbox and is sent when the connection is back"
        let chat = try HushProcess(["chat", "open", "lobby"], environment: env)
        _ = try await chat.line { $0.hasPrefix("* lobby") }
        let alice = try await RoomClient.join(link: link)  // `chat open` admits her
        chat.write("online")
        _ = try await chat.line { $0.hasSuffix("(you)> online") }
        first.kill()
        _ = await first.waitForExit(timeout: .seconds(20))
        chat.write("offline one")
        _ = try await chat.line { $0 == queued }
        chat.write("offline two")
        _ = try await chat.line { $0 == queued }
        let second = try await ServeProcess.start(data: data, port: port)
        try await using(second, stop: { await $0.stop() }) { second in
            // The backoff is at most 30 s between attempts.
            _ = try await chat.line(timeout: .seconds(90)) { $0.hasSuffix("(you)> offline one") }
            _ = try await chat.line { $0.hasSuffix("(you)> offline two") }
            // Queued again, then the process quits: the line stays in the key store.
            second.kill()
            _ = await second.waitForExit(timeout: .seconds(20))
            chat.write("offline three")
            _ = try await chat.line { $0 == queued }
            chat.write("/quit")
            #expect(try await chat.exit() == 0)
        }
        try await using(try await ServeProcess.start(data: data, port: port), stop: { await $0.stop() }) { third in
            let sent = try await HushProcess.run(["chat", "send", "lobby", "after"], environment: env)
            #expect(sent.status == 0, "\(sent.stderr)")
            _ = try await alice.reconnect(to: try await ServerInfo.fetch(third.url))
            let texts = try await alice.history(after: 0).compactMap(text(of:))
            #expect(texts == ["online", "offline one", "offline two", "offline three", "after"])
        }
    }

    /// The owner is the terminal client; Alice and Bob are `RoomClient`s.
    @Test func ownerProcessWithTwoClients() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let storePath = folder.path("owner/keystore.hush")
            let env = ["HUSH_STORE": storePath, "HUSH_PASSPHRASE": "owner's passphrase"]

            let created = try await HushProcess.run(["chat", "new", "lobby", "--server", server.url, "--rotate-every", "4"], environment: env)
            #expect(created.status == 0, "\(created.stderr)")
            let link1 = try #require(created.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init))
            let mode = try FileManager.default.attributesOfItem(atPath: storePath)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600)
            #expect(!created.stdout.contains("owner's passphrase") && !created.stderr.contains("owner's passphrase"))
            let invited = try await HushProcess.run(["chat", "invite", "lobby"], environment: env)
            #expect(invited.status == 0, "\(invited.stderr)")
            let link2 = invited.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(link2.hasPrefix("http://") && link2 != link1)

            // A restarted owner client (tokens from the key store) admits joiners as they come.
            let follower = try HushProcess(["chat", "read", "lobby", "--follow", "--json"], environment: env)
            let alice = try await RoomClient.join(link: link1)
            let aliceFingerprint = Format.fingerprint(ofKey: await alice.key)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" && Self.event($0)?.from == aliceFingerprint }

            // The invite is one-time.
            do {
                _ = try await RoomClient.join(link: link1, timeout: .seconds(5))
                Issue.record("a used invite let a second key join")
            } catch let error as HushError {
                // The server deleted the invite when Alice was added.
                #expect(error.code == .unknownInvite || error.code == .inviteUsed)
            }
            let bob = try await RoomClient.join(link: link2)

            // Chat both ways.
            try await alice.send("hello from alice")
            let seen = try await follower.line { Self.event($0)?.text == "hello from alice" }
            #expect(Self.event(seen)?.from == aliceFingerprint)
            let sent = try await HushProcess.run(["chat", "send", "lobby", "hello", "from", "the", "owner"], environment: env)
            #expect(sent.status == 0, "\(sent.stderr)")
            for client in [alice, bob] {
                let got = try await next(client.events, where: isMessage("hello from the owner"))
                guard case .message(_, let from, _) = got else { Issue.record("not a message"); return }
                #expect(from == KeyID.json(await client.state.owner))
            }

            // Rotation at 4 messages: the owner's running client reacts to rotation_due.
            try await bob.send("b1")
            try await bob.send("b2")
            let rotated = try await next(alice.events) { if case .rotated = $0 { true } else { false } }
            #expect(rotated == .rotated(seq: 5, epoch: 1))
            try await alice.send("under the new key")
            _ = try await follower.line { Self.event($0)?.text == "under the new key" }

            // kill -9 mid-run: the store still opens and holds what was committed (the new key).
            kill(follower.pid, SIGKILL)
            _ = try await follower.exit()
            let saved = try KeyStoreFile(path: storePath, passphrase: env["HUSH_PASSPHRASE"]!).load().find("lobby")
            #expect(saved.epoch == 1 && saved.keys["1"] != nil && saved.members.count == 2)
            let aliceKey1 = await alice.state.keys[1]
            #expect(saved.keys["1"]?.symmetricKey == aliceKey1)

            // History after being offline.
            let bobState = await bob.state
            await bob.disconnect()
            try await alice.send("while bob was away")
            let bobAgain = try await RoomClient.resume(bobState, on: try await server.info())
            let missed = try await bobAgain.history().compactMap(text(of:))
            #expect(missed.last == "while bob was away" && !missed.contains("b2"))

            let members = try await HushProcess.run(["chat", "members", "lobby"], environment: env)
            #expect(members.stdout.split(separator: "\n").count == 3, "\(members.stdout) \(members.stderr)")
            // Interactive: members, removal (wrapped rotation), a line typed after it.
            let chat = try HushProcess(["chat", "open", "lobby"], environment: env)
            _ = try await chat.line { $0.hasPrefix("* lobby") }
            let bobFingerprint = Format.fingerprint(ofKey: await bob.key)
            chat.write("/members")
            _ = try await chat.line { $0.contains(bobFingerprint) }
            chat.write("/remove " + bobFingerprint.replacingOccurrences(of: " ", with: "").prefix(10))
            _ = try await chat.line { $0.hasPrefix("* removed") }
            _ = try await next(alice.events) { $0 == .memberRemoved(key: bobState.myKey) }
            _ = try await next(alice.events) { if case .rotated(_, 2) = $0 { true } else { false } }
            chat.write("secret after removal")
            _ = try await next(alice.events, where: isMessage("secret after removal"))
            chat.write("/quit")
            #expect(try await chat.exit() == 0)

            // The removed member cannot read what was sent after: refused by the server, and the
            // ciphertext itself does not open with what Bob holds.
            var request = WireMessage(type: "history")
            request.room = await alice.room
            request.after = 0
            let envelopes = try await alice.rawConnection.request(request).messages ?? []
            let secret = try #require(envelopes.last { $0.kind == "message" })
            #expect(secret.epoch == 2)
            var bobView = await bobAgain.state
            if case .rejected = bobView.receive(secret) {} else { Issue.record("bob read a message sent after his removal") }
            let rotation = try #require(envelopes.last { $0.kind == "rotation" })
            if case .rejected = bobView.receive(rotation) {} else { Issue.record("bob opened the rotation after his removal") }
            do {
                _ = try await bobAgain.history(after: 0)
                Issue.record("the server served history to a removed key")
            } catch {}

            // Wrong passphrase: a clear message, the file untouched.
            let before = try Data(contentsOf: URL(fileURLWithPath: storePath))
            var wrongEnv = env
            wrongEnv["HUSH_PASSPHRASE"] = "not the passphrase"
            let refused = try await HushProcess.run(["chat", "send", "lobby", "x"], environment: wrongEnv)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("wrong passphrase"))
            #expect(try Data(contentsOf: URL(fileURLWithPath: storePath)) == before)
            let listed = try await HushProcess.run(["chat", "list"], environment: env)
            #expect(listed.stdout.contains("lobby") && listed.stdout.contains("owner"))
        }
    }

    /// Issue-11 cases: a following owner shows every message of a burst that crosses its own
    /// rotation exactly once; two `hush chat send` processes at once use distinct counters (the
    /// counter is reserved in the key store before the message leaves); the owner lists and
    /// revokes invites.
    @Test func followAcrossRotationConcurrentSendsAndInvites() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("owner.hush"), "HUSH_PASSPHRASE": "owner pass"]
            let link = try await Self.newRoom(["burst", "--server", server.url, "--rotate-every", "4"], environment: env)
            let follower = try HushProcess(["chat", "read", "burst", "--follow", "--json"], environment: env)
            defer { follower.process.terminate() }
            let alice = try await RoomClient.join(link: link)
            let aliceFingerprint = Format.fingerprint(ofKey: await alice.key)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" && Self.event($0)?.from == aliceFingerprint }

            // A burst of 8 while the following owner rotates after the 4th.
            for index in 0..<8 { try await alice.send("burst-\(index)") }
            var shown: [String] = []
            while shown.count < 8 {
                let line = try await follower.line { Self.event($0)?.type == "message" }
                shown.append(Self.event(line)?.text ?? "")
            }
            #expect(shown == (0..<8).map { "burst-\($0)" })

            // Two send processes at once with the same key store.
            async let first = HushProcess.run(["chat", "send", "burst", "one of two"], environment: env)
            async let second = HushProcess.run(["chat", "send", "burst", "two of two"], environment: env)
            let results = try await [first, second]
            #expect(results.allSatisfy { $0.status == 0 }, "\(results.map(\.stderr))")
            var received: Set<String> = []
            while received.count < 2 {
                // Alice's own burst may come back through a history read: only these two count.
                let event = try await next(alice.events) {
                    if case .message(_, _, let text) = $0 { text.hasSuffix(" of two") } else if case .rejected = $0 { true } else { false }
                }
                guard case .message(_, _, let text) = event else { Issue.record("dropped: \(event)"); break }
                received.insert(text)
            }
            #expect(received == ["one of two", "two of two"])

            // Invites: list, revoke by short id, list again.
            _ = try await HushProcess.run(["chat", "invite", "burst"], environment: env)
            let listed = try await HushProcess.run(["chat", "invites", "burst"], environment: env)
            let lines = listed.stdout.split(separator: "\n")
            #expect(listed.status == 0 && lines.count == 1 && lines[0].contains("open"), "\(listed.stdout) \(listed.stderr)")
            let shortID = String(try #require(lines.first?.split(separator: " ").first))
            let revoked = try await HushProcess.run(["chat", "revoke", "burst", String(shortID.prefix(6))], environment: env)
            #expect(revoked.status == 0 && revoked.stdout.contains(shortID), "\(revoked.stderr)")
            #expect(try await HushProcess.run(["chat", "invites", "burst"], environment: env).stdout.contains("no open invites"))
        }
    }

    /// A running `hush chat read --follow` admits a join through an invite that another process
    /// of the same key store made after it started.
    @Test func aFollowingOwnerAdmitsAnInviteAnotherProcessMade() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let (env, follower) = try await Self.clubWithFollowingOwner(on: server, in: folder)
            defer { follower.process.terminate() }

            let invited = try await HushProcess.run(["chat", "invite", "club"], environment: env)
            let link = try #require(invited.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init),
                                    "\(invited.stderr)")
            let joiner = try await RoomClient.join(link: link, timeout: .seconds(60))
            let fingerprint = Format.fingerprint(ofKey: await joiner.key)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" && Self.event($0)?.from == fingerprint }
        }
    }

    /// `hush chat invite --page`: a link for a copy of the web client elsewhere (`hush web
    /// export`) opens that page and names the relay, and a client joins through it at the relay.
    @Test func anInviteForAnotherPageNamesTheRelay() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let (env, follower) = try await Self.clubWithFollowingOwner(on: server, in: folder)
            defer { follower.process.terminate() }
            let refused = try await HushProcess.run(["chat", "invite", "club", "--page", "https://chat.example/"], environment: env)
            #expect(refused.status == 1 && refused.stderr.contains("not an origin"), "\(refused.stderr)")

            let invited = try await HushProcess.run(["chat", "invite", "club", "--page", "https://chat.example"], environment: env)
            let link = try #require(invited.stdout.split(separator: "\n").first { $0.hasPrefix("https://chat.example/#") }.map(String.init),
                                    "\(invited.stdout) \(invited.stderr)")
            #expect(try InviteLink.parse(link).invite.relay == server.url)
            let joiner = try await RoomClient.join(link: link, timeout: .seconds(60))
            let fingerprint = Format.fingerprint(ofKey: await joiner.key)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" && Self.event($0)?.from == fingerprint }
        }
    }

    /// `hush chat remove` in another process while the owner's `read --follow` runs: the
    /// follower reads the wrapped rotation made for it (the owner's own wrap) and every message
    /// after it, instead of "rotation not readable by this key" and silence.
    @Test func aFollowingOwnerReadsOnAfterAnotherProcessRemovesAMember() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("owner.hush"), "HUSH_PASSPHRASE": "owner pass"]
            let link = try await Self.newRoom(["club", "--server", server.url], environment: env)
            let follower = try HushProcess(["chat", "read", "club", "--follow", "--json"], environment: env)
            defer { follower.process.terminate() }
            let alice = try await RoomClient.join(link: link)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" }
            let invited = try await HushProcess.run(["chat", "invite", "club"], environment: env)
            let link2 = try #require(invited.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init))
            let bob = try await RoomClient.join(link: link2)
            let bobFingerprint = Format.fingerprint(ofKey: await bob.key)
            _ = try await follower.line { Self.event($0)?.type == "member_joined" && Self.event($0)?.from == bobFingerprint }

            let removed = try await HushProcess.run(["chat", "remove", "club", String(bobFingerprint.filter { $0 != " " }.prefix(8))],
                                                    environment: env)
            #expect(removed.status == 0, "\(removed.stderr)")
            _ = try await next(alice.events) { if case .rotated = $0 { true } else { false } }
            try await alice.send("after the removal")
            let shown = try await follower.line { Self.event($0)?.type == "message" || Self.event($0)?.type == "rejected" }
            #expect(Self.event(shown)?.text == "after the removal", "\(shown)")
        }
    }

    /// The terminal client joins while the owner (a `RoomClient`) is offline.
    @Test func joinerProcessWaitsForTheOwner() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("joiner.hush"), "HUSH_PASSPHRASE": "joiner pass"]
            let owner = try await RoomClient.create(server: try await server.info())
            let link = try await owner.invite()
            await owner.disconnect()

            let join = try HushProcess(["chat", "join", link, "--name", "club"], environment: env)
            _ = try await join.line { $0.contains("waiting for the owner") }
            try await owner.reconnect()
            _ = try await join.line { $0.hasPrefix("joined room club") }
            #expect(try await join.exit() == 0)
            let record = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club")
            #expect(record.status == .active && record.join == nil)
            await owner.waitForMember(record.myKey)

            try await owner.send("welcome")
            let read = try await HushProcess.run(["chat", "read", "club", "--json"], environment: env)
            #expect(read.status == 0, "\(read.stderr)")
            let events = read.stdout.split(separator: "\n").compactMap { Self.event(String($0)) }
            #expect(events.map(\.text) == ["welcome"])
            // Read again: nothing new (the last seen mark was kept).
            #expect(try await HushProcess.run(["chat", "read", "club", "--json"], environment: env).stdout.isEmpty)
            let sent = try await HushProcess.run(["chat", "send", "club", "thanks"], environment: env)
            #expect(sent.status == 0, "\(sent.stderr)")
            _ = try await next(owner.events, where: isMessage("thanks"))
            // The same link again is refused (the key store already holds the room).
            let again = try await HushProcess.run(["chat", "join", link], environment: env)
            #expect(again.status != 0)
        }
    }

    /// Names (docs/PROTOCOL.md §6.7) through the terminal: `hush chat name` sets and changes
    /// the joiner's name, `read` shows names beside fingerprints and marks a name two keys hold,
    /// `members` lists them, and a name outside the rule is refused before anything is sent.
    @Test func namesBesideFingerprints() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("joiner.hush"), "HUSH_PASSPHRASE": "joiner pass"]
            let owner = try await RoomClient.create(server: try await server.info())
            try await owner.setName("Olivia")
            let link = try await owner.invite()
            let join = try await HushProcess.run(["chat", "join", link, "--name", "club"], environment: env)
            #expect(join.status == 0, "\(join.stderr)")
            let record = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club")
            await owner.waitForMember(record.myKey)
            let ownerKey = await owner.key

            // The owner's name, set before the join, is read with the history.
            let first = try await HushProcess.run(["chat", "read", "club", "--json"], environment: env)
            let names = first.stdout.split(separator: "\n").compactMap { Self.event(String($0)) }
            #expect(names.map(\.type) == ["named"] && names.first?.name == "Olivia" && names.first?.previous == nil
                    && names.first?.key == ownerKey, "\(first.stdout)")

            let named = try await HushProcess.run(["chat", "name", "club", "  Jo  "], environment: env)
            #expect(named.status == 0 && named.stdout.contains("your name in club is now \"Jo\""), "\(named.stderr)")
            _ = try await next(owner.events, where: { $0 == .named(seq: 2, from: record.myKey, name: "Jo", previous: nil) })
            let refused = try await HushProcess.run(["chat", "name", "club", "Jo\u{1B}[2J"], environment: env)
            #expect(refused.status != 0 && refused.stderr.contains("1 to 64 characters"), "\(refused.stderr)")

            try await owner.send("welcome")
            let read = try await HushProcess.run(["chat", "read", "club", "--json"], environment: env)
            let events = read.stdout.split(separator: "\n").compactMap { Self.event(String($0)) }
            #expect(events.map(\.text) == ["welcome"] && events.first?.name == "Olivia" && events.first?.sameName == false, "\(read.stdout)")

            // The owner takes the same name: the change is shown, and both keys are marked.
            try await owner.setName("Jo")
            try await owner.send("me too")
            let lines = try await HushProcess.run(["chat", "read", "club"], environment: env).stdout
            let short = Format.short(ownerKey)
            #expect(lines.contains("* \(short) \"Olivia\" is now called \"Jo\""), "\(lines)")
            #expect(lines.contains("<\(short) \"Jo\" [same name as another key]> me too"), "\(lines)")
            let members = try await HushProcess.run(["chat", "members", "club"], environment: env).stdout
            #expect(members.contains("owner  \"Jo\" [same name as another key]"), "\(members)")
            #expect(members.contains("member  \"Jo\" [same name as another key] (you)"), "\(members)")
            // The names are kept in the key store: history is read only after the last seq seen.
            let kept = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club")
            #expect(Set((kept.names ?? []).map { "\($0.name)@\($0.seq)" }) == ["Jo@2", "Jo@4"])
        }
    }

    /// `hush chat send` never marks as read what others sent before it: the next `read` shows it.
    @Test func sendingDoesNotSkipUnreadMessages() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("joiner.hush"), "HUSH_PASSPHRASE": "joiner pass"]
            let owner = try await RoomClient.create(server: try await server.info())
            let join = try await HushProcess.run(["chat", "join", try await owner.invite(), "--name", "club"], environment: env)
            #expect(join.status == 0, "\(join.stderr)")
            let record = try KeyStoreFile(path: env["HUSH_STORE"]!, passphrase: env["HUSH_PASSPHRASE"]!).load().find("club")
            await owner.waitForMember(record.myKey)
            try await owner.send("unread one")
            try await owner.send("unread two")
            let sent = try await HushProcess.run(["chat", "send", "club", "mine"], environment: env)
            #expect(sent.status == 0, "\(sent.stderr)")
            let read = try await HushProcess.run(["chat", "read", "club", "--json"], environment: env)
            let texts = read.stdout.split(separator: "\n").compactMap { Self.event(String($0))?.text }
            #expect(texts == ["unread one", "unread two", "mine"], "\(read.stdout)")
            // Read once, shown once: the next read has nothing new.
            let again = try await HushProcess.run(["chat", "read", "club", "--json"], environment: env)
            let shownAgain = again.stdout.split(separator: "\n").compactMap { Self.event(String($0))?.text }
            #expect(shownAgain.isEmpty, "\(again.stdout)")
        }
    }

    /// A joiner reads history only from the last rotation before it joined: the owner's name,
    /// set before that rotation, reaches it because the owner's running client sends it again
    /// once the joiner is admitted (PROTOCOL.md §6.7).
    @Test func theOwnersNameReachesAJoinerAfterARotation() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let env = ["HUSH_STORE": folder.path("owner.hush"), "HUSH_PASSPHRASE": "owner pass"]
            let link = try await Self.newRoom(["lobby", "--server", server.url], environment: env)
            #expect(try await HushProcess.run(["chat", "name", "lobby", "Olivia"], environment: env).status == 0)
            #expect(try await HushProcess.run(["chat", "rotate", "lobby"], environment: env).status == 0)

            let follower = try HushProcess(["chat", "read", "lobby", "--follow", "--json"], environment: env)
            let joiner = try await RoomClient.join(link: link)
            let owner = KeyID.json(await joiner.state.owner)
            let named = try await next(joiner.events) { if case .named(_, owner, "Olivia", nil) = $0 { true } else { false } }
            guard case .named(let seq, _, _, _) = named else { return }
            #expect(seq == 3, "after the name (1) and the rotation (2)")
            #expect(await joiner.names[owner]?.name == "Olivia")
            kill(follower.pid, SIGTERM)
            _ = try await follower.exit()
            let members = try await HushProcess.run(["chat", "members", "lobby"], environment: env)
            #expect(members.stdout.contains("owner  \"Olivia\" (you)"), "\(members.stdout)")
        }
    }

    /// An invite proposes the room's name and says the owner's (§6.6): `hush chat join` without
    /// `--name` keeps the proposed name, and says who invited, beside the fingerprint.
    @Test func anInviteProposesTheRoomAndOwnerNames() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            let owner = ["HUSH_STORE": folder.path("owner.hush"), "HUSH_PASSPHRASE": "owner pass"]
            #expect(try await HushProcess.run(["chat", "new", "book-club", "--server", server.url], environment: owner).status == 0)
            #expect(try await HushProcess.run(["chat", "name", "book-club", "Olivia"], environment: owner).status == 0)
            let invited = try await HushProcess.run(["chat", "invite", "book-club"], environment: owner)
            let link = try #require(invited.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init))
            let invite = try InviteLink.parse(link).invite
            #expect(invite.roomName == "book-club" && invite.ownerName == "Olivia")

            let follower = try HushProcess(["chat", "read", "book-club", "--follow"], environment: owner)
            defer { follower.process.terminate() }
            let joiner = ["HUSH_STORE": folder.path("joiner.hush"), "HUSH_PASSPHRASE": "joiner pass"]
            let joined = try await HushProcess.run(["chat", "join", link, "--timeout", "60"], environment: joiner)
            #expect(joined.status == 0, "\(joined.stderr)")
            let ownerFingerprint = Format.fingerprint(ofKey: invite.owner)
            #expect(joined.stdout.contains("joined room book-club") && joined.stdout.contains("owner \(ownerFingerprint) \"Olivia\""),
                    "\(joined.stdout)")
            let listed = try await HushProcess.run(["chat", "list"], environment: joiner)
            #expect(listed.stdout.contains("book-club"), "\(listed.stdout)")
        }
    }

    /// A room made with `--history joined`: the owner's client rotates (saving the key first)
    /// before it answers a joiner, so the joiner reads nothing sent before it was let in; the
    /// invite says so. A room of the default lets the joiner read since the last rotation.
    @Test func aRoomWhoseNewMembersReadOnlyWhatComesAfterTheyJoin() async throws {
        try await withTestServer { server in
            let folder = try TempFolder()
            defer { folder.remove() }
            for (history, readsEarlier) in [("joined", false), ("rotation", true)] {
                let env = ["HUSH_STORE": folder.path("\(history).hush"), "HUSH_PASSPHRASE": "owner pass"]
                let link = try await Self.newRoom(["club", "--server", server.url, "--history", history], environment: env)
                #expect(try InviteLink.parse(link).invite.historyForNewMembers.rawValue == history)
                #expect(try await HushProcess.run(["chat", "send", "club", "before the join"], environment: env).status == 0)

                let follower = try HushProcess(["chat", "read", "club", "--follow"], environment: env)
                let alice = try await RoomClient.join(link: link)
                #expect(await alice.state.epoch == (readsEarlier ? 0 : 1), "\(history)")
                let texts = try await alice.history(after: 0).compactMap(text(of:))
                #expect(texts.contains("before the join") == readsEarlier, "\(history): \(texts)")
                #expect(try await HushProcess.run(["chat", "send", "club", "after the join"], environment: env).status == 0)
                _ = try await next(alice.events, where: isMessage("after the join"))
                follower.process.terminate()
                _ = try? await follower.exit()
                await alice.disconnect()
            }
        }
    }

    /// The room key rotates between the owner's response and the joiner's confirmation: the
    /// owner answers again with the current key and the join completes.
    @Test func ownerAnswersAgainAfterTheKeyRotated() async throws {
        try await withTestServer { server in
            let info = try await server.info()
            let owner = try await RoomClient.create(server: info)
            let invite = try InviteLink.parse(try await owner.invite()).invite
            let (flow, joiner) = try await sendJoinRequest(invite, server: info)
            let first = try await next(joiner.pushes) { $0.type == "join_response" }
            let stale = try flow.accept(sealed: first.sealed!.bytes)
            #expect(stale.state.epoch == 0)
            try await owner.rotate()
            var confirm = WireMessage(type: "join_confirm")
            confirm.room = invite.room
            confirm.inviteId = Base64Bytes(invite.inviteID)
            confirm.sealed = Base64Bytes(stale.confirmation)
            try await joiner.request(confirm)
            let second = try await next(joiner.pushes) { $0.type == "join_response" }
            let fresh = try flow.accept(sealed: second.sealed!.bytes)
            let ownerKey = await owner.state.currentKey
            #expect(fresh.state.epoch == 1 && fresh.state.currentKey == ownerKey)
            confirm.sealed = Base64Bytes(fresh.confirmation)
            try await joiner.request(confirm)
            let joined = try await next(joiner.pushes) { $0.type == "member_joined" }
            #expect(joined.key == KeyID.json(flow.me.publicKey))
        }
    }
}

/// `hush bench relay` against a test server: it delivers and reports sane numbers. The run is
/// bounded by a message count, not a time window, so a loaded machine only makes it slower.
@Suite(.timeLimit(.minutes(5))) struct BenchRelayTests {
    /// 2 rooms × 3 members, 64-byte messages, `messages` per sender; the time bounds are far
    /// beyond what the run needs, so only the message count ends it.
    static func countBoundRun(server: String, rate: Double, messages: Int, handshakes: Int) -> BenchConfig {
        var config = BenchConfig(server: server)
        config.rooms = 2
        config.members = 3
        config.size = 64
        config.rate = rate
        config.messages = messages
        config.duration = 600
        config.drain = 60
        config.handshakes = handshakes
        return config
    }

    /// `hush bench files`: every file comes back byte for byte, each phase reports a rate, and
    /// the server's CPU is read when its process id is given (the test server is this process).
    @Test func fileRunVerifiesEveryFileAndReports() async throws {
        try await withTestServer { server in
            var config = FileBenchConfig(server: server.url)
            config.mebibytes = 1
            config.files = 2
            config.serverPID = getpid()
            let report = try await FileBenchRunner.run(config)
            #expect(report.verified == 2)
            #expect(report.seal.mebibytesPerSecond > 0 && report.upload.mebibytesPerSecond > 0 && report.download.mebibytesPerSecond > 0)
            #expect(report.upload.serverMillisPerMebibyte != nil && report.seal.serverMillisPerMebibyte == nil)
            #expect(report.table.contains("verified  2 of 2"))
            #expect(try JSONDecoder().decode(FileBenchReport.self, from: Data(Format.jsonLine(report).utf8)) == report)
        }
        for (mebibytes, files) in [(0, 1), (26, 1), (1, 0), (1, 101)] {
            var config = FileBenchConfig(server: "http://127.0.0.1:1")
            config.mebibytes = mebibytes
            config.files = files
            #expect(throws: ChatError.self) { try config.validate() }
        }
    }

    @Test func shortRunDeliversAndReports() async throws {
        try await withTestServer { server in
            let config = Self.countBoundRun(server: server.url, rate: 5, messages: 3, handshakes: 4)
            let report = try await BenchRunner.run(config)
            #expect(report.handshakes.count == 4 && report.handshakes.failed == 0)
            #expect(report.joins.count == 4 && report.joins.failed == 0)
            #expect(report.messages.sendErrors == 0 && report.messages.rejected == 0)
            #expect(report.messages.sent == 2 * 3 * 3)
            #expect(report.messages.expected == report.messages.sent * 2)
            #expect(report.messages.delivered == report.messages.expected)
            #expect(report.latency.count == UInt64(report.messages.delivered))
            #expect(report.latency.p50 > 0 && report.latency.p50 <= report.latency.p99 && report.latency.p99 <= report.latency.max)
            #expect(report.messages.deliveredPerSecond > 0 && report.handshakes.perSecond > 0 && report.joins.perSecond > 0)
            #expect(report.table.contains("p99.9") && report.table.contains("delivered"))
            let decoded = try JSONDecoder().decode(BenchReport.self, from: Data(Format.jsonLine(report).utf8))
            #expect(decoded.messages.sent == report.messages.sent)
            #expect(decoded.config.messages == 3)
            #expect(report.cpu.serverSeconds == nil && report.cpu.loadGeneratorSeconds > 0)
        }
    }

    /// The light load generator: messages sealed before the run, every delivery counted, every
    /// second one opened and verified; the server's CPU and memory read from its process.
    @Test func lightRunCountsEveryDeliveryAndVerifiesASample() async throws {
        try await withTestServer { server in
            var config = Self.countBoundRun(server: server.url, rate: 0, messages: 4, handshakes: 0)
            config.verifyEvery = 2
            config.serverPID = getpid()
            let report = try await BenchRunner.run(config)
            #expect(report.messages.sendErrors == 0 && report.messages.rejected == 0)
            #expect(report.messages.sent == 2 * 3 * 4)
            #expect(report.messages.delivered == report.messages.expected && report.messages.expected == report.messages.sent * 2)
            // Each of the 6 receivers gets 8 deliveries and verifies 4.
            #expect(report.latency.count == 6 * 4)
            #expect((report.cpu.serverMicrosPerDelivery ?? 0) > 0 && (report.cpu.serverResidentBytes ?? 0) > 0)
            #expect(report.table.contains("µs per delivery"))
        }
    }
}
