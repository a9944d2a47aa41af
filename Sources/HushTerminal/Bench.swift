import Foundation
import Histogram
import HushClient
import HushProtocol
import NIOConcurrencyHelpers
import Synchronization
import ThemisKit

/// `hush bench relay` parameters, with their bounds.
public struct BenchConfig: Sendable, Codable, Equatable {
    public var server: String
    public var rooms = 2
    public var members = 3
    /// Message text bytes.
    public var size = 100
    /// Messages per second per sender; 0 sends as fast as replies come back.
    public var rate = 5.0
    public var duration = 10.0
    /// Messages per sender; when set, each sender stops after that many (or at `duration`,
    /// whichever comes first) and the drain waits for exactly those deliveries.
    public var messages: Int?
    /// Connections opened (and closed) in the handshake phase; nil: rooms × members.
    public var handshakes: Int?
    /// How long to wait for the last deliveries after the senders stop.
    public var drain = 5.0
    /// Receivers open and verify every Nth delivery and only count the others; senders send
    /// messages sealed and signed before the timed phase (so `messages` is required). 1 (the
    /// default): every message is sealed when sent and every delivery opened and verified.
    /// Above 1 the load generator's own crypto stops being what limits a run.
    public var verifyEvery = 1
    /// The server's process id (same machine): the report then gives the server's CPU time per
    /// delivered message and its resident memory.
    public var serverPID: Int32?

    /// Other nodes of the same deployment (one database, one server key): the room's members
    /// join through `server` and these in turn, the owner staying on `server`, so that pushes
    /// cross nodes. Empty: every member on `server`.
    public var joinServers: [String] = []

    public init(server: String) { self.server = server }

    public static let maxRooms = 200
    public static let maxMembers = 64
    public static let maxSize = 32 * 1024
    public static let maxDuration = 3600.0
    public static let maxHandshakes = 10_000
    public static let maxMessages = 1_000_000
    public static let maxVerifyEvery = 1_000_000
    /// Messages sealed ahead of a run with `verifyEvery` above 1 (about 400 bytes each).
    public static let maxPresealed = 2_000_000

    public func validate() throws(ChatError) {
        guard (1...Self.maxRooms).contains(rooms) else { throw ChatError("--rooms must be 1…\(Self.maxRooms)") }
        guard (2...Self.maxMembers).contains(members) else { throw ChatError("--members must be 2…\(Self.maxMembers) (the owner counts)") }
        guard (24...Self.maxSize).contains(size) else { throw ChatError("--size must be 24…\(Self.maxSize) bytes") }
        guard rate >= 0, rate <= 10_000 else { throw ChatError("--rate must be 0 (as fast as possible) to 10000 per second") }
        guard duration > 0, duration <= Self.maxDuration else { throw ChatError("--duration must be in (0, \(Int(Self.maxDuration))] seconds") }
        guard (1...Self.maxMessages).contains(messages ?? 1) else { throw ChatError("--messages must be 1…\(Self.maxMessages)") }
        guard (0...Self.maxHandshakes).contains(handshakes ?? 0) else { throw ChatError("--handshakes must be 0…\(Self.maxHandshakes)") }
        guard drain >= 0, drain <= 60 else { throw ChatError("--drain must be 0…60 seconds") }
        guard (1...Self.maxVerifyEvery).contains(verifyEvery) else { throw ChatError("--verify-every must be 1…\(Self.maxVerifyEvery)") }
        guard verifyEvery == 1 || messages != nil else {
            throw ChatError("--verify-every above 1 seals every message before the run: give --messages")
        }
        guard verifyEvery == 1 || rooms * members * (messages ?? 0) <= Self.maxPresealed else {
            throw ChatError("rooms × members × messages must be at most \(Self.maxPresealed) with --verify-every above 1")
        }
        guard (1...Int32.max).contains(serverPID ?? 1) else { throw ChatError("--server-pid must be a process id") }
        guard joinServers.count <= 8 else { throw ChatError("--join-server may be given at most 8 times") }
    }
}

/// Delivery latencies in microseconds, shared by every receiver.
public final class LatencyRecorder: Sendable {
    private let histogram = NIOLockedValueBox(Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000,
                                                    numberOfSignificantValueDigits: .three))

    public init() {}

    public func record(microseconds: UInt64) {
        histogram.withLockedValue { _ = $0.record(min(max(microseconds, 1), 600_000_000)) }
    }

    public var summary: LatencySummary { histogram.withLockedValue { LatencySummary($0) } }
}

/// Percentiles in milliseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var count: UInt64
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    public init(_ histogram: Histogram<UInt64>) {
        count = histogram.totalCount
        let ms = { (value: UInt64) in Double(value) / 1000 }
        if count == 0 {
            (p50, p90, p99, p999, max, mean) = (0, 0, 0, 0, 0, 0)
        } else {
            p50 = ms(histogram.valueAtPercentile(50))
            p90 = ms(histogram.valueAtPercentile(90))
            p99 = ms(histogram.valueAtPercentile(99))
            p999 = ms(histogram.valueAtPercentile(99.9))
            max = ms(histogram.max)
            mean = histogram.mean / 1000
        }
    }
}

/// What a run measured.
public struct BenchReport: Codable, Sendable, Equatable {
    public struct Phase: Codable, Sendable, Equatable {
        public var count: Int
        public var failed: Int
        public var seconds: Double
        public var perSecond: Double
        /// Latency of one operation (a handshake; a whole join), milliseconds.
        public var latency: LatencySummary
    }

    public struct Messages: Codable, Sendable, Equatable {
        public var sent: Int
        public var delivered: Int
        /// Each message goes to every other member of its room.
        public var expected: Int
        public var sendErrors: Int
        public var rateLimited: Int
        public var rejected: Int
        public var seconds: Double
        public var sentPerSecond: Double
        public var deliveredPerSecond: Double
    }

    /// CPU time over the messaging phase (from its start to the end of the drain).
    public struct CPU: Codable, Sendable, Equatable {
        /// The server's user + system CPU seconds (with `serverPID`).
        public var serverSeconds: Double?
        /// The server's CPU per delivered message, microseconds: the figure that carries
        /// across machines and load generators.
        public var serverMicrosPerDelivery: Double?
        /// The server's resident memory at the end, bytes.
        public var serverResidentBytes: Int?
        /// This load generator's own CPU seconds.
        public var loadGeneratorSeconds: Double
    }

    public var config: BenchConfig
    public var handshakes: Phase
    public var joins: Phase
    public var messages: Messages
    /// Send-to-receive, milliseconds; with `verifyEvery` above 1 only the verified deliveries.
    /// At a fixed rate it is measured from when each message was due to be sent, so a sender
    /// held up by a slow reply does not hide the wait (coordinated omission).
    public var latency: LatencySummary
    public var cpu: CPU

    /// The final table.
    public var table: String {
        let f = { (value: Double) in String(format: "%.1f", value) }
        let ms = { (value: Double) in String(format: "%.2f ms", value) }
        var lines: [String] = []
        lines.append("hush bench relay  " + ([config.server] + config.joinServers).joined(separator: " "))
        lines.append("  \(config.rooms) rooms × \(config.members) members, \(config.size) B messages, "
            + (config.rate > 0 ? "\(f(config.rate)) msg/s per sender" : "as fast as possible") + ", \(f(config.duration)) s")
        lines.append("")
        lines.append(Format.table(["phase", "count", "failed", "seconds", "per second", "p50", "p99", "max"], [
            ["handshakes", String(handshakes.count), String(handshakes.failed), f(handshakes.seconds), f(handshakes.perSecond),
             ms(handshakes.latency.p50), ms(handshakes.latency.p99), ms(handshakes.latency.max)],
            ["joins", String(joins.count), String(joins.failed), f(joins.seconds), f(joins.perSecond),
             ms(joins.latency.p50), ms(joins.latency.p99), ms(joins.latency.max)],
        ]))
        lines.append("")
        lines.append(Format.table(["messages", "count", "per second"], [
            ["sent", String(messages.sent), f(messages.sentPerSecond)],
            ["delivered", "\(messages.delivered) of \(messages.expected)", f(messages.deliveredPerSecond)],
            ["send errors", String(messages.sendErrors), ""],
            ["rate limited", String(messages.rateLimited), ""],
            ["rejected", String(messages.rejected), ""],
        ]))
        lines.append("")
        lines.append(Format.table(["delivery latency", "p50", "p90", "p99", "p99.9", "max", "mean"], [
            ["(\(latency.count) \(config.verifyEvery > 1 ? "verified " : "")deliveries)", ms(latency.p50), ms(latency.p90),
             ms(latency.p99), ms(latency.p999), ms(latency.max), ms(latency.mean)],
        ]))
        lines.append("")
        var cpuRows = [["load generator", f(cpu.loadGeneratorSeconds), "",
                        messages.delivered > 0 ? f(cpu.loadGeneratorSeconds * 1e6 / Double(messages.delivered)) : ""]]
        if let seconds = cpu.serverSeconds {
            cpuRows.insert(["server", f(seconds), cpu.serverResidentBytes.map { String($0 >> 20) + " MiB" } ?? "",
                            cpu.serverMicrosPerDelivery.map(f) ?? ""], at: 0)
        }
        lines.append(Format.table(["CPU (messaging phase)", "seconds", "resident", "µs per delivery"], cpuRows))
        return lines.joined(separator: "\n")
    }

    /// The progress line printed while messages flow.
    public static func progressLine(elapsed: Double, sent: Int, delivered: Int, latency: LatencySummary) -> String {
        let rate = { (count: Int) in elapsed > 0 ? Double(count) / elapsed : 0 }
        return String(format: "%6.1fs  sent %d (%.0f/s)  delivered %d (%.0f/s)  p50 %.2f ms  p99 %.2f ms",
                      elapsed, sent, rate(sent), delivered, rate(delivered), latency.p50, latency.p99)
    }
}

/// The load generator: real keys, real handshakes, real joins, real end-to-end messages.
public enum BenchRunner {
    final class Counters: Sendable {
        let sent = Atomic<Int>(0)
        let delivered = Atomic<Int>(0)
        let sendErrors = Atomic<Int>(0)
        let rateLimited = Atomic<Int>(0)
        let rejected = Atomic<Int>(0)
        let expected = Atomic<Int>(0)
        let handshakeFailed = Atomic<Int>(0)
        let joinFailed = Atomic<Int>(0)
    }

    static func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    public static func run(_ config: BenchConfig, progress: (@Sendable (String) -> Void)? = nil) async throws -> BenchReport {
        try config.validate()
        let server = try await ServerInfo.fetch(config.server)
        // Every node must hold the same server key: clients pin one key, whichever node answers.
        var nodes = [server]
        for url in config.joinServers { nodes.append(try await ServerInfo.fetch(url, expectedFingerprint: server.fingerprint)) }
        let joinNodes = nodes

        // 1. Handshakes: connections opened by fresh keys, a few at a time.
        let handshakeCount = config.handshakes ?? config.rooms * config.members
        let handshakeLatency = LatencyRecorder()
        let counters = Counters()
        progress?("handshakes: \(handshakeCount) connections")
        let handshakeStart = nanos()
        try await forEach(0..<handshakeCount, concurrency: 4) { _ in
            let key = ThemisPrivateKey()
            let start = nanos()
            do {
                let connection = try await HushConnection.open(server: server, key: key)
                handshakeLatency.record(microseconds: (nanos() - start) / 1000)
                connection.close()
            } catch {
                counters.handshakeFailed.add(1, ordering: .relaxed)
            }
        }
        let handshakeSeconds = Double(nanos() - handshakeStart) / 1e9

        // 2. Rooms and joins through the real protocol (each join: fetch, handshake, join,
        //    owner's response, confirm, add_member).
        let joinLatency = LatencyRecorder()
        progress?("joins: \(config.rooms) rooms × \(config.members - 1) joiners")
        let joinStart = nanos()
        let rooms = NIOLockedValueBox<[[Participant]]>([])
        try await forEach(0..<config.rooms, concurrency: 4) { _ in
            let owner = try await RoomClient.create(server: server, rotateEvery: Limits.standard.maxRotateEvery)
            var clients = [Participant(client: owner, node: server)]
            for index in 1..<config.members {
                let start = nanos()
                do {
                    let link = try await retryingRateLimit { try await owner.invite() }
                    let node = joinNodes[index % joinNodes.count]
                    let flow = try JoinerFlow(invite: try InviteLink.parse(link).invite)
                    clients.append(Participant(client: try await RoomClient.join(flow: flow, server: node, timeout: .seconds(30)),
                                               node: node))
                    joinLatency.record(microseconds: (nanos() - start) / 1000)
                } catch {
                    counters.joinFailed.add(1, ordering: .relaxed)
                }
            }
            let all = clients
            rooms.withLockedValue { $0.append(all) }
        }
        let joinSeconds = Double(nanos() - joinStart) / 1e9
        let allRooms = rooms.withLockedValue { $0 }
        let joined = allRooms.reduce(0) { $0 + $1.count - 1 }

        // 3. Messages: every member sends; every other member of the room receives.
        let latency = LatencyRecorder()
        progress?("messages: \(allRooms.reduce(0) { $0 + $1.count }) senders for \(config.duration) s")
        let (sendSeconds, cpu) = config.verifyEvery > 1
            ? try await sealedAheadMessages(allRooms, config: config, counters: counters, latency: latency,
                                            progress: progress)
            : try await sealedWhenSentMessages(allRooms, config: config, counters: counters, latency: latency, progress: progress)

        let sent = counters.sent.load(ordering: .relaxed)
        let delivered = counters.delivered.load(ordering: .relaxed)
        let phase = { (count: Int, failed: Int, seconds: Double, recorder: LatencyRecorder) in
            BenchReport.Phase(count: count, failed: failed, seconds: seconds, perSecond: seconds > 0 ? Double(count) / seconds : 0,
                              latency: recorder.summary)
        }
        return BenchReport(
            config: config,
            handshakes: phase(handshakeCount - counters.handshakeFailed.load(ordering: .relaxed), counters.handshakeFailed.load(ordering: .relaxed),
                              handshakeSeconds, handshakeLatency),
            joins: phase(joined, counters.joinFailed.load(ordering: .relaxed), joinSeconds, joinLatency),
            messages: BenchReport.Messages(
                sent: sent, delivered: delivered, expected: counters.expected.load(ordering: .relaxed),
                sendErrors: counters.sendErrors.load(ordering: .relaxed), rateLimited: counters.rateLimited.load(ordering: .relaxed),
                rejected: counters.rejected.load(ordering: .relaxed), seconds: sendSeconds,
                sentPerSecond: Double(sent) / sendSeconds, deliveredPerSecond: Double(delivered) / sendSeconds),
            latency: latency.summary,
            cpu: cpu)
    }

    /// A room's member in a run, and the node it is connected to.
    struct Participant: Sendable {
        let client: RoomClient
        let node: ServerInfo
    }

    /// The full client on both ends: each message sealed and signed when it is sent, each
    /// delivery opened and verified. Returns the seconds of sending and the CPU it cost.
    static func sealedWhenSentMessages(_ allRooms: [[Participant]], config: BenchConfig, counters: Counters, latency: LatencyRecorder,
                                       progress: (@Sendable (String) -> Void)?) async throws -> (Double, BenchReport.CPU) {
        let expectedPerMessage = allRooms.map { $0.count - 1 }
        let padding = String(repeating: "x", count: config.size)
        let receivers = Task {
            await withTaskGroup(of: Void.self) { group in
                for room in allRooms {
                    for member in room {
                        group.addTask {
                            for await event in member.client.events {
                                switch event {
                                case .message(_, _, let text), .chat(_, _, _, let text):
                                    if let stamp = UInt64(text.prefix { $0 != " " }) {
                                        latency.record(microseconds: (nanos() &- stamp) / 1000)
                                    }
                                    counters.delivered.add(1, ordering: .relaxed)
                                case .rejected: counters.rejected.add(1, ordering: .relaxed)
                                default: continue
                                }
                            }
                        }
                    }
                }
            }
        }
        let measured = try await sending(config: config, counters: counters, latency: latency, progress: progress,
                                         senders: allRooms.enumerated().flatMap { index, room in
            room.map { member in
                Sender(recipients: expectedPerMessage[index]) { due in
                    let stamp = String(due)
                    try await member.client.send(stamp + " " + padding.prefix(config.size - stamp.count - 1))
                }
            }
        })
        for room in allRooms { for member in room { await member.client.disconnect() } }
        receivers.cancel()
        return measured
    }

    /// A light load generator: every message is sealed and signed before the run and sent as
    /// it is; receivers read the raw pushes of a connection of their own key, count every
    /// delivery and open and verify every `verifyEvery`th. Returns the seconds of sending and
    /// the CPU it cost (the sealing ahead not included).
    static func sealedAheadMessages(_ allRooms: [[Participant]], config: BenchConfig, counters: Counters,
                                    latency: LatencyRecorder,
                                    progress: (@Sendable (String) -> Void)?) async throws -> (Double, BenchReport.CPU) {
        let perSender = config.messages ?? 0
        struct Member: Sendable {
            var state: RoomState
            let connection: HushConnection
            let recipients: Int
        }
        var opened: [Member] = []
        for room in allRooms {
            for member in room {
                let state = await member.client.state
                opened.append(Member(state: state, connection: try await HushConnection.open(server: member.node, key: state.me),
                                      recipients: room.count - 1))
                await member.client.disconnect()
            }
        }
        let members = opened
        progress?("sealing \(members.count * perSender) messages ahead")
        let sealed = try await withThrowingTaskGroup(of: (Int, [[UInt8]]).self) { group in
            for (index, member) in members.enumerated() {
                group.addTask {
                    var sealer = member.state
                    return (index, try (0..<perSender).map { number in
                        let prefix = "\(index) \(number) "
                        return try sealer.compose(text: prefix + String(repeating: "x", count: max(0, config.size - prefix.count)),
                                                  now: Int64(Date().timeIntervalSince1970 * 1000))
                    })
                }
            }
            var sealed = [[[UInt8]]](repeating: [], count: members.count)
            for try await (index, payloads) in group { sealed[index] = payloads }
            return sealed
        }
        let sentAt = SendTimes(count: members.count * perSender)
        let receivers = Task {
            await withTaskGroup(of: Void.self) { group in
                for member in members {
                    group.addTask {
                        var state = member.state
                        var seen = 0
                        for await push in member.connection.pushes where push.type == "message" {
                            counters.delivered.add(1, ordering: .relaxed)
                            seen += 1
                            guard seen % config.verifyEvery == 0, let envelope = Envelope(push: push) else { continue }
                            switch state.receive(envelope) {
                            case .chat(_, _, _, _, let text):
                                let fields = text.split(separator: " ", maxSplits: 2)
                                if fields.count == 3, let sender = Int(fields[0]), let number = Int(fields[1]),
                                   let due = sentAt.time(of: sender * perSender + number) {
                                    latency.record(microseconds: (nanos() &- due) / 1000)
                                }
                            case .rejected: counters.rejected.add(1, ordering: .relaxed)
                            case .rotated, .duplicate: continue
                            }
                        }
                    }
                }
            }
        }
        let measured = try await sending(config: config, counters: counters, latency: latency, progress: progress,
                                         senders: members.enumerated().map { index, member in
            let room = member.state.room
            let epoch = member.state.epoch
            let next = Atomic<Int>(0)
            return Sender(recipients: member.recipients) { due in
                let number = next.wrappingAdd(1, ordering: .relaxed).oldValue
                var request = WireMessage(type: "send")
                request.room = room
                request.epoch = epoch
                request.messageId = Base64Bytes(RoomPayload.randomBytes(16))
                request.payload = Base64Bytes(sealed[index][number])
                sentAt.record(due, at: index * perSender + number)
                _ = try await member.connection.request(request)
            }
        })
        for member in members { member.connection.close() }
        receivers.cancel()
        return measured
    }

    /// One member's way of sending its next message; `due` is when it was due to be sent.
    struct Sender: Sendable {
        let recipients: Int
        let send: @Sendable (_ due: UInt64) async throws -> Void
    }

    /// Runs every sender for the duration (or its message count), then waits up to `drain`
    /// for the deliveries still in flight. Returns the seconds of sending, and the CPU used
    /// from the first send to the end of the drain.
    static func sending(config: BenchConfig, counters: Counters, latency: LatencyRecorder,
                        progress: (@Sendable (String) -> Void)?, senders: [Sender]) async throws -> (Double, BenchReport.CPU) {
        let serverBefore = config.serverPID.flatMap(ProcessUsage.init(pid:))
        let ownBefore = ProcessUsage.current
        let messageStart = nanos()
        let end = messageStart + UInt64(config.duration * 1e9)
        let ticker = Task {
            guard let progress else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let elapsed = Double(nanos() - messageStart) / 1e9
                progress(BenchReport.progressLine(elapsed: elapsed, sent: counters.sent.load(ordering: .relaxed),
                                                  delivered: counters.delivered.load(ordering: .relaxed), latency: latency.summary))
            }
        }
        defer { ticker.cancel() }
        await withTaskGroup(of: Void.self) { group in
            for sender in senders {
                group.addTask {
                    let interval = config.rate > 0 ? UInt64(1e9 / config.rate) : 0
                    // Each sender starts at a random point of its interval: a fixed rate,
                    // not every sender in lockstep.
                    var next = nanos() + (interval > 0 ? UInt64.random(in: 0..<interval) : 0)
                    var sent = 0
                    while nanos() < end, sent < config.messages ?? .max {
                        // At a fixed rate latency counts from when the message was due, not
                        // from when a sender held up by a slow reply got to send it.
                        var due = nanos()
                        if interval > 0 {
                            if next > due { try? await Task.sleep(for: .nanoseconds(Int64(next - due))) }
                            due = next
                            next += interval
                            if nanos() >= end { break }
                        }
                        do {
                            try await sender.send(due)
                            sent += 1
                            counters.sent.add(1, ordering: .relaxed)
                            counters.expected.add(sender.recipients, ordering: .relaxed)
                        } catch let error as HushError where error.code == .rateLimited {
                            counters.rateLimited.add(1, ordering: .relaxed)
                            try? await Task.sleep(for: .milliseconds(100))
                        } catch {
                            counters.sendErrors.add(1, ordering: .relaxed)
                            if (error as? ClientError) == .connectionClosed { return }
                            try? await Task.sleep(for: .milliseconds(50))
                        }
                    }
                }
            }
        }
        let sendSeconds = Double(nanos() - messageStart) / 1e9
        // Drain: wait for the deliveries still in flight.
        let drainEnd = nanos() + UInt64(config.drain * 1e9)
        while counters.delivered.load(ordering: .relaxed) < counters.expected.load(ordering: .relaxed), nanos() < drainEnd {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let serverAfter = config.serverPID.flatMap(ProcessUsage.init(pid:))
        let ownAfter = ProcessUsage.current
        let delivered = counters.delivered.load(ordering: .relaxed)
        var cpu = BenchReport.CPU(loadGeneratorSeconds: (ownAfter?.cpuSeconds ?? 0) - (ownBefore?.cpuSeconds ?? 0))
        if let serverBefore, let serverAfter {
            let seconds = serverAfter.cpuSeconds - serverBefore.cpuSeconds
            cpu.serverSeconds = seconds
            cpu.serverMicrosPerDelivery = delivered > 0 ? seconds * 1e6 / Double(delivered) : nil
            cpu.serverResidentBytes = serverAfter.residentBytes
        }
        return (sendSeconds, cpu)
    }

    /// Runs `body` for each element, at most `concurrency` at a time.
    static func forEach<S: Sequence & Sendable>(_ items: S, concurrency: Int,
                                                 _ body: @escaping @Sendable (S.Element) async throws -> Void) async throws
    where S.Element: Sendable {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for item in items {
                if running >= concurrency {
                    try await group.next()
                    running -= 1
                }
                group.addTask { try await body(item) }
                running += 1
            }
            try await group.waitForAll()
        }
    }

    static func retryingRateLimit<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do { return try await body() } catch let error as HushError where error.code == .rateLimited && attempt < 50 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

/// When each message of a light run was due to be sent, for the receivers that verify it.
final class SendTimes: Sendable {
    private let times: NIOLockedValueBox<[UInt64]>

    init(count: Int) { times = NIOLockedValueBox([UInt64](repeating: 0, count: count)) }

    func record(_ time: UInt64, at index: Int) {
        times.withLockedValue { if $0.indices.contains(index) { $0[index] = time } }
    }

    func time(of index: Int) -> UInt64? {
        times.withLockedValue { $0.indices.contains(index) && $0[index] > 0 ? $0[index] : nil }
    }
}

/// A process's CPU time and resident memory, from Linux's /proc (nil elsewhere, or when the
/// process is gone).
public struct ProcessUsage: Sendable, Equatable {
    public var cpuSeconds: Double
    public var residentBytes: Int

    public static var current: ProcessUsage? { ProcessUsage(pid: getpid()) }

    public init(cpuSeconds: Double, residentBytes: Int) {
        self.cpuSeconds = cpuSeconds
        self.residentBytes = residentBytes
    }

    public init?(pid: Int32) {
        guard let stat = Self.read("/proc/\(pid)/stat"), let status = Self.read("/proc/\(pid)/status") else { return nil }
        self.init(stat: stat, status: status, ticksPerSecond: Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// `stat`: /proc/PID/stat (utime and stime are fields 14 and 15, counted after the
    /// parenthesised command name, which may hold spaces); `status`: its `VmRSS:` line.
    public init?(stat: String, status: String, ticksPerSecond: Double) {
        guard ticksPerSecond > 0, let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the name: state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kibibytes = Int(line.dropFirst("VmRSS:".count).split(whereSeparator: \.isWhitespace).first ?? "") else { return nil }
        cpuSeconds = (user + system) / ticksPerSecond
        residentBytes = kibibytes * 1024
    }

    private static func read(_ path: String) -> String? {
        // Both files are a few kilobytes; a bound keeps a strange /proc from costing more.
        (try? BoundedFile.read(path, maxBytes: 64 * 1024)).map { String(decoding: $0, as: UTF8.self) }
    }
}
