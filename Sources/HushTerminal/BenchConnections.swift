import Foundation
import HushClient
import HushProtocol
import NIOConcurrencyHelpers
import ThemisKit

/// `hush bench connections` parameters, with their bounds.
public struct ConnectionBenchConfig: Sendable, Codable, Equatable {
    public var server: String
    /// Open connections at each step, ascending; the last is the total.
    public var levels: [Int]
    /// `hello` round trips the probe client times at each level.
    public var probes = 10
    /// Handshakes in flight while a level opens.
    public var concurrency = 32
    /// The server's process id (same machine): its resident memory and open sockets.
    public var serverPID: Int32?
    /// Read the server's memory this long after its connections are gone, to see what it gives
    /// back late (Hush trims the heap once more 35 s after a crowd left); nil: once it stops
    /// falling, at most 15 s.
    public var settleSeconds: Double?

    public init(server: String, levels: [Int]) {
        self.server = server
        self.levels = levels
    }

    /// The levels of a run to `count`: 1,000, 2,000, 5,000, 10,000, 20,000 … below it, then `count`.
    public static func defaultLevels(count: Int) -> [Int] {
        let steps = sequence(first: 1000) { $0 * 10 }.prefix { $0 < count }.flatMap { [$0, $0 * 2, $0 * 5] }
        return steps.filter { $0 < count } + [count]
    }

    public static let maxCount = 100_000
    public static let maxProbes = 1000
    public static let maxConcurrency = 1000
    public static let maxSettleSeconds = 600.0
    /// Descriptors this process keeps beyond the connections (the probe, the runtime, stdio).
    public static let descriptorReserve = 64
    /// Probes go out this far apart, well inside a connection's request budget (20/s), so that
    /// the server's rate limiter never answers one.
    static let probeSpacing: Duration = .milliseconds(100)

    public var count: Int { levels.last ?? 0 }

    public func validate() throws(ChatError) {
        guard !levels.isEmpty, levels.allSatisfy({ (1...Self.maxCount).contains($0) }) else {
            throw ChatError("--count and --levels must be 1…\(Self.maxCount)")
        }
        guard zip(levels, levels.dropFirst()).allSatisfy({ $0 < $1 }) else { throw ChatError("--levels must ascend") }
        guard (1...Self.maxProbes).contains(probes) else { throw ChatError("--probes must be 1…\(Self.maxProbes)") }
        guard (1...Self.maxConcurrency).contains(concurrency) else { throw ChatError("--concurrency must be 1…\(Self.maxConcurrency)") }
        guard (1...Int32.max).contains(serverPID ?? 1) else { throw ChatError("--server-pid must be a process id") }
        guard (0...Self.maxSettleSeconds).contains(settleSeconds ?? 0) else {
            throw ChatError("--settle must be 0…\(Int(Self.maxSettleSeconds)) seconds")
        }
    }

    /// What the server must allow: every connection comes from this one address, the probe too.
    public var serverArguments: String {
        "--max-connections-per-address \(count + 1) --max-connections \(count + 1)"
    }
}

/// What a run measured.
public struct ConnectionBenchReport: Codable, Sendable, Equatable {
    /// The server's resident memory and open sockets at one moment (with `serverPID`).
    public struct ServerUsage: Codable, Sendable, Equatable {
        public var residentBytes: Int
        /// Its descriptors that are sockets: the listeners and the connections (its SQLite
        /// pool opens reader files on demand, which are not the connections' to give back).
        public var sockets: Int
    }

    public struct Level: Codable, Sendable, Equatable {
        /// Connections open at this level, the probe not counted.
        public var connections: Int
        /// Opened in this step (connect, handshake, `hello` answered).
        public var opened: Int
        public var seconds: Double
        public var handshakesPerSecond: Double
        /// Connect + handshake + `hello`, milliseconds.
        public var handshake: LatencySummary
        public var server: ServerUsage?
        /// Resident memory above the baseline, per open connection.
        public var bytesPerConnection: Double?
        /// The probe client's `hello` round trips, milliseconds.
        public var probe: LatencySummary
    }

    public var config: ConnectionBenchConfig
    /// With the probe connected and answered once, before the others open.
    public var baseline: ServerUsage?
    public var levels: [Level]
    /// Once every connection has closed, the server's sockets are back at the baseline (or
    /// `closeWait` has passed) and its memory has stopped falling.
    public var afterClose: ServerUsage?
    /// Seconds from the first close to the server's sockets back at the baseline.
    public var closeSeconds: Double

    /// Resident memory after close over the baseline (the goal: within 1.5).
    public var afterCloseRatio: Double? {
        guard let baseline, let afterClose, baseline.residentBytes > 0 else { return nil }
        return Double(afterClose.residentBytes) / Double(baseline.residentBytes)
    }

    public var table: String {
        let f = { (value: Double) in String(format: "%.1f", value) }
        let ms = { (value: Double) in String(format: "%.2f ms", value) }
        let mib = { (bytes: Int) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        var lines = ["hush bench connections  \(config.server)",
                     "  levels \(config.levels.map(String.init).joined(separator: ", ")), \(config.probes) probes per level, "
                        + "\(config.concurrency) handshakes in flight", ""]
        lines.append(Format.table(
            ["connections", "handshakes/s", "handshake p50", "p99", "server RSS", "KiB per connection", "sockets",
             "probe hello p50", "p99"],
            levels.map { level in
                [String(level.connections), f(level.handshakesPerSecond), ms(level.handshake.p50), ms(level.handshake.p99),
                 level.server.map { mib($0.residentBytes) } ?? "", level.bytesPerConnection.map { f($0 / 1024) } ?? "",
                 level.server.map { String($0.sockets) } ?? "", ms(level.probe.p50), ms(level.probe.p99)]
            }))
        if let baseline, let afterClose {
            lines.append("")
            lines.append(Format.table(["server", "RSS", "sockets"], [
                ["baseline (probe open)", mib(baseline.residentBytes), String(baseline.sockets)],
                [config.settleSeconds.map { "after close (\(f(closeSeconds)) s) + \(f($0)) s" } ?? "after close (\(f(closeSeconds)) s)",
                 mib(afterClose.residentBytes), String(afterClose.sockets)],
            ]))
            if let ratio = afterCloseRatio { lines.append(String(format: "after close / baseline: %.2f×", ratio)) }
        }
        return lines.joined(separator: "\n")
    }
}

/// Opens established connections in steps (WebSocket, Secure Session handshake, `hello`, as a
/// client does), each with a fresh key like distinct people, and holds them idle.
public enum ConnectionBenchRunner {
    /// How long the close waits for the server's sockets to come back to the baseline.
    static let closeWait: Duration = .seconds(60)
    /// How long the close waits for the server's memory to stop falling.
    static let settleWait: Duration = .seconds(15)

    /// `descriptors`: this process's open-file limit, already raised as far as it goes (the
    /// caller's `DescriptorLimit.raiseToHard()`).
    public static func run(_ config: ConnectionBenchConfig, descriptors: Int, progress: (@Sendable (String) -> Void)? = nil)
        async throws -> ConnectionBenchReport {
        try config.validate()
        guard config.count + ConnectionBenchConfig.descriptorReserve <= descriptors else {
            throw ChatError("\(config.count) connections need \(config.count + ConnectionBenchConfig.descriptorReserve) "
                + "descriptors; this process may open \(descriptors) (raise the hard limit: ulimit -Hn)")
        }
        progress?("the server must allow it: hush serve \(config.serverArguments)")
        let server = try await ServerInfo.fetch(config.server)
        let usage = { config.serverPID.flatMap(serverUsage(pid:)) }

        let probe = try await HushConnection.open(server: server, key: ThemisPrivateKey())
        defer { probe.close() }
        try await probe.request(WireMessage(type: "hello"))
        let baseline = usage()

        let open = OpenConnections()
        var levels: [ConnectionBenchReport.Level] = []
        do {
            for target in config.levels {
                let step = target - open.count
                progress?("opening \(step) connections to \(target)")
                let keys = (0..<step).map { _ in ThemisPrivateKey() }
                let handshake = LatencyRecorder()
                let start = BenchRunner.nanos()
                try await BenchRunner.forEach(keys, concurrency: config.concurrency) { key in
                    let begun = BenchRunner.nanos()
                    let connection: HushConnection
                    do {
                        connection = try await HushConnection.open(server: server, key: key)
                        open.add(connection)
                        try await connection.request(WireMessage(type: "hello"))
                    } catch {
                        throw ChatError("a connection failed with \(open.count) of \(config.count) open (\(error)); "
                            + "the server must allow them all: hush serve \(config.serverArguments)")
                    }
                    handshake.record(microseconds: (BenchRunner.nanos() - begun) / 1000)
                }
                let seconds = Double(BenchRunner.nanos() - start) / 1e9
                let server = usage()
                progress?("probing at \(target)")
                let probeLatency = LatencyRecorder()
                for _ in 0..<config.probes {
                    try await Task.sleep(for: ConnectionBenchConfig.probeSpacing)
                    let begun = BenchRunner.nanos()
                    try await probe.request(WireMessage(type: "hello"))
                    probeLatency.record(microseconds: (BenchRunner.nanos() - begun) / 1000)
                }
                let perConnection = server.flatMap { server in
                    baseline.map { Double(server.residentBytes - $0.residentBytes) / Double(target) }
                }
                levels.append(.init(connections: target, opened: step, seconds: seconds,
                                    handshakesPerSecond: seconds > 0 ? Double(step) / seconds : 0,
                                    handshake: handshake.summary, server: server, bytesPerConnection: perConnection,
                                    probe: probeLatency.summary))
            }
        } catch {
            await open.closeAll()
            throw error
        }

        progress?("closing \(open.count) connections")
        let closeStart = BenchRunner.nanos()
        await open.closeAll()
        // The server has let a connection go once its socket is closed.
        let deadline = ContinuousClock.now + closeWait
        while let baseline, let now = usage(), now.sockets > baseline.sockets, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        let closeSeconds = Double(BenchRunner.nanos() - closeStart) / 1e9
        // A server may give memory back after its connections have gone: read it after the
        // settling time asked for, or else once it stops falling (1 s apart, at most `settleWait`).
        if let settle = config.settleSeconds { try await Task.sleep(for: .seconds(settle)) }
        var afterClose = usage()
        let settled = ContinuousClock.now + settleWait
        while config.settleSeconds == nil, let last = afterClose, ContinuousClock.now < settled {
            try await Task.sleep(for: .seconds(1))
            guard let now = usage(), now.residentBytes < last.residentBytes - last.residentBytes / 100 else { break }
            afterClose = now
        }
        return ConnectionBenchReport(config: config, baseline: baseline, levels: levels, afterClose: afterClose,
                                     closeSeconds: closeSeconds)
    }

    /// Resident memory from /proc/PID/status, sockets from the links of /proc/PID/fd (Linux,
    /// same user).
    static func serverUsage(pid: Int32) -> ConnectionBenchReport.ServerUsage? {
        let folder = "/proc/\(pid)/fd"
        guard let resident = ProcessUsage(pid: pid)?.residentBytes,
              let descriptors = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return nil }
        let sockets = descriptors.count {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: folder + "/" + $0))?.hasPrefix("socket:") == true
        }
        return .init(residentBytes: resident, sockets: sockets)
    }
}

/// The connections a run holds open.
final class OpenConnections: Sendable {
    private let connections = NIOLockedValueBox<[HushConnection]>([])

    func add(_ connection: HushConnection) { connections.withLockedValue { $0.append(connection) } }

    var count: Int { connections.withLockedValue { $0.count } }

    /// Closes every connection and waits until each has ended.
    func closeAll() async {
        let all = connections.withLockedValue { all in
            defer { all = [] }
            return all
        }
        for connection in all { connection.close() }
        for connection in all { await connection.waitUntilClosed() }
    }
}
