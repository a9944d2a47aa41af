import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Hummingbird
import HushClient
import HushProtocol
import HushServer
import Logging
import Synchronization
import ThemisKit

// What the server and CLI test suites share: an in-process server, the built `hush` binary,
// and waiting for an event.

/// A real server in this process on 127.0.0.1, port 0, over a temporary data folder, on SQLite
/// there or on PostgreSQL (a database of its own in the test cluster, or one it shares).
/// The handshake deadline of test servers, unless a test sets its own: the server's timer is
/// exact, while a test's clients share a few threads with every other test running at once
/// (ten times slower under ThreadSanitizer), so 10 s could end a handshake that is only late.
public let testHandshakeTimeout: Duration = .seconds(60)

public struct TestServer: Sendable {
    public let url: String
    public let server: HushServer
    let task: Task<Void, any Error>
    public let dataDirectory: URL
    /// The PostgreSQL store, closed on `stop`.
    let postgres: PostgresStore?
    /// The PostgreSQL database it runs on: a second node can be started on it.
    public let database: PostgresLocation?
    /// Whether this server created `database`, and so drops it on `stop`.
    let ownsDatabase: Bool

    /// `store` .postgres with `database` nil creates a fresh database; with `database`, a second
    /// node on that one.
    public static func start(limits: Limits = .standard, connections: ConnectionLimits = ConnectionLimits(),
                             dataDirectory: URL? = nil, clock: ManualClock? = nil, requestClock: StepClock? = nil,
                             retention: Retention = Retention(), store: StoreChoice = .sqlite,
                             database: PostgresLocation? = nil, allowedOrigins: Set<WebOrigin> = []) async throws -> TestServer {
        let directory = dataDirectory ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("hush-test-\(UUID().uuidString)")
        var configuration = ServerConfiguration(dataDirectory: directory)
        configuration.port = 0
        configuration.limits = limits
        if limits.handshakeTimeout == Limits.standard.handshakeTimeout {
            configuration.limits.handshakeTimeout = testHandshakeTimeout
        }
        configuration.connections = connections
        configuration.retention = retention
        configuration.allowedOrigins = allowedOrigins
        configuration.webRoot = directory.appendingPathComponent("web")
        if let clock { configuration.clock = { clock.now } }
        if let requestClock { configuration.requestClock = { requestClock.read() } }
        var ownedDatabase: PostgresLocation?
        var postgres: PostgresStore?
        let server: HushServer
        do {
            switch store {
            case .sqlite:
                server = try HushServer(configuration: configuration)
            case .postgres:
                let cluster = try await PostgresCluster.shared()
                if database == nil { ownedDatabase = try await cluster.createDatabase() }
                guard let location = database ?? ownedDatabase else { throw FixtureError("no database") }
                let opened = try await PostgresStore.connect(to: location)
                postgres = opened
                server = try await HushServer(configuration: configuration, store: opened)
            }
        } catch {
            await postgres?.close()
            if let ownedDatabase { try? await PostgresCluster.shared().dropDatabase(ownedDatabase) }
            throw error
        }
        var logger = Logger(label: "hush.test")
        logger.logLevel = .critical  // shutdown of the test server logs a cancellation at error level
        let (ports, sink) = AsyncStream.makeStream(of: Int.self)
        let app = server.application(logger: logger) { port in sink.yield(port) }
        let task = Task { try await app.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ClientError.connectionClosed }
        return TestServer(url: "http://127.0.0.1:\(port)", server: server, task: task, dataDirectory: directory,
                          postgres: postgres, database: database ?? ownedDatabase, ownsDatabase: ownedDatabase != nil)
    }

    public func info() async throws -> ServerInfo { try await ServerInfo.fetch(url) }

    public var port: Int { Int(url.split(separator: ":").last ?? "") ?? 0 }

    /// `removingData` false keeps the data folder (and a PostgreSQL database) for a restart on it.
    public func stop(removingData: Bool = true) async {
        task.cancel()
        _ = await task.result
        await postgres?.close()
        if removingData {
            try? FileManager.default.removeItem(at: dataDirectory)
            if ownsDatabase, let database { try? await PostgresCluster.shared().dropDatabase(database) }
        }
    }
}

/// Runs `body` against a fresh server and always stops it (awaited) afterwards, also when
/// `body` throws, so that no server outlives its test.
public func withTestServer<T: Sendable>(limits: Limits = .standard, connections: ConnectionLimits = ConnectionLimits(),
                                        clock: ManualClock? = nil, requestClock: StepClock? = nil,
                                        retention: Retention = Retention(), store: StoreChoice = .sqlite,
                                        allowedOrigins: Set<WebOrigin> = [],
                                        _ body: (TestServer) async throws -> T) async throws -> T {
    try await using(try await TestServer.start(limits: limits, connections: connections, clock: clock, requestClock: requestClock,
                                               retention: retention, store: store, allowedOrigins: allowedOrigins),
                    stop: { await $0.stop() }, body)
}

/// Runs `body` with `resource` and always awaits `stop` afterwards, also when `body` throws.
public func using<Resource: Sendable, T: Sendable>(_ resource: Resource, stop: (Resource) async -> Void,
                                                   _ body: (Resource) async throws -> T) async throws -> T {
    do {
        let result = try await body(resource)
        await stop(resource)
        return result
    } catch {
        await stop(resource)
        throw error
    }
}

/// A wall clock that moves only when a test advances it (invite expiry without waiting).
public final class ManualClock: Sendable {
    private let current: Mutex<Date>
    public init(_ start: Date = Date()) { current = Mutex(start) }
    public var now: Date { current.withLock { $0 } }
    public var seconds: Int64 { Int64(now.timeIntervalSince1970) }
    public func advance(by seconds: TimeInterval) { current.withLock { $0 += seconds } }
}

/// Monotonic time that moves by `step` each time it is read, and only then: each request a
/// server reads it for arrives `step` after the one before, however fast the machine is.
public final class StepClock: Sendable {
    private let start = ContinuousClock.now
    private let reads = Atomic<Int>(0)
    public let step: Duration
    public init(step: Duration) { self.step = step }
    public func read() -> ContinuousClock.Instant { start + step * reads.wrappingAdd(1, ordering: .relaxed).newValue }
}

/// Polls `condition` until it holds, within `timeout`: for state that changes without an event
/// a test can subscribe to (a server noticing a closed connection, say).
public func waitUntil(timeout: Duration = .seconds(20), _ what: String = "condition",
                      _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw WaitTimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

public struct WaitTimedOut: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "timed out waiting for \(what)" }
}

extension HushConnection {
    /// Waits until the connection has ended, or throws after `timeout`.
    public func closed(within timeout: Duration = .seconds(20)) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask { await self.waitUntilClosed(); return true }
            group.addTask { try await Task.sleep(for: timeout); return false }
            defer { group.cancelAll() }
            guard try await group.next() == true else { throw WaitTimedOut(what: "the connection to close") }
        }
    }

    /// Opens a connection and completes one `hello`: once it returns, the server has
    /// registered the connection, so pushes sent from then on reach it.
    public static func openRegistered(server: ServerInfo, key: ThemisPrivateKey) async throws -> HushConnection {
        let connection = try await HushConnection.open(server: server, key: key)
        try await connection.request(WireMessage(type: "hello"))
        return connection
    }
}

/// The built `hush` binary: `HUSH_BINARY`, or the one beside the test bundle in the build
/// products folder.
public enum HushBinary {
    public static var url: URL {
        if let path = ProcessInfo.processInfo.environment["HUSH_BINARY"] { return URL(fileURLWithPath: path) }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("hush").path), directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("hush")
    }
}

/// The built `hush serve` as a child process: on a data folder of the caller's (tests that
/// `kill -9` it and start it again on the same folder and port) or a temporary one; optionally
/// under `prlimit --nofile`. Its output is kept (`text`); `stop()` is awaited teardown.
/// `@unchecked Sendable`: `port` and `metricsPort` are set only while `start` runs, before the
/// value is shared; afterwards only the pid, signals and the output buffer (locked) are used.
public final class ServeProcess: @unchecked Sendable {
    public let process = Process()
    /// The data folder: the caller's, or a temporary one that `stop()` removes.
    public let data: URL
    private let removesData: Bool
    private let output = LockedBuffer()
    /// A signal each time the server prints something; ends with its output.
    private let printed: AsyncStream<Void>
    /// A signal when the process has ended.
    private let exits: AsyncStream<Void>
    private let exited = Atomic<Bool>(false)
    public private(set) var port = 0
    public private(set) var metricsPort: Int?

    private init(data: URL?, port: Int, arguments: [String], descriptors: Int?) throws {
        removesData = data == nil
        self.data = data ?? FileManager.default.temporaryDirectory.appendingPathComponent("hush-serve-\(UUID().uuidString)")
        let serve = ["serve", "--port", "\(port)", "--data", self.data.path] + arguments
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
        let (printed, printedSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.printed = printed
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty {
                handle.readabilityHandler = nil
                printedSink.finish()
            } else {
                output.append(chunk)
                printedSink.yield()
            }
        }
        let (exits, exitSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.exits = exits
        process.terminationHandler = { [weak self] _ in
            self?.exited.store(true, ordering: .releasing)
            exitSink.yield()
            exitSink.finish()
        }
        try process.run()
    }

    /// Starts `hush serve --port <port> --data <data>` (port 0: a free one) plus `arguments`
    /// (with the handshake deadline of `testHandshakeTimeout` unless they set one),
    /// and returns once its banner says where it listens (and where its metrics are, when
    /// asked for). A server that does not start within 30 s is stopped, and that is an error.
    public static func start(data: URL? = nil, port: Int = 0, arguments: [String] = [],
                             descriptors: Int? = nil) async throws -> ServeProcess {
        let deadline = arguments.contains("--handshake-timeout") ? [] : ["--handshake-timeout", "\(testHandshakeTimeout / .seconds(1))"]
        let server = try ServeProcess(data: data, port: port, arguments: deadline + arguments, descriptors: descriptors)
        let wantsMetrics = arguments.contains("--metrics-address")
        // Each time it prints, read the banner again; its output ending (it exited) or 30 s
        // without the banner is a failed start.
        let started = (try? await next(server.printed, timeout: .seconds(30)) { _ in
            server.port = Self.port(after: "Hush is listening on http://127.0.0.1:", in: server.text) ?? 0
            server.metricsPort = Self.port(after: "Metrics on http://127.0.0.1:", in: server.text)
            return server.port != 0 && (!wantsMetrics || server.metricsPort != nil)
        }) != nil
        guard started else {
            await server.stop()
            throw ServeFailure(description: "hush serve did not start: \(server.text)")
        }
        return server
    }

    /// Runs `body` against a started server and always stops it (awaited) afterwards.
    public static func with<T: Sendable>(data: URL? = nil, arguments: [String] = [], descriptors: Int? = nil,
                                         _ body: (ServeProcess) async throws -> T) async throws -> T {
        try await using(try await start(data: data, arguments: arguments, descriptors: descriptors),
                        stop: { await $0.stop() }, body)
    }

    private static func port(after prefix: String, in text: String) -> Int? {
        guard let range = text.range(of: prefix) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    public var url: String { "http://127.0.0.1:\(port)" }
    /// Everything the server printed so far.
    public var text: String { output.text }

    /// How many descriptors the server has open now, from `/proc/PID/fd`.
    public func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? 0
    }

    /// Waits for the process to end; false when it is still running after `timeout`.
    public func waitForExit(timeout: Duration) async -> Bool {
        if !exited.load(ordering: .acquiring) { _ = try? await next(exits, timeout: timeout) { _ in true } }
        guard exited.load(ordering: .acquiring) else { return false }
        process.waitUntilExit()  // already ended: returns at once, with the status set
        return true
    }

    /// SIGKILL: no shutdown, no flush; returns once the process is gone.
    public func kill() {
        if process.isRunning { sendSignal(SIGKILL, to: process.processIdentifier) }
        process.waitUntilExit()
    }

    /// SIGTERM (the graceful shutdown), then SIGKILL if it lingers past a minute; removes a
    /// temporary data folder. Detached, so that a test cancelled by its time limit still
    /// waits for the process rather than leaving it behind.
    public func stop() async {
        await Task.detached {
            if self.process.isRunning {
                sendSignal(SIGTERM, to: self.process.processIdentifier)
                if await !self.waitForExit(timeout: .seconds(60)) {
                    sendSignal(SIGKILL, to: self.process.processIdentifier)
                    _ = await self.waitForExit(timeout: .seconds(60))
                }
            }
            if self.removesData { try? FileManager.default.removeItem(at: self.data) }
        }.value
    }
}

/// A fresh server key for several `hush serve` nodes (`--server-key`): written to
/// `folder/server.key`, mode 0600, as an operator copies one node's key to the others.
public func writeServerKey(in folder: URL) throws -> (file: URL, key: ThemisPrivateKey) {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let file = folder.appendingPathComponent("server.key")
    let key = ThemisPrivateKey()
    guard FileManager.default.createFile(atPath: file.path, contents: Data(key.containerBytes),
                                         attributes: [.posixPermissions: 0o600]) else {
        throw ServeFailure(description: "could not write \(file.path)")
    }
    return (file, key)
}

public struct ServeFailure: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// Bytes a child process writes, collected across the pipe's reader thread.
public final class LockedBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    public init() {}

    public func append(_ chunk: Data) { lock.withLock { data.append(chunk) } }
    public var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }

    /// Appends `chunk` and returns the whole lines now complete, keeping the rest.
    public func appendAndTakeLines(_ chunk: Data) -> [String] {
        lock.withLock {
            data.append(chunk)
            var lines: [String] = []
            while let newline = data.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: data[data.startIndex..<newline], as: UTF8.self))
                data = Data(data[data.index(after: newline)...])
            }
            return lines
        }
    }

    /// Everything collected so far, emptying the buffer (nil when empty).
    public func takeAll() -> String? {
        lock.withLock {
            defer { data = Data() }
            return data.isEmpty ? nil : String(decoding: data, as: UTF8.self)
        }
    }
}

/// `kill(2)`, out of reach of `ServeProcess.kill()`'s name.
private func sendSignal(_ signal: Int32, to pid: Int32) { _ = kill(pid, signal) }

/// Waits for the first event matching `predicate`, within `timeout`.
public func next<S: AsyncSequence & Sendable>(_ sequence: S, timeout: Duration = .seconds(10),
                                       where predicate: @escaping @Sendable (S.Element) -> Bool) async throws -> S.Element
where S.Element: Sendable {
    try await withThrowingTaskGroup(of: S.Element?.self) { group in
        group.addTask {
            for try await element in sequence where predicate(element) { return element }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let element = try await group.next() ?? nil else { throw ClientError.timedOut }
        return element
    }
}

/// A fresh joiner that has sent the `join` request of PROTOCOL.md §4.3 for `invite`, over a
/// connection of its own.
public func sendJoinRequest(_ invite: InviteLink, server: ServerInfo) async throws -> (JoinerFlow, HushConnection) {
    let flow = try JoinerFlow(invite: invite)
    let joiner = try await HushConnection.open(server: server, key: flow.me)
    var join = WireMessage(type: "join")
    join.room = invite.room
    join.inviteId = Base64Bytes(invite.inviteID)
    join.joiningKey = Base64Bytes(try flow.joiningKeyBlob())
    try await joiner.request(join)
    return (flow, joiner)
}

/// A raw TCP connection for hostile-client tests: bytes in and out, nothing in between.
/// Non-blocking: every wait polls and sleeps, so many of them share the test's few threads.
public final class RawSocket: Sendable {
    public let fd: Int32
    private let isClosed = Mutex(false)

    private init(fd: Int32) { self.fd = fd }

    /// Connects to `host:port` on IPv4, from the source address `source` when given (any
    /// 127.x.y.z works on Linux loopback).
    public static func connect(port: Int, host: String = "127.0.0.1", from source: String? = nil,
                               timeout: Duration = .seconds(20)) async throws -> RawSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawSocketError("socket: errno \(errno)") }
        let raw = RawSocket(fd: fd)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if let source {
            var address = try Self.address(source, port: 0)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { throw RawSocketError("bind \(source): errno \(errno)") }
        }
        var address = try Self.address(host, port: port)
        let started = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard started == 0 || errno == EINPROGRESS else { throw RawSocketError("connect: errno \(errno)") }
        let deadline = ContinuousClock.now + timeout
        while !raw.poll(POLLOUT) {
            guard ContinuousClock.now < deadline else { throw RawSocketError("connect timed out") }
            try await Task.sleep(for: .milliseconds(10))
        }
        var failure: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length)
        guard failure == 0 else { throw RawSocketError("connect: errno \(failure)") }
        return raw
    }

    private static func address(_ host: String, port: Int) throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw RawSocketError("not an IPv4 address: \(host)") }
        return address
    }

    private func poll(_ events: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
        return Glibc.poll(&entry, 1, 0) == 1
    }

    /// Sends all of `bytes`; throws when the peer has closed.
    public func send(_ bytes: [UInt8], timeout: Duration = .seconds(20)) async throws {
        var offset = 0
        let deadline = ContinuousClock.now + timeout
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                offset += sent
            } else if sent < 0, errno == EAGAIN || errno == EWOULDBLOCK, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            } else {
                throw RawSocketError("send: errno \(errno)")
            }
        }
    }

    public func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    /// What arrives until `done` says the bytes so far are enough, the peer closes (EOF or
    /// reset), or `timeout` passes. `closed` is true only when the peer closed.
    public func read(timeout: Duration, until done: ([UInt8]) -> Bool = { _ in false }) async -> (bytes: [UInt8], closed: Bool) {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let deadline = ContinuousClock.now + timeout
        while !done(received) {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count > 0 {
                received += chunk[..<count]
            } else if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                return (received, true)
            } else if ContinuousClock.now >= deadline {
                break
            } else {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        return (received, false)
    }

    /// Closes the socket; later calls do nothing.
    public func close() {
        let wasClosed = isClosed.withLock { closed in
            defer { closed = true }
            return closed
        }
        if !wasClosed { _ = Glibc.close(fd) }
    }

    deinit { close() }
}

public struct RawSocketError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// An HTTP response read raw: status, headers (lowercased names) and body.
public struct RawResponse: Sendable {
    public let status: Int
    public let headers: [String: String]
    public let body: String

    public init?(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        body = String(text[end.upperBound...])
        let lines = text[..<end.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else { return nil }
        self.status = status
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
    }
}

/// True once `bytes` hold a whole response head.
public func hasResponseHead(_ bytes: [UInt8]) -> Bool {
    String(decoding: bytes, as: UTF8.self).contains("\r\n\r\n")
}

/// `GET path` over a fresh raw connection that asks to be closed; nil when no response came.
public func rawGet(_ path: String, port: Int, from source: String? = nil) async throws -> RawResponse? {
    let socket = try await RawSocket.connect(port: port, from: source)
    defer { socket.close() }
    try await socket.send("GET \(path) HTTP/1.1\r\nHost: hush\r\nConnection: close\r\n\r\n")
    return RawResponse(await socket.read(timeout: .seconds(20)).bytes)
}

/// A WebSocket client written byte by byte, to behave as no library would.
public enum RawWebSocket {
    public static let upgradeRequest = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    public static let binary: UInt8 = 0x2, continuation: UInt8 = 0x0, close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA

    /// A client frame: masked, as a client must send it, unless a test breaks that rule.
    public static func frame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> [UInt8] {
        let maskBit: UInt8 = masked ? 0x80 : 0
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        switch payload.count {
        case ..<126: frame.append(maskBit | UInt8(payload.count))
        case ..<65536: frame += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: frame.append(maskBit | 127); frame += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        guard masked else { return frame + payload }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return frame
    }

    /// The first whole server frame in `bytes` (opcode, payload) and its length, or nil.
    public static func parse(_ bytes: [UInt8]) -> (opcode: UInt8, payload: [UInt8], length: Int)? {
        guard bytes.count >= 2 else { return nil }
        var length = Int(bytes[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return nil }
            length = bytes[2..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        guard bytes.count >= offset + length else { return nil }
        return (bytes[0] & 0x0F, Array(bytes[offset..<offset + length]), offset + length)
    }

    /// Upgrades, completes the Secure Session handshake and gets `hello` answered, then returns
    /// the socket: from then on the caller decides whether to read.
    public static func establishedPeer(port: Int, server: ServerInfo) async throws -> RawSocket {
        let socket = try await RawSocket.connect(port: port)
        try await socket.send(upgradeRequest)
        var buffer = await socket.read(timeout: .seconds(20), until: hasResponseHead).bytes
        let head = String(decoding: buffer, as: UTF8.self)
        guard head.hasPrefix("HTTP/1.1 101"), let end = head.range(of: "\r\n\r\n") else {
            throw RawSocketError("no upgrade: \(head)")
        }
        buffer.removeFirst(head[..<end.upperBound].utf8.count)
        func nextFrame() async throws -> [UInt8] {
            buffer += await socket.read(timeout: .seconds(20)) { parse(buffer + $0) != nil }.bytes
            guard let (opcode, payload, length) = parse(buffer) else {
                throw RawSocketError("no whole frame within 20 s (\(buffer.count) bytes read)")
            }
            guard opcode == 2 else {
                throw RawSocketError("frame with opcode \(opcode), not binary: \(String(decoding: payload.prefix(120), as: UTF8.self))")
            }
            buffer.removeFirst(length)
            return payload
        }
        let key = ThemisPrivateKey()
        let serverID = Array(server.wellKnown.serverId.utf8)
        let serverKey = server.publicKey
        var session = SecureSession(id: KeyID.sessionID(key.publicKey), privateKey: key,
                                    peerKeyLookup: { $0 == serverID ? serverKey : nil })
        try await socket.send(frame(opcode: 2, try session.connectRequest()))
        while !session.isEstablished {
            switch try session.receive(try await nextFrame()) {
            case .reply(let bytes): try await socket.send(frame(opcode: 2, bytes))
            case .established(let reply): if let reply { try await socket.send(frame(opcode: 2, reply)) }
            case .data: throw RawSocketError("data before the handshake ended")
            }
        }
        var hello = WireMessage(type: "hello")
        hello.id = "1"
        try await socket.send(frame(opcode: 2, try session.wrap(hello.encoded())))
        guard case .data(let plaintext) = try session.receive(try await nextFrame()),
              try WireMessage.decode(plaintext).type == "hello" else { throw RawSocketError("no hello reply") }
        return socket
    }
}
