import Foundation
import HushTestSupport
import Hummingbird
import HushClient
import HushProtocol
import HushServer
import Logging
import Testing

/// A temporary folder removed at the end.
struct TempFolder {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("hush-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// One `hush` process: stdout as a stream of lines, stderr collected, optional stdin.
final class HushProcess: @unchecked Sendable {
    let process = Process()
    let lines: AsyncStream<String>
    private let stdinPipe = Pipe()
    private let stderrBuffer = LockedBuffer()
    private let stdoutBuffer = LockedBuffer()

    init(_ arguments: [String], environment: [String: String]) throws {
        process.executableURL = HushBinary.url
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "HUSH_PASSPHRASE")
        env.removeValue(forKey: "HUSH_STORE")
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdinPipe
        let (lines, sink) = AsyncStream.makeStream(of: String.self)
        self.lines = lines
        let partial = LockedBuffer()
        let stdoutBuffer = self.stdoutBuffer
        out.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty {
                handle.readabilityHandler = nil
                if let rest = partial.takeAll(), !rest.isEmpty { sink.yield(rest) }
                sink.finish()
                return
            }
            stdoutBuffer.append(chunk)
            for line in partial.appendAndTakeLines(chunk) { sink.yield(line) }
        }
        let stderrBuffer = self.stderrBuffer
        err.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil; return }
            stderrBuffer.append(chunk)
        }
        try process.run()
    }

    func write(_ line: String) { stdinPipe.fileHandleForWriting.write(Data((line + "\n").utf8)) }
    func closeInput() { try? stdinPipe.fileHandleForWriting.close() }

    /// The first stdout line matching `predicate`.
    func line(timeout: Duration = .seconds(20), where predicate: @escaping @Sendable (String) -> Bool) async throws -> String {
        try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask { [lines] in
                for await line in lines where predicate(line) { return line }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let line = try await group.next() ?? nil else {
                throw TestFailure("no such line; stdout: \(self.stdout) stderr: \(self.stderr)")
            }
            return line
        }
    }

    /// Waits for the exit (bounded) and returns the status.
    func exit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                process.terminate()
                throw TestFailure("hush \(process.arguments ?? []) did not exit; stderr: \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    var stderr: String { stderrBuffer.text }
    var stdout: String { stdoutBuffer.text }
    var pid: Int32 { process.processIdentifier }

    /// Runs a command to its end.
    static func run(_ arguments: [String], environment: [String: String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = try HushProcess(arguments, environment: environment)
        process.closeInput()
        let status = try await process.exit()
        // Let the pipes drain. Foundation's readability handler now and then never reports the
        // end of a pipe whose writer exited (seen here): wait for it, but not forever. The data
        // itself arrives as it is written, before the exit.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [lines = process.lines] in for await _ in lines {} }
            group.addTask { try? await Task.sleep(for: .seconds(5)) }
            await group.next()
            group.cancelAll()
        }
        return (status, process.stdout, process.stderr)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func text(of event: RoomClient.Event) -> String? {
    switch event {
    case .message(_, _, let text), .chat(_, _, _, let text): text
    default: nil
    }
}

func isMessage(_ wanted: String) -> @Sendable (RoomClient.Event) -> Bool {
    { text(of: $0) == wanted }
}
