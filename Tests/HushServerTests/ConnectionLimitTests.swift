import Foundation
import HushClient
import HushProtocol
import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// Hostile TCP clients before any WebSocket: connections that never finish a request, malformed
/// requests.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ConnectionLimitTests {
    static func limits(headTimeout: Duration = .seconds(1)) -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.requestHeadTimeout = headTimeout
        return limits
    }

    /// A Hush client completes the handshake and gets its `hello` answered.
    static func expectHushClientServed(_ server: TestServer) async throws {
        let connection = try await HushConnection.openRegistered(server: try await server.info(), key: ThemisPrivateKey())
        connection.close()
        try await connection.closed(within: .seconds(20))
    }

    /// Sends a request head a byte every 100 ms for 23 s; true once the server has closed.
    static func drip(port: Int) async throws -> Bool {
        let socket = try await RawSocket.connect(port: port)
        defer { socket.close() }
        for byte in Array("GET /healthz HTTP/1.1\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "x"), count: 200) {
            do { try await socket.send([byte]) } catch { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Slowloris: idle connections, half-sent heads and a head dripped a byte at a time are all
    /// closed by the server, while HTTP and Hush clients are served.
    @Test func unfinishedRequestsAreClosed() async throws {
        try await withTestServer(connections: Self.limits()) { server in
            var sockets: [RawSocket] = []
            for index in 0..<50 {
                let socket = try await RawSocket.connect(port: server.port)
                switch index % 3 {
                case 0: break  // idle
                case 1: try await socket.send("GET /healthz HTTP/1.1\r\nHost: hush\r\n")  // no blank line
                default: try await socket.send("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Ve")
                }
                sockets.append(socket)
            }
            async let dripClosed = Self.drip(port: server.port)

            // Served meanwhile.
            #expect(try await rawGet("/healthz", port: server.port)?.status == 200)
            try await Self.expectHushClientServed(server)

            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for socket in sockets { group.addTask { await socket.read(timeout: .seconds(20)).closed } }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 50, "connections left open: \(outcomes.filter { !$0 }.count)")
            #expect(try await dripClosed, "a dripped request head kept its connection open")
            for socket in sockets { socket.close() }
        }
    }

    @Test func malformedRequestsGet400AndAreClosed() async throws {
        try await withTestServer(connections: Self.limits(headTimeout: .seconds(30))) { server in
            let garbage = [
                "NONSENSE\r\n\r\n",
                "GET / HTTP/9.9\r\nHost: hush\r\n\r\n",
                "GET /ws HTTP/1.1\r\nHost: hush\r\nBad Header Line\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: hush\r\nX-Big: " + String(repeating: "a", count: 100 * 1024) + "\r\n\r\n",
            ]
            for request in garbage {
                let socket = try await RawSocket.connect(port: server.port)
                try? await socket.send(request)  // the server may answer and close before the end of a big one
                let (bytes, closed) = await socket.read(timeout: .seconds(20))
                let response = RawResponse(bytes)
                #expect(response?.status == 400, "\(request.prefix(40)): \(String(decoding: bytes.prefix(200), as: UTF8.self))")
                #expect(response?.headers["x-content-type-options"] == "nosniff")
                #expect(closed)
                socket.close()
            }
        }
    }
}
