import ArgumentParser
import Foundation
import HushServer
import HushTerminal

/// `hush bench …`: load generators.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure a running Hush server.", subcommands: [Relay.self, Files.self, Connections.self])

    struct Relay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "R rooms × M members exchanging end-to-end messages through a server.",
            discussion: """
                Phases: handshakes (fresh keys connect and disconnect), joins (every member joins through \
                the real invite protocol), then messages for --duration. Reports handshakes/s, joins/s, sent \
                and delivered messages per second and delivery latency percentiles. A server enforces 20 \
                requests/s per connection (burst 40): with --rate above ~18 or --rate 0, start the server with \
                `hush serve --rate-limit 0` (benchmarks only) or the run measures the limiter. By default every \
                message is sealed and signed as it is sent and every delivery opened and verified, which costs the \
                load generator more than the server: to find the server's ceiling, use --verify-every N with \
                --messages, and --server-pid for the server's CPU per delivered message.
                """)

        @Option(help: "Server URL.") var server: String
        @Option(name: .customLong("join-server"),
                help: ArgumentHelp("Another node of the same deployment (repeatable): members join through --server and these in turn, owners stay on --server.",
                                   valueName: "url")) var joinServers: [String] = []
        @Option(help: "Rooms.") var rooms = 2
        @Option(help: "Members per room, the owner included.") var members = 3
        @Option(help: "Message text bytes.") var size = 100
        @Option(help: "Messages per second per sender; 0: as fast as the replies come.") var rate = 5.0
        @Option(help: "Seconds of messaging.") var duration = 10.0
        @Option(help: "Messages per sender: stop after that many (or at --duration, whichever comes first).") var messages: Int?
        @Option(help: "Connections in the handshake phase (default rooms × members).") var handshakes: Int?
        @Option(help: ArgumentHelp("Open and verify every Nth delivery, only count the others; above 1, messages are sealed before the run (needs --messages).",
                                   valueName: "N")) var verifyEvery = 1
        @Option(help: ArgumentHelp("The server's process id on this machine: report its CPU per delivered message and its memory.",
                                   valueName: "pid")) var serverPid: Int32?
        @Flag(help: "Print the report as JSON.") var json = false
        @Flag(help: "No progress line.") var quiet = false

        func run() async throws {
            try await reportingErrors { try await execute() }
        }

        func execute() async throws {
            var config = BenchConfig(server: server)
            config.rooms = rooms
            config.members = members
            config.size = size
            config.rate = rate
            config.duration = duration
            config.messages = messages
            config.handshakes = handshakes
            config.verifyEvery = verifyEvery
            config.serverPID = serverPid
            config.joinServers = joinServers
            let terminal = isatty(STDERR_FILENO) != 0
            let progress: (@Sendable (String) -> Void)?
            if quiet {
                progress = nil
            } else {
                progress = { (line: String) -> Void in
                    let text: String = terminal ? "\r\u{1B}[K" + line : line + "\n"
                    FileHandle.standardError.write(Data(text.utf8))
                }
            }
            let report: BenchReport = try await BenchRunner.run(config, progress: progress)
            if terminal && !quiet { FileHandle.standardError.write(Data("\n".utf8)) }
            printOut(json ? Format.jsonLine(report) : report.table)
        }
    }

    struct Files: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A room's owner sends files that a member downloads and verifies, through a server.",
            discussion: """
                Times sealing (on this machine), uploading (chunks stored, then the file message) and \
                downloading (chunks fetched, opened and verified) apart, in MiB/s. A server enforces its \
                file-chunk budget (64 requests/s per connection): start it with --rate-limit 0 to see its \
                own pace. --server-pid adds the server's CPU per MiB of each direction.
                """)

        @Option(help: "Server URL.") var server: String
        @Option(help: "MiB per file (1–25).") var mib = 10
        @Option(help: "Files to send.") var files = 3
        @Option(help: ArgumentHelp("The server's process id on this machine: report its CPU per MiB.", valueName: "pid"))
        var serverPid: Int32?
        @Flag(help: "Print the report as JSON.") var json = false

        func run() async throws {
            try await reportingErrors {
                var config = FileBenchConfig(server: server)
                config.mebibytes = mib
                config.files = files
                config.serverPID = serverPid
                let report = try await FileBenchRunner.run(config) { line in
                    FileHandle.standardError.write(Data((line + "\n").utf8))
                }
                printOut(json ? Format.jsonLine(report) : report.table)
            }
        }
    }

    struct Connections: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hold N idle established connections: handshake rate, server memory per connection, probe round trip.",
            discussion: """
                Opens connections in steps (each: WebSocket, Secure Session handshake with a fresh key, `hello` \
                answered) and holds them idle. At each level: handshakes per second while opening, the server's \
                resident memory per connection above the baseline (with --server-pid), and the `hello` round trip \
                of one more probe connection. Then it closes them all and reads the server's memory again. Every \
                connection comes from this address: start the server with --max-connections-per-address and \
                --max-connections above --count (the bench prints the flags), and an open-file limit that fits.
                """)

        @Option(help: "Server URL.") var server: String
        @Option(help: "Connections to hold at the end.") var count: Int
        @Option(help: ArgumentHelp("Open connections at each step, comma separated, ascending (default 1000, 2000, 5000, 10000, … below --count, then --count).",
                                   valueName: "n,n,…")) var levels: String?
        @Option(help: "Probe `hello` round trips per level.") var probes = 10
        @Option(help: "Handshakes in flight while opening.") var concurrency = 32
        @Option(help: ArgumentHelp("The server's process id on this machine: report its memory and descriptors.", valueName: "pid"))
        var serverPid: Int32?
        @Option(help: ArgumentHelp("Read the server's memory this long after its connections are gone (default: once it stops falling, at most 15 s).",
                                   valueName: "seconds")) var settle: Double?
        @Flag(help: "Print the report as JSON.") var json = false

        func run() async throws {
            try await reportingErrors {
                var steps = ConnectionBenchConfig.defaultLevels(count: count)
                if let levels {
                    let parsed = levels.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
                    guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else { throw ChatError("--levels: numbers separated by commas") }
                    steps = parsed.compactMap { $0 }
                    guard steps.last == count else { throw ChatError("--levels must end at --count") }
                }
                var config = ConnectionBenchConfig(server: server, levels: steps)
                config.probes = probes
                config.concurrency = concurrency
                config.serverPID = serverPid
                config.settleSeconds = settle
                let report = try await ConnectionBenchRunner.run(config, descriptors: DescriptorLimit.raiseToHard()) { line in
                    FileHandle.standardError.write(Data((line + "\n").utf8))
                }
                printOut(json ? Format.jsonLine(report) : report.table)
            }
        }
    }
}
