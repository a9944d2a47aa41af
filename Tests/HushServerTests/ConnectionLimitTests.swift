import Foundation
import HushClient
import HushProtocol
@testable import HushServer
import HushTestSupport
import NIOCore
import Testing
import ThemisKit

/// Hostile TCP clients before any WebSocket: connections that never finish a request, malformed
/// requests, too many connections; and the security headers on error responses.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ConnectionLimitTests {
    static func limits(headTimeout: Duration = .seconds(1), total: Int = 1000, perAddress: Int = 1000) -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.requestHeadTimeout = headTimeout
        limits.maxConnections = total
        limits.maxConnectionsPerAddress = perAddress
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

    @Test func perAddressKeys() throws {
        func key(_ text: String) throws -> String { ConnectionAdmission.sourceKey(try SocketAddress(ipAddress: text, port: 1)) }
        #expect(try key("203.0.113.7") == "203.0.113.7")
        // The same IPv4 host on an IPv6 socket is the same source.
        #expect(try key("::ffff:203.0.113.7") == "203.0.113.7")
        // Addresses of one /64 are one source; another /64 is another.
        #expect(try key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:eeee:dddd:cccc"))
        #expect(try key("2001:db8:1:2::1") == "2001:db8:1:2::/64")
        #expect(try key("2001:db8:1:3::1") != key("2001:db8:1:2::1"))
        #expect(ConnectionAdmission.sourceKey(nil) == "")
    }

    /// One address cannot take every slot: beyond its cap it gets 429 at once, while another
    /// address is served; a freed slot is usable again.
    @Test func perAddressCap() async throws {
        try await withTestServer(connections: Self.limits(headTimeout: .seconds(60), perAddress: 8)) { server in
            // Nine from one address: whichever the server counts ninth (accepted connections are
            // spread over event loops, so not necessarily the last one opened) gets 429 at once.
            var sockets: [RawSocket] = []
            for _ in 0..<9 { sockets.append(try await RawSocket.connect(port: server.port, from: "127.0.0.2")) }
            #expect(try await rawGet("/healthz", port: server.port)?.status == 200)  // from 127.0.0.1
            let outcomes = await withTaskGroup(of: (index: Int, closed: Bool, status: Int?).self) { group in
                for (index, socket) in sockets.enumerated() {
                    group.addTask {
                        let (bytes, closed) = await socket.read(timeout: .seconds(10))
                        return (index, closed, RawResponse(bytes)?.status)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let refused = outcomes.filter { $0.status == 429 && $0.closed }
            #expect(refused.count == 1, "\(outcomes)")
            // The held connections were not disturbed.
            #expect(outcomes.filter { !$0.closed && $0.status == nil }.count == 8, "\(outcomes)")
            for outcome in refused { sockets[outcome.index].close() }
            var held = outcomes.filter { !$0.closed }.map { sockets[$0.index] }

            held.removeLast().close()
            // The server sees the close a moment later.
            try await waitUntil(timeout: .seconds(30), "a slot for 127.0.0.2") {
                try await rawGet("/healthz", port: server.port, from: "127.0.0.2")?.status == 200
            }
            for socket in held { socket.close() }
        }
    }

    /// A full server answers 503 and closes; it serves again once connections go.
    @Test func serverCap() async throws {
        try await withTestServer(connections: Self.limits(headTimeout: .seconds(60), total: 20)) { server in
            try await Self.expectHushClientServed(server)
            var sockets: [RawSocket] = []
            for _ in 0..<30 { sockets.append(try await RawSocket.connect(port: server.port)) }
            // A held socket stays open for the whole wait; a refused one is answered and closed.
            let outcomes = await withTaskGroup(of: (closed: Bool, status: Int?).self) { group in
                for socket in sockets {
                    group.addTask {
                        let (bytes, closed) = await socket.read(timeout: .seconds(10))
                        return (closed, RawResponse(bytes)?.status)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let refused = outcomes.filter(\.closed)
            #expect(refused.allSatisfy { $0.status == 503 }, "\(refused.map(\.status))")
            // The first client's connections may not all be gone yet (URLSession keeps one alive).
            #expect((10...12).contains(refused.count), "refused \(refused.count) of 30")
            for socket in sockets { socket.close() }
            try await waitUntil(timeout: .seconds(30), "a free slot") { try await rawGet("/healthz", port: server.port)?.status == 200 }
            try await Self.expectHushClientServed(server)
        }
    }

    /// Not-found and error responses carry the same security headers as pages; `/metrics` is not
    /// on the chat port.
    @Test func securityHeadersOnErrors() async throws {
        try await withTestServer { server in
            let requests = [
                ("GET /missing.js HTTP/1.1\r\nHost: hush\r\nConnection: close\r\n\r\n", 404),  // thrown by the file route
                ("GET /metrics HTTP/1.1\r\nHost: hush\r\nConnection: close\r\n\r\n", 404),
                ("POST /healthz HTTP/1.1\r\nHost: hush\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 404),  // no route
                ("GET /ws HTTP/1.1\r\nHost: hush\r\nConnection: close\r\n\r\n", 426),  // not an upgrade
            ]
            for (request, status) in requests {
                let socket = try await RawSocket.connect(port: server.port)
                try await socket.send(request)
                let response = try #require(RawResponse(await socket.read(timeout: .seconds(20)).bytes))
                socket.close()
                #expect(response.status == status, "\(request.prefix(30))")
                #expect(response.headers["content-security-policy"]?.contains("default-src 'self'") == true, "\(request.prefix(30))")
                #expect(response.headers["x-content-type-options"] == "nosniff", "\(request.prefix(30))")
                #expect(response.headers["referrer-policy"] == "no-referrer", "\(request.prefix(30))")
            }
        }
    }
}
