import Foundation
import HushClient
import HushProtocol
import HushTestSupport
import Testing
import ThemisKit

/// `hush serve` as a subprocess, optionally under `prlimit --nofile`.
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    let folder: TempFolder
    private let output = LockedBuffer()
    private(set) var port = 0

    init(_ arguments: [String], descriptors: Int? = nil) throws {
        folder = try TempFolder()
        let serve = ["serve", "--port", "0", "--data", folder.path("data")] + arguments
        if let descriptors {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--nofile=\(descriptors):\(descriptors)", "--", HushBinary.url.path] + serve
        } else {
            process.executableURL = HushBinary.url
            process.arguments = serve
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let output = self.output
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil } else { output.append(chunk) }
        }
        try process.run()
    }

    static func start(_ arguments: [String] = [], descriptors: Int? = nil) async throws -> ServeProcess {
        let server = try ServeProcess(arguments, descriptors: descriptors)
        let deadline = ContinuousClock.now + .seconds(30)
        while server.port == 0 {
            guard ContinuousClock.now < deadline, server.process.isRunning else {
                await server.stop()
                throw TestFailure("hush serve did not start: \(server.output.text)")
            }
            try await Task.sleep(for: .milliseconds(50))
            server.port = Self.port(after: "Hush is listening on http://127.0.0.1:", in: server.output.text) ?? 0
        }
        return server
    }

    private static func port(after prefix: String, in text: String) -> Int? {
        guard let range = text.range(of: prefix) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    /// Runs `body` against a started server and always stops it (awaited) afterwards.
    static func with<T: Sendable>(_ arguments: [String] = [], descriptors: Int? = nil,
                                  _ body: (ServeProcess) async throws -> T) async throws -> T {
        let server = try await start(arguments, descriptors: descriptors)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var text: String { output.text }

    /// User plus system CPU time so far, from `/proc/PID/stat`.
    func cpuSeconds() throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        guard let user = Double(fields[11]), let system = Double(fields[12]) else { throw TestFailure("bad stat: \(stat)") }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Waits for the process to end; false when it is still running after `timeout`.
    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }

    /// SIGTERM, then SIGKILL if it lingers; removes the data folder. Detached, so that a test
    /// cancelled by its time limit still waits for the process rather than spinning past it.
    func stop() async {
        await Task.detached {
            if self.process.isRunning {
                kill(self.process.processIdentifier, SIGTERM)
                if await !self.waitForExit(timeout: .seconds(60)) {
                    kill(self.process.processIdentifier, SIGKILL)
                    _ = await self.waitForExit(timeout: .seconds(60))
                }
            }
            self.folder.remove()
        }.value
    }
}

/// The real `hush serve` under hostile peers: descriptor exhaustion.
@Suite(.serialized, .timeLimit(.minutes(10))) struct ServeResilienceTests {
    /// With 256 descriptors (192 for connections), 40 Hush clients and 360 idle sockets: the
    /// excess is answered 503 and closed, the server neither traps nor spins, and it serves
    /// again as soon as connections go. (Few handshakes: each must beat the server's 10 s
    /// handshake deadline, even while other suites keep this process's threads busy.)
    @Test func descriptorExhaustionIsRefusedNotFatal() async throws {
        try await ServeProcess.with(["--max-connections-per-address", "1000", "--request-head-timeout", "120"],
                                    descriptors: 256) { server in
            let info = try await ServerInfo.fetch(server.url)
            let flood = ContinuousClock.now
            let cpuBeforeFlood = try server.cpuSeconds()
            let clients = try await withThrowingTaskGroup(of: [HushConnection].self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        var opened: [HushConnection] = []
                        for _ in 0..<10 {
                            opened.append(try await HushConnection.openRegistered(server: info, key: ThemisPrivateKey()))
                        }
                        return opened
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            var idle: [RawSocket] = []
            for _ in 0..<360 { idle.append(try await RawSocket.connect(port: server.port)) }
            // A held socket stays open for the whole wait; a refused one is answered and closed.
            let outcomes = await withTaskGroup(of: (closed: Bool, status: Int?).self) { group in
                for socket in idle {
                    group.addTask {
                        let (bytes, closed) = await socket.read(timeout: .seconds(20))
                        return (closed, RawResponse(bytes)?.status)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let refused = outcomes.filter(\.closed)
            print("flood: \(clients.count) Hush clients, \(360 - refused.count) idle sockets held, \(refused.count) refused; "
                  + "server CPU \(try server.cpuSeconds() - cpuBeforeFlood) s in \(ContinuousClock.now - flood)")
            #expect(clients.count == 40)
            #expect(refused.allSatisfy { $0.status == 503 }, "\(refused.map(\.status))")
            #expect(40 + 360 - refused.count <= 192)
            #expect(refused.count >= 40 + 360 - 192)

            // Full: a newcomer is told so at once, and the server idles rather than spins.
            #expect(try await rawGet("/healthz", port: server.port)?.status == 503)
            let cpuBefore = try server.cpuSeconds()
            let window = ContinuousClock.now
            try await Task.sleep(for: .seconds(5))
            let cpu = try server.cpuSeconds() - cpuBefore
            let wall = ContinuousClock.now - window
            print("full server: \(cpu) s CPU in \(wall)")
            #expect(cpu < 1, "server busy while full: \(cpu) s CPU in \(wall)")
            #expect(server.process.isRunning, "\(server.text)")

            for socket in idle { socket.close() }
            try await waitUntil(timeout: .seconds(30), "a free slot") { try await rawGet("/healthz", port: server.port)?.status == 200 }
            // The established clients were not disturbed, and a newcomer is served.
            for client in clients { #expect(try await client.request(WireMessage(type: "hello")).type == "hello") }
            let newcomer = try await HushConnection.openRegistered(server: info, key: ThemisPrivateKey())
            for client in clients + [newcomer] { client.close() }
            for client in clients + [newcomer] { try await client.closed(within: .seconds(20)) }
            #expect(server.process.isRunning, "\(server.text)")
        }
    }

    /// Connections allowed beyond the descriptors: `accept` fails with EMFILE, and the listener
    /// pauses instead of retrying in a busy loop; it accepts again once descriptors are free.
    @Test func acceptPausesWhenDescriptorsRunOut() async throws {
        try await ServeProcess.with(["--max-connections", "1000", "--max-connections-per-address", "1000",
                                     "--request-head-timeout", "120"], descriptors: 256) { server in
            var sockets: [RawSocket] = []
            for _ in 0..<300 { sockets.append(try await RawSocket.connect(port: server.port)) }
            try await Task.sleep(for: .seconds(1))  // let the server reach its limit
            let cpuBefore = try server.cpuSeconds()
            let window = ContinuousClock.now
            try await Task.sleep(for: .seconds(5))
            let cpu = try server.cpuSeconds() - cpuBefore
            let wall = ContinuousClock.now - window
            print("out of descriptors: \(cpu) s CPU in \(wall)")
            #expect(cpu < 1, "accept loop busy: \(cpu) s CPU in \(wall)")
            #expect(server.process.isRunning, "\(server.text)")

            for socket in sockets { socket.close() }
            try await waitUntil(timeout: .seconds(30), "a free slot") { try await rawGet("/healthz", port: server.port)?.status == 200 }
            #expect(server.process.isRunning, "\(server.text)")
        }
    }
}
