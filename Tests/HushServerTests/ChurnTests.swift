import Foundation
import HushClient
import HushProtocol
import HushServer
import HushTestSupport
import Testing

/// The test that would have caught the lost message of protocol v1 (docs/PROTOCOL.md §4.4, §4.5,
/// §8): two rooms of concurrent senders while the owners rotate, a member is removed, a member
/// leaves, a member joins and a real `hush serve` is killed with SIGKILL. Every acknowledged
/// send must then be in history exactly once, at its seq, and open for the owner and for every
/// member still in the room.
///
/// The same run goes against two deployments (`Deployment`): one node on SQLite, killed and
/// started again; and two nodes on one PostgreSQL database with one server key, the clients
/// spread over both, where the kill hits one node and its clients go on on the other.
///
/// Every disruption is triggered by a count of acknowledged messages, never by time.
/// `HUSH_CHURN_MESSAGES=10000` runs the same code with about that many messages (and a kill
/// per 2,500); the default is a short run.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ChurnTests {
    /// Where the run goes.
    enum Deployment: String, Sendable, CustomStringConvertible {
        /// One `hush serve` on SQLite; a kill is followed by a start on the same data and port.
        case oneSQLiteNode
        /// Two `hush serve` on one PostgreSQL database with one `--server-key`. The i-th kill hits
        /// node i % 2: its clients reconnect to the other node at once and stay there, and the
        /// killed node is started again, so that a later kill has a node to send clients to.
        case twoPostgresNodes

        /// PostgreSQL when the tests have it, as for the store suites (`StoreChoice`).
        static var all: [Deployment] {
            StoreChoice.all.contains(.postgres) ? [.oneSQLiteNode, .twoPostgresNodes] : [.oneSQLiteNode]
        }

        var nodes: Int { self == .oneSQLiteNode ? 1 : 2 }
        var description: String { rawValue }
    }

    /// How big a run is.
    struct Plan {
        /// Messages each client sends (the removed and the leaving member stop early).
        let perClient: Int
        let kills: Int
        let rotateEvery = 5

        static var current: Plan {
            guard let total = ProcessInfo.processInfo.environment["HUSH_CHURN_MESSAGES"].flatMap({ Int($0) }), total > 0 else {
                return Plan(perClient: 16, kills: 1)
            }
            // Six clients send their whole share; the two that depart send a little.
            return Plan(perClient: max(16, total / 6), kills: max(1, total / 2500))
        }

        var removeAt: Int { perClient }
        var leaveAt: Int { perClient }
        var joinAt: Int { 2 * perClient }
        /// The i-th kill. Always reachable: the two members and the owner of each room that
        /// neither depart nor join send 5 × `perClient` between them.
        func killAt(_ index: Int) -> Int { 3 * perClient + index * 2 * perClient / kills }
    }

    @Test(arguments: Deployment.all)
    func noAcknowledgedMessageIsLostDuplicatedOrUndecryptable(_ deployment: Deployment) async throws {
        let plan = Plan.current
        let started = ContinuousClock.now
        let churn = try await Churn.start(deployment)
        do {
            try await Self.run(plan, churn: churn)
        } catch {
            await churn.fail("setup or verification: \(error)")
        }
        await churn.tearDown()
        for failure in await churn.failures { Issue.record(Comment(rawValue: failure)) }
        print("churn (\(deployment)): finished in \(ContinuousClock.now - started)")
    }

    /// What the churn run met after the restart, step by step: a member that was away while
    /// the owner rotated, and then hears a later rotation (which it cannot open) before it
    /// sends. Its send must read the rotation it missed, not only what came after that push.
    @Test func aMemberBackFromAwayReadsTheRotationItMissedBeforeItSends() async throws {
        try await withTestServer { server in
            let owner = try await RoomClient.create(server: try await server.info())
            let bob = try await RoomClient.join(link: try await owner.invite())
            await bob.disconnect()
            try await owner.rotate()  // epoch 1, while Bob is away: never pushed to him
            try await bob.reconnect()
            try await owner.rotate()  // epoch 2, sealed under key 1, pushed to Bob
            let unreadable = try await next(bob.events) { if case .rejected = $0 { true } else { false } }
            #expect(unreadable == .rejected(seq: 2, reason: .missingKey))
            let before = await bob.state
            #expect(before.lastSeq == 2 && before.epoch == 0)

            let seq = try await bob.send("after the gap")
            #expect(seq == 3)
            #expect(await bob.state.epoch == 2)
            #expect(try await owner.history(after: 2) == [.message(seq: 3, from: await bob.key, text: "after the gap")])
        }
    }

    /// The node each client starts on (modulo the number of nodes): each room's owner on its
    /// own node, its members on both, so that every room's pushes cross nodes.
    static let homes = ["A-owner": 0, "A-1": 0, "A-2": 1, "A-3": 1, "A-4": 1, "B-owner": 1, "B-1": 0, "B-2": 0]

    static func run(_ plan: Plan, churn: Churn) async throws {
        // Room A: owner + 3 members (A-3 is removed), and A-4 joins mid-stream.
        let ownerA = try await churn.create("A-owner", rotateEvery: plan.rotateEvery)
        var roomA = [ownerA]
        for index in 1...3 { roomA.append(try await churn.join("A-\(index)", link: try await ownerA.client.invite())) }
        // Room B: owner + 2 members (B-2 leaves).
        let ownerB = try await churn.create("B-owner", rotateEvery: plan.rotateEvery)
        var roomB = [ownerB]
        for index in 1...2 { roomB.append(try await churn.join("B-\(index)", link: try await ownerB.client.invite())) }

        await withTaskGroup(of: Void.self) { group in
            let removed = roomA[3], leaving = roomB[2]
            group.addTask {
                await churn.guarded("A-owner") {
                    try await runOwner(ownerA, plan: plan, churn: churn, members: ["A-1", "A-2", "A-3", "A-4"], actions: [
                        OwnerAction(at: plan.removeAt) {
                            try await ownerA.client.remove(removed.key)
                            await churn.depart(removed.name)
                            await churn.reach(.removed)
                        },
                        OwnerAction(at: plan.joinAt) {
                            // The owner's client answers the join itself while this waits.
                            await churn.joined(try await churn.join("A-4", link: try await ownerA.client.invite()))
                        },
                    ])
                }
            }
            group.addTask {
                await churn.guarded("B-owner") {
                    try await runOwner(ownerB, plan: plan, churn: churn, members: ["B-1", "B-2"], actions: [
                        // After the leave: make sure the wrapped rotation the room owes has happened
                        // (the owner's own send may have done it already), so that the kill below
                        // never catches a member holding a message for it.
                        OwnerAction(at: plan.leaveAt, after: .left) {
                            try await ownerB.client.refresh()
                            if await ownerB.client.wrapRequired { try await rotate(ownerB, churn: churn) }
                            await churn.reach(.leaveRotated)
                        },
                    ])
                }
            }
            for member in [roomA[1], roomA[2], roomB[1]] {
                group.addTask { await churn.guarded(member.name) { try await runMember(member, plan: plan, churn: churn) } }
            }
            group.addTask {
                await churn.guarded(removed.name) { try await runMember(removed, plan: plan, churn: churn, expectsRemoval: true) }
            }
            group.addTask {
                await churn.guarded(leaving.name) {
                    try await runMember(leaving, plan: plan, churn: churn, leaveAt: plan.leaveAt)
                }
            }
            group.addTask {
                await churn.guarded("A-4") {
                    guard let joiner = await churn.joiner() else { return }
                    try await runMember(joiner, plan: plan, churn: churn)
                }
            }
            group.addTask {
                await churn.guarded("server") {
                    for index in 0..<plan.kills {
                        guard await churn.wait(acks: plan.killAt(index), milestones: [.removed, .leaveRotated, .joined]) else { return }
                        try await churn.kill(index)
                    }
                }
            }
        }
        guard await !churn.aborted else { return }
        try await verify(rooms: [roomA + [try #require(await churn.joiner())], roomB], churn: churn)
    }

    // MARK: the clients

    /// Something an owner does once `at` messages were acknowledged (and `after` was reached).
    struct OwnerAction: Sendable {
        let at: Int
        var after: Churn.Milestone? = nil
        let run: @Sendable () async throws -> Void
        init(at: Int, after: Churn.Milestone? = nil, run: @escaping @Sendable () async throws -> Void) {
            self.at = at
            self.after = after
            self.run = run
        }
    }

    /// An owner sends its share and rotates after every 2nd or 3rd own send and on
    /// `rotation_due`; in between it runs its actions. Then it goes on serving (rotations owed
    /// or due, actions not yet reached) until every member of its room is done.
    static func runOwner(_ owner: Participant, plan: Plan, churn: Churn, members: Set<String>, actions: [OwnerAction]) async throws {
        var pending = actions
        var sinceRotation = 0
        var rotateAfter = 2
        func step(ownSend: Bool) async throws {
            while let action = pending.first, await churn.reached(acks: action.at, milestone: action.after) {
                try await action.run()
                pending.removeFirst()
            }
            let due = await churn.takeRotationDue(owner.name)
            let owed = await owner.client.wrapRequired
            if due || owed || (ownSend && sinceRotation >= rotateAfter) {
                try await rotate(owner, churn: churn)
                sinceRotation = 0
                rotateAfter = 5 - rotateAfter
            }
        }
        for index in 1...plan.perClient {
            guard await !churn.aborted else { return }
            try await step(ownSend: true)
            guard try await sendAcknowledged(owner, text: "\(owner.name) #\(index)", churn: churn) else { return }
            sinceRotation += 1
        }
        var seen = 0
        while await !churn.aborted {
            try await step(ownSend: false)
            if pending.isEmpty, await churn.finished(members) { return }
            seen = await churn.change(after: seen)
        }
    }

    /// A member sends its share; `leaveAt`: leaves once that many messages were acknowledged.
    static func runMember(_ member: Participant, plan: Plan, churn: Churn, expectsRemoval: Bool = false, leaveAt: Int? = nil) async throws {
        for index in 1...plan.perClient {
            if let leaveAt, await churn.reached(acks: leaveAt) { break }
            do {
                guard try await sendAcknowledged(member, text: "\(member.name) #\(index)", churn: churn) else { return }
            } catch let error as HushError where expectsRemoval && [.removed, .notMember].contains(error.code) {
                // The removal landed between this send and the server's closing the connection.
                await churn.depart(member.name)
                return
            }
        }
        if let leaveAt {
            guard await churn.wait(acks: leaveAt, milestones: []) else { return }
            try await member.client.leave()
            await churn.depart(member.name)
            await churn.reach(.left)
        }
    }

    /// Sends one message until it is acknowledged and records it. Across a lost connection
    /// (the kill) it reconnects and sends again with the same messageId: a send the server
    /// committed before it died is answered with its original seq, not stored twice.
    /// Returns false when this client departed or the run was aborted.
    static func sendAcknowledged(_ sender: Participant, text: String, churn: Churn) async throws -> Bool {
        let messageID = RoomPayload.randomBytes(16)
        var reconnected = false
        while true {
            do {
                if reconnected, let last = await churn.lastAck(of: sender.name) {
                    // As a client that lost the `sent` of its previous message would: that one
                    // again, same messageId. It must come back with its original seq, stored once.
                    await churn.repeated(last, seq: try await sender.client.send(last.text, messageID: last.messageID))
                }
                reconnected = false
                let seq = try await sender.client.send(text, messageID: messageID)
                await churn.record(Ack(room: sender.room, name: sender.name, sender: sender.key, messageID: messageID, text: text, seq: seq))
                return true
            } catch ClientError.connectionClosed {
                guard try await reconnect(sender, churn: churn) else { return false }
                reconnected = true
            }
        }
    }

    /// A rotation; `epoch_mismatch` (the client refreshed, §4.5) and a lost connection are tried again.
    static func rotate(_ owner: Participant, churn: Churn) async throws {
        var mismatches = 0
        while true {
            do {
                try await owner.client.rotate()
                return
            } catch let error as HushError where error.code == .epochMismatch && mismatches < 3 {
                // Only after a kill: the rotation committed but its reply was lost.
                mismatches += 1
            } catch ClientError.connectionClosed {
                guard try await reconnect(owner, churn: churn) else { return }
            }
        }
    }

    /// Reconnects to the client's node until it succeeds (the server may still be starting),
    /// within a deadline. Returns false when this client departed or the run was aborted.
    static func reconnect(_ participant: Participant, churn: Churn, timeout: Duration = .seconds(60)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            guard await !churn.aborted, await !churn.departed(participant.name) else { return false }
            do {
                try await participant.client.reconnect(to: await churn.node(of: participant.name))
                return true
            } catch {
                guard ContinuousClock.now < deadline else { throw ChurnFailure("\(participant.name) could not reconnect: \(error)") }
                try await Task.sleep(for: .milliseconds(20))  // the poll interval while the server starts
            }
        }
    }

    // MARK: verification

    /// Each room as its owner reads it from 0, against the ledger; then each member still in the
    /// room from its floor.
    static func verify(rooms: [[Participant]], churn: Churn) async throws {
        let acks = await churn.acks
        var lost = 0, duplicated = 0, undecryptable = 0, rotations = 0, unacknowledged = 0
        for room in rooms {
            let owner = room[0]
            #expect(try await reconnect(owner, churn: churn))
            let ledger = acks.filter { $0.room == owner.room }
            // No two acknowledged messages share a seq (a repeat answered with another's seq).
            let sharedSeqs = ledger.count - Set(ledger.map(\.seq)).count
            #expect(sharedSeqs == 0, "\(owner.room): \(sharedSeqs) acknowledged messages share a seq")
            duplicated += sharedSeqs

            let history = try await owner.client.history(after: 0)
            var chats: [Int: (from: String, text: String)] = [:]
            var copies: [String: Int] = [:]
            for event in history {
                switch event {
                case .message(let seq, let from, let text):
                    chats[seq] = (from, text)
                    copies[text, default: 0] += 1
                case .rotated: rotations += 1
                case .rejected(let seq, let reason):
                    undecryptable += 1
                    Issue.record("\(owner.name) cannot open seq \(seq): \(reason)")
                default: break
                }
            }
            for ack in ledger {
                guard let stored = chats[ack.seq], stored.from == ack.sender, stored.text == ack.text else {
                    lost += 1
                    Issue.record("lost: \(ack.name) '\(ack.text)' acknowledged at seq \(ack.seq), history has \(String(describing: chats[ack.seq]))")
                    continue
                }
                if let count = copies[ack.text], count > 1 {
                    duplicated += count - 1
                    Issue.record("duplicated: '\(ack.text)' is in history \(count) times")
                }
            }
            let acknowledged = Set(ledger.map(\.text))
            unacknowledged += chats.values.count { !acknowledged.contains($0.text) }

            // Every member still in the room opens everything from its floor.
            for member in room.dropFirst() where await !churn.departed(member.name) {
                #expect(try await reconnect(member, churn: churn))
                let hello = try await member.client.rawConnection.request(WireMessage(type: "hello"))
                let floor = try #require(hello.rooms?.first { $0.room == member.room }?.floor)
                let view = try await member.client.history(after: 0)
                for case .rejected(let seq, let reason) in view {
                    undecryptable += 1
                    Issue.record("\(member.name) cannot open seq \(seq): \(reason)")
                }
                let seen = view.compactMap { event -> Int? in if case .message(let seq, _, _) = event { seq } else { nil } }
                let expected = chats.keys.filter { $0 > floor }.sorted()
                #expect(seen == expected, "\(member.name) reads other messages than its owner above its floor \(floor)")
            }
        }
        // A repeat after a reconnect must be answered with the original seq (a second copy
        // would also show in history above).
        let repeatMismatches = await churn.repeatMismatches
        for mismatch in repeatMismatches { Issue.record("a repeat got another seq: \(mismatch)") }
        let kills = await churn.kills
        print("churn (\(churn.deployment)): \(acks.count) acknowledged, \(lost) lost, \(duplicated) duplicated, \(undecryptable) undecryptable, "
              + "\(rotations) rotations, \(kills) kills (\(await churn.repeats) repeated sends, \(unacknowledged) stored without acknowledgement, "
              + "\(await churn.liveRejections.count) pushes not readable until history was read)")
        #expect(lost == 0)
        #expect(duplicated == 0)
        #expect(undecryptable == 0)
        #expect(kills >= 1 && rotations > 0)
    }
}

/// One client of the run: a name for the log, its room client and key.
struct Participant: Sendable {
    let name: String
    let client: RoomClient
    let key: String
    let room: String

    init(_ name: String, _ client: RoomClient) async {
        self.name = name
        self.client = client
        key = await client.key
        room = await client.room
    }
}

struct ChurnFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An acknowledged send: what the ledger keeps.
struct Ack: Sendable {
    let room: String
    let name: String
    let sender: String
    let messageID: [UInt8]
    let text: String
    let seq: Int
}

/// The shared state of a run: the ledger, the milestones, the nodes and where each client
/// connects, and the failures (the first one kills the nodes, so that every client stops
/// instead of waiting).
actor Churn {
    enum Milestone: Hashable, Sendable { case removed, left, leaveRotated, joined }

    nonisolated let deployment: ChurnTests.Deployment
    private(set) var acks: [Ack] = []
    private(set) var failures: [String] = []
    private(set) var kills = 0
    private(set) var liveRejections: [String] = []
    private(set) var repeats = 0
    private(set) var repeatMismatches: [String] = []
    private var lastAcks: [String: Ack] = [:]
    private var milestones: Set<Milestone> = []
    private var departures: Set<String> = []
    private var done: Set<String> = []
    private var rotationsDue: Set<String> = []
    private var joinedClient: Participant?
    private var version = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var consumers: [Task<Void, Never>] = []
    private var participants: [Participant] = []
    private var nodes: [ServeProcess]
    /// Each node's address and key: the same after a restart (same port, same key).
    private let servers: [ServerInfo]
    /// The node each client connects to, by name; a kill moves the killed node's clients.
    private var homes: [String: Int]
    private let arguments: [String]
    /// The nodes' data folders and the shared key.
    private let folder: URL
    private let database: PostgresLocation?

    private init(deployment: ChurnTests.Deployment, nodes: [ServeProcess], servers: [ServerInfo], arguments: [String],
                 folder: URL, database: PostgresLocation?) {
        self.deployment = deployment
        self.nodes = nodes
        self.servers = servers
        self.arguments = arguments
        self.folder = folder
        self.database = database
        homes = ChurnTests.homes.mapValues { $0 % nodes.count }
    }

    /// Starts the deployment's nodes; `tearDown()` stops them and removes what they kept.
    static func start(_ deployment: ChurnTests.Deployment) async throws -> Churn {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("hush-churn-\(UUID().uuidString)")
        // No rate limit: these clients send far faster than people type, and a `rate_limited`
        // refusal is not what this test is about (a lost `join_response` would stall the join).
        var arguments = ["--rate-limit", "0"]
        var database: PostgresLocation?
        var nodes: [ServeProcess] = []
        do {
            if deployment == .twoPostgresNodes {
                let created = try await PostgresCluster.shared().createDatabase()
                database = created
                let key = try writeServerKey(in: folder)
                arguments += ["--database", "\(created)?sslmode=disable", "--server-key", key.file.path]
            }
            var servers: [ServerInfo] = []
            for index in 0..<deployment.nodes {
                let node = try await ServeProcess.start(data: folder.appendingPathComponent("node-\(index)"), arguments: arguments)
                nodes.append(node)
                servers.append(try await ServerInfo.fetch(node.url, expectedFingerprint: servers.first?.fingerprint))
            }
            return Churn(deployment: deployment, nodes: nodes, servers: servers, arguments: arguments, folder: folder, database: database)
        } catch {
            for node in nodes { await node.stop() }
            await Self.remove(folder: folder, database: database)
            throw error
        }
    }

    private static func remove(folder: URL, database: PostgresLocation?) async {
        if let database { try? await PostgresCluster.shared().dropDatabase(database) }
        try? FileManager.default.removeItem(at: folder)
    }

    var aborted: Bool { !failures.isEmpty }

    /// Where a client connects: its home node, or the node a kill sent it to.
    func node(of name: String) -> ServerInfo { servers[homes[name] ?? 0] }

    /// A new room's owner, on its home node.
    func create(_ name: String, rotateEvery: Int) async throws -> Participant {
        let participant = await Participant(name, try await RoomClient.create(server: node(of: name), rotateEvery: rotateEvery))
        watch(participant)
        return participant
    }

    /// A member that joins through `link` (at its owner's node), then moves to its home node.
    func join(_ name: String, link: String) async throws -> Participant {
        let participant = await Participant(name, try await RoomClient.join(link: link))
        let home = node(of: name)
        if await participant.client.server.baseURL != home.baseURL { try await participant.client.reconnect(to: home) }
        watch(participant)
        return participant
    }

    private func changed() {
        version += 1
        let woken = waiters
        waiters = []
        for waiter in woken { waiter.resume() }
    }

    /// Waits for the next change after `seen`; returns the new version.
    func change(after seen: Int) async -> Int {
        if version == seen { await withCheckedContinuation { waiters.append($0) } }
        return version
    }

    /// Waits until `count` messages were acknowledged and `milestones` reached; false if aborted.
    func wait(acks count: Int, milestones required: Set<Milestone>) async -> Bool {
        while !aborted {
            if acks.count >= count && required.isSubset(of: milestones) { return true }
            await withCheckedContinuation { waiters.append($0) }
        }
        return false
    }

    func reached(acks count: Int, milestone: Milestone? = nil) -> Bool {
        acks.count >= count && (milestone.map { milestones.contains($0) } ?? true)
    }

    func record(_ ack: Ack) {
        acks.append(ack)
        lastAcks[ack.name] = ack
        changed()
    }

    func lastAck(of name: String) -> Ack? { lastAcks[name] }

    /// A repeat of an acknowledged send: answered with another seq means stored twice.
    func repeated(_ ack: Ack, seq: Int) {
        repeats += 1
        if seq != ack.seq { repeatMismatches.append("'\(ack.text)' at seq \(ack.seq), its repeat at \(seq)") }
    }
    func reach(_ milestone: Milestone) { milestones.insert(milestone); changed() }
    func depart(_ name: String) { departures.insert(name); changed() }
    func departed(_ name: String) -> Bool { departures.contains(name) }
    func finished(_ names: Set<String>) -> Bool { names.isSubset(of: done) }
    func takeRotationDue(_ name: String) -> Bool { rotationsDue.remove(name) != nil }

    func joined(_ participant: Participant) {
        joinedClient = participant
        milestones.insert(.joined)
        changed()
    }

    /// The member that joined mid-run, once it has; nil if the run aborted first.
    func joiner() async -> Participant? {
        guard await wait(acks: 0, milestones: [.joined]) else { return nil }
        return joinedClient
    }

    /// Reads a client's events for the whole run: `rotation_due` for its owner, departures.
    private func watch(_ participant: Participant) {
        participants.append(participant)
        consumers.append(Task { [weak self] in
            for await event in participant.client.events {
                guard let self else { return }
                await self.observe(event, of: participant.name)
            }
        })
    }

    private func observe(_ event: RoomClient.Event, of name: String) {
        switch event {
        case .rotationDue: rotationsDue.insert(name)
        case .removed: departures.insert(name)
        // A push that arrives before the rotation this client missed while it was offline
        // (history reads it later): recorded, not a verdict; the verdict is the history read.
        case .rejected(let seq, let reason): liveRejections.append("\(name) seq \(seq): \(reason)")
        default: break
        }
        changed()
    }

    /// Runs one client's part; an error aborts the run.
    func guarded(_ name: String, _ body: @Sendable () async throws -> Void) async {
        do {
            try await body()
        } catch {
            fail("\(name): \(error)")
        }
        done.insert(name)
        changed()
    }

    func fail(_ failure: String) {
        guard failures.isEmpty else {
            // What the abort itself causes (closed connections) says nothing new.
            failures.append("after the abort: \(failure)")
            return
        }
        failures.append(failure)
        for node in nodes { node.kill() }
        changed()
    }

    /// The `index`-th `kill -9`: node `index` % nodes. With two nodes its clients are sent to
    /// the other one first, so that they reconnect there as they notice. Then the node is
    /// started again on the same data folder and port.
    func kill(_ index: Int) async throws {
        let victim = index % nodes.count
        let survivor = (victim + 1) % nodes.count
        for (name, home) in homes where home == victim { homes[name] = survivor }
        nodes[victim].kill()
        kills += 1
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                nodes[victim] = try await ServeProcess.start(data: nodes[victim].data, port: nodes[victim].port, arguments: arguments)
                return
            } catch {
                guard ContinuousClock.now < deadline, !aborted else { throw error }
                try await Task.sleep(for: .milliseconds(50))  // the port may be held a moment longer
            }
        }
    }

    /// Closes the clients, stops their event readers and the nodes, waits for them, and
    /// removes the data folders and the database.
    func tearDown() async {
        for participant in participants { await participant.client.disconnect() }
        for consumer in consumers { consumer.cancel() }
        for consumer in consumers { await consumer.value }
        consumers = []
        for node in nodes { await node.stop() }
        await Self.remove(folder: folder, database: database)
    }
}
