import Foundation
import HushServer
import HushTerminal
import HushTestSupport
import Testing

/// `hush bench connections` against a real `hush serve`: a tiny run bounded by its connection
/// count, checked for sane values only (no figure depends on how loaded the machine is).
@Suite(.timeLimit(.minutes(5))) struct BenchConnectionsTests {
    @Test func tinyRunHoldsEveryConnectionAndReports() async throws {
        try await ServeProcess.with { server in
            var config = ConnectionBenchConfig(server: server.url, levels: [10, 20])
            config.probes = 3
            config.concurrency = 4
            config.serverPID = server.process.processIdentifier
            config.settleSeconds = 0.2
            let report = try await ConnectionBenchRunner.run(config, descriptors: DescriptorLimit.raiseToHard())
            let baseline = try #require(report.baseline)
            #expect(baseline.residentBytes > 0)
            #expect(report.levels.map(\.connections) == [10, 20])
            #expect(report.levels.map(\.opened) == [10, 10])
            for level in report.levels {
                #expect(level.handshake.count == UInt64(level.opened) && level.handshakesPerSecond > 0)
                #expect(level.probe.count == 3 && level.probe.p50 > 0 && level.probe.p50 <= level.probe.p99)
                let usage = try #require(level.server)
                #expect(usage.residentBytes > 0 && level.bytesPerConnection != nil)
                // The server holds a socket for each of them, beside its listener (the baseline
                // may also count a kept-alive HTTP connection that has closed since).
                #expect(usage.sockets >= level.connections + 1)
            }
            // Every socket is closed once they close.
            let afterClose = try #require(report.afterClose)
            #expect(afterClose.sockets <= baseline.sockets && afterClose.residentBytes > 0)
            #expect(report.afterCloseRatio != nil)
            #expect(report.table.contains("KiB per connection") && report.table.contains("after close") && report.table.contains("+ 0.2 s"))
            #expect(try JSONDecoder().decode(ConnectionBenchReport.self, from: Data(Format.jsonLine(report).utf8)) == report)
        }
    }

    @Test func boundsAndDescriptorBudget() async throws {
        #expect(ConnectionBenchConfig.defaultLevels(count: 10_000) == [1000, 2000, 5000, 10_000])
        #expect(ConnectionBenchConfig.defaultLevels(count: 3000) == [1000, 2000, 3000])
        #expect(ConnectionBenchConfig.defaultLevels(count: 20) == [20])
        for levels in [[], [0], [5, 5], [3, 2], [ConnectionBenchConfig.maxCount + 1]] {
            #expect(throws: ChatError.self) { try ConnectionBenchConfig(server: "http://127.0.0.1:1", levels: levels).validate() }
        }
        var config = ConnectionBenchConfig(server: "http://127.0.0.1:1", levels: [20])
        config.probes = 0
        #expect(throws: ChatError.self) { try config.validate() }
        config.probes = 1
        config.settleSeconds = -1
        #expect(throws: ChatError.self) { try config.validate() }
        config.settleSeconds = nil
        #expect(config.serverArguments == "--max-connections-per-address 21 --max-connections 21")
        // More connections than descriptors: refused before any connection is made.
        config.probes = 1
        let error = await #expect(throws: ChatError.self) { try await ConnectionBenchRunner.run(config, descriptors: 50) }
        #expect(error?.description.contains("descriptors") == true)
    }
}
