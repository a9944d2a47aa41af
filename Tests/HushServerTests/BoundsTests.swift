import Foundation
import HushTestSupport
import HummingbirdWSClient
import HushProtocol
import HushServer
import Logging
import Testing

/// Bounds that need no room: slow readers and silent peers.
@Suite(.timeLimit(.minutes(5))) struct BoundsTests {
    @Test func slowReaderIsDisconnectedNotBuffered() async {
        let hub = Hub(capacity: 4)
        let outbox = hub.register(key: "k")
        for index in 0..<10 { hub.push(WireMessage(type: "message\(index)"), to: ["k"]) }
        #expect(outbox.didOverflow)
        #expect(outbox.take().count == 4)
    }

    @Test func silentPeerIsClosedAfterHandshakeTimeout() async throws {
        var limits = Limits()
        limits.handshakeTimeout = .milliseconds(300)
        try await withTestServer(limits: limits) { server in
            let started = ContinuousClock.now
            let url = server.url.replacingOccurrences(of: "http://", with: "ws://") + "/ws"
            try await WebSocketClient.connect(url: url, logger: Logger(label: "silent")) { inbound, _, _ in
                for try await _ in inbound {}
            }
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }
}
