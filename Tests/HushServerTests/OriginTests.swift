import Foundation
import HushProtocol
@testable import HushServer
import HushTestSupport
import Testing

/// Which pages may use the relay from a browser (`OriginGate`, docs/PROTOCOL.md §2): its own,
/// the `--allow-origin` list, and clients that are not web pages; every other page is refused
/// before the WebSocket upgrade and gets no CORS header on /.well-known/hush.
@Suite(.timeLimit(.minutes(5))) struct OriginTests {
    static let copy = "https://chat.example"

    @Test func theRule() throws {
        let gate = OriginGate(allowed: [try WebOrigin(Self.copy), try WebOrigin("http://127.0.0.1:9000")])
        let cases: [(origin: String?, host: String?, verdict: OriginGate.Verdict)] = [
            (nil, "relay.example", .sameOriginOrNone),                   // not a browser
            ("ws://relay.example", "relay.example:8080", .sameOriginOrNone),  // the Swift client's Origin
            ("https://relay.example", "relay.example", .sameOriginOrNone),   // the relay's own page
            ("http://127.0.0.1:8080", "127.0.0.1:8080", .sameOriginOrNone),
            ("https://relay.example", "RELAY.example", .sameOriginOrNone),   // Host is case-insensitive
            (Self.copy, "relay.example", .allowed(Self.copy)),
            ("http://127.0.0.1:9000", "127.0.0.1:8080", .allowed("http://127.0.0.1:9000")),
            ("https://evil.example", "relay.example", .refused),
            ("http://chat.example", "relay.example", .refused),           // another scheme is another origin
            ("https://chat.example:8443", "relay.example", .refused),     // and another port
            ("https://CHAT.example", "relay.example", .refused),          // not as a browser writes it
            ("https://chat.example/", "relay.example", .refused),
            ("null", "relay.example", .refused),                          // file:, data:, sandboxed pages
            ("https://relay.example", nil, .refused),
            ("https://relay.example", "relay.example:8080", .refused),
        ]
        for entry in cases {
            #expect(gate.verdict(origin: entry.origin, host: entry.host) == entry.verdict, "\(entry.origin ?? "none") on \(entry.host ?? "none")")
        }
    }

    static func upgrade(port: Int, origin: String?) async throws -> RawResponse {
        let socket = try await RawSocket.connect(port: port)
        defer { socket.close() }
        try await socket.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + (origin.map { "Origin: \($0)\r\n" } ?? "") + "\r\n")
        return try #require(RawResponse(await socket.read(timeout: .seconds(20), until: isComplete).bytes))
    }

    /// A 101 head, or a head and as much body as it announces.
    static func isComplete(_ bytes: [UInt8]) -> Bool {
        guard let response = RawResponse(bytes) else { return false }
        return response.status == 101 || response.body.utf8.count >= Int(response.headers["content-length"] ?? "0") ?? 0
    }

    @Test func refusedPagesAreNotUpgraded() async throws {
        try await withTestServer(allowedOrigins: [try WebOrigin(Self.copy)]) { server in
            for origin in [nil, "http://127.0.0.1:\(server.port)", Self.copy] {
                #expect(try await Self.upgrade(port: server.port, origin: origin).status == 101, "\(origin ?? "none")")
            }
            for origin in ["https://evil.example", "null", "http://localhost:\(server.port)"] {
                let response = try await Self.upgrade(port: server.port, origin: origin)
                #expect(response.status == 403, "\(origin)")
                #expect(response.headers["content-security-policy"]?.contains("default-src 'self'") == true)
            }
            // Refusals change nothing: the relay still takes a client.
            _ = try await server.info()
        }
    }

    @Test func theKeyIsReadableOnlyFromAllowedPages() async throws {
        try await withTestServer(allowedOrigins: [try WebOrigin(Self.copy)]) { server in
            func wellKnown(origin: String?) async throws -> RawResponse {
                let socket = try await RawSocket.connect(port: server.port)
                defer { socket.close() }
                try await socket.send("GET /.well-known/hush HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nConnection: close\r\n"
                    + (origin.map { "Origin: \($0)\r\n" } ?? "") + "\r\n")
                return try #require(RawResponse(await socket.read(timeout: .seconds(20)).bytes))
            }
            let allowed = try await wellKnown(origin: Self.copy)
            #expect(allowed.status == 200 && allowed.body.contains("publicKey"))
            #expect(allowed.headers["access-control-allow-origin"] == Self.copy)
            #expect(allowed.headers["vary"] == "Origin")
            for origin in [nil, "https://evil.example", "http://127.0.0.1:\(server.port)"] {
                let response = try await wellKnown(origin: origin)
                #expect(response.status == 200, "\(origin ?? "none")")
                #expect(response.headers["access-control-allow-origin"] == nil, "\(origin ?? "none")")
                #expect(response.headers["vary"] == "Origin")
            }
        }
    }
}
