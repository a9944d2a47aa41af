import Foundation
import HushClient
import HushProtocol

/// `hush bench files`: a room's owner sends files and a member downloads and verifies them,
/// through a running server. Sealing, uploading and downloading (opening and verifying
/// included) are timed apart, and with `serverPID` the server's CPU per MiB of each direction.
public struct FileBenchConfig: Sendable, Codable, Equatable {
    public var server: String
    /// Bytes per file, in MiB.
    public var mebibytes = 10
    public var files = 3
    public var serverPID: Int32?

    public init(server: String) { self.server = server }

    public func validate() throws(ChatError) {
        let most = RoomFile.maxSize >> 20
        guard (1...most).contains(mebibytes) else { throw ChatError("--mib must be 1…\(most)") }
        guard (1...100).contains(files) else { throw ChatError("--files must be 1…100") }
        guard (1...Int32.max).contains(serverPID ?? 1) else { throw ChatError("--server-pid must be a process id") }
    }
}

public struct FileBenchReport: Codable, Sendable, Equatable {
    public struct Phase: Codable, Sendable, Equatable {
        public var seconds: Double
        public var mebibytesPerSecond: Double
        /// The server's CPU per MiB of file moved in this phase, milliseconds (with `serverPID`).
        public var serverMillisPerMebibyte: Double?
    }

    public var config: FileBenchConfig
    /// Sealing every file into its chunks, on this machine (no server involved).
    public var seal: Phase
    /// Storing the chunks and sending each file message.
    public var upload: Phase
    /// Fetching the chunks, opening and verifying them.
    public var download: Phase
    /// Files that came back byte for byte.
    public var verified: Int

    public var table: String {
        func f(_ value: Double) -> String { String(format: "%.1f", value) }
        var lines = ["hush bench files  \(config.server)",
                     "  \(config.files) files × \(config.mebibytes) MiB, owner → member", "",
                     "phase     seconds  MiB/s   server ms per MiB"]
        for (name, phase) in [("seal", seal), ("upload", upload), ("download", download)] {
            lines.append(name.padding(toLength: 10, withPad: " ", startingAt: 0) + f(phase.seconds).padding(toLength: 9, withPad: " ", startingAt: 0)
                + f(phase.mebibytesPerSecond).padding(toLength: 8, withPad: " ", startingAt: 0)
                + (phase.serverMillisPerMebibyte.map(f) ?? ""))
        }
        lines.append("")
        lines.append("verified  \(verified) of \(config.files)")
        return lines.joined(separator: "\n")
    }
}

public enum FileBenchRunner {
    public static func run(_ config: FileBenchConfig, progress: (@Sendable (String) -> Void)? = nil) async throws -> FileBenchReport {
        try config.validate()
        let server = try await ServerInfo.fetch(config.server)
        let owner = try await RoomClient.create(server: server)
        let member = try await RoomClient.join(link: try await owner.invite())
        let room = await owner.room
        let mebibytes = Double(config.mebibytes * config.files)
        func phase(_ seconds: Double, _ before: ProcessUsage?, _ after: ProcessUsage?) -> FileBenchReport.Phase {
            let cpu = before.flatMap { before in after.map { $0.cpuSeconds - before.cpuSeconds } }
            return FileBenchReport.Phase(seconds: seconds, mebibytesPerSecond: mebibytes / max(seconds, 1e-9),
                                         serverMillisPerMebibyte: cpu.map { $0 * 1000 / mebibytes })
        }
        let usage = { config.serverPID.flatMap(ProcessUsage.init(pid:)) }
        let contents = (0..<config.files).map { _ in RoomPayload.randomBytes(config.mebibytes << 20) }

        progress?("sealing \(config.files) × \(config.mebibytes) MiB")
        let sealStart = BenchRunner.nanos()
        let sealed = try contents.map { try RoomFile.seal($0, room: room, name: "bench.bin", type: RoomFile.unknownType) }
        let sealSeconds = seconds(since: sealStart)

        progress?("uploading")
        let uploadBefore = usage()
        let uploadStart = BenchRunner.nanos()
        for (file, chunks) in sealed {
            try await owner.uploadChunks(chunks, of: file)
            _ = try await owner.sendFileMessage(file)
        }
        let uploadSeconds = seconds(since: uploadStart)
        let uploadAfter = usage()

        progress?("downloading")
        let downloadStart = BenchRunner.nanos()
        var verified = 0
        for (index, (file, _)) in sealed.enumerated() where try await member.download(file) == contents[index] {
            verified += 1
        }
        let downloadSeconds = seconds(since: downloadStart)
        let downloadAfter = usage()
        await owner.disconnect()
        await member.disconnect()
        return FileBenchReport(config: config, seal: phase(sealSeconds, nil, nil),
                               upload: phase(uploadSeconds, uploadBefore, uploadAfter),
                               download: phase(downloadSeconds, uploadAfter, downloadAfter), verified: verified)
    }

    static func seconds(since start: UInt64) -> Double { Double(BenchRunner.nanos() - start) / 1e9 }
}
