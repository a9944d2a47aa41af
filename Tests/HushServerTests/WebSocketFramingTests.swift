import Foundation
import HushProtocol
import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// The server's WebSocket layer (`SessionHandler`) spoken to byte by byte: fragmented
/// messages, pings, frames a client must not send, and a peer that leaves without a close.
@Suite(.timeLimit(.minutes(2))) struct WebSocketFramingTests {
    /// One frame as the server sent it.
    struct Frame: Equatable {
        var opcode: UInt8
        var payload: [UInt8]
    }

    /// A raw WebSocket at `/ws`, with the frames read so far.
    final class Peer: @unchecked Sendable {
        let socket: RawSocket
        private var unread: [UInt8] = []

        init(port: Int) async throws {
            socket = try await RawSocket.connect(port: port)
            try await socket.send(RawWebSocket.upgradeRequest)
            let head = await socket.read(timeout: .seconds(20), until: hasResponseHead).bytes
            #expect(RawResponse(head)?.status == 101)
            let end = try #require(String(decoding: head, as: UTF8.self).range(of: "\r\n\r\n"))
            unread = Array(String(decoding: head, as: UTF8.self)[end.upperBound...].utf8)
        }

        func send(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) async throws {
            try await socket.send(RawWebSocket.frame(opcode: opcode, payload, fin: fin, masked: masked))
        }

        /// The next frame from the server, or nil when it closed or said nothing in time.
        func next() async -> Frame? {
            let read = await socket.read(timeout: .seconds(20)) { [unread] more in RawWebSocket.parse(unread + more) != nil }
            unread += read.bytes
            guard let (opcode, payload, length) = RawWebSocket.parse(unread) else { return nil }
            unread.removeFirst(length)
            return Frame(opcode: opcode, payload: payload)
        }

        /// Reads until the server closes the TCP connection; true if it did in time.
        func closedByServer() async -> Bool { await socket.read(timeout: .seconds(20)).closed }
    }

    /// A client with an established Secure Session to `server`, its handshake sent frame by frame.
    static func established(on server: TestServer) async throws -> (Peer, SecureSession) {
        let identity = server.server.identity
        let key = ThemisPrivateKey()
        var session = SecureSession(id: KeyID.sessionID(key.publicKey), privateKey: key,
                                    peerKeyLookup: { $0 == Array(identity.serverID.utf8) ? identity.publicKey : nil })
        let peer = try await Peer(port: server.port)
        try await peer.send(RawWebSocket.binary, try session.connectRequest())
        while !session.isEstablished {
            let frame = try #require(await peer.next())
            switch try session.receive(frame.payload) {
            case .reply(let bytes): try await peer.send(RawWebSocket.binary, bytes)
            case .established(let reply): if let reply { try await peer.send(RawWebSocket.binary, reply) }
            case .data: Issue.record("data during the handshake")
            }
        }
        return (peer, session)
    }

    @Test func aRequestSentInSeveralFramesIsOneRequest() async throws {
        try await withTestServer { server in
            var (peer, session) = try await Self.established(on: server)
            let request = try session.wrap(WireMessage(type: "hello", id: "split").encoded())
            let thirds = stride(from: 0, to: request.count, by: request.count / 3 + 1).map { Array(request[$0..<min($0 + request.count / 3 + 1, request.count)]) }
            #expect(thirds.count == 3)
            try await peer.send(RawWebSocket.binary, thirds[0], fin: false)
            try await peer.send(RawWebSocket.continuation, thirds[1], fin: false)
            // A ping may come between the frames of a message.
            try await peer.send(RawWebSocket.ping, Array("between".utf8))
            try await peer.send(RawWebSocket.continuation, thirds[2], fin: true)
            #expect(await peer.next() == Frame(opcode: RawWebSocket.pong, payload: Array("between".utf8)))
            let reply = try #require(await peer.next())
            guard case .data(let plaintext) = try session.receive(reply.payload) else {
                Issue.record("not a data message")
                return
            }
            let message = try WireMessage.decode(plaintext)
            #expect(message.type == "hello" && message.id == "split")
        }
    }

    @Test func aMessageOverTheLimitIsRefusedWhateverItsFrames() async throws {
        var limits = Limits.standard
        limits.maxFrameBytes = 4096
        try await withTestServer(limits: limits) { server in
            let (peer, _) = try await Self.established(on: server)
            // Every frame is within the limit; the message they make is not.
            try await peer.send(RawWebSocket.binary, [UInt8](repeating: 7, count: 1000), fin: false)
            try await peer.send(RawWebSocket.continuation, [UInt8](repeating: 7, count: 3000), fin: false)
            try await peer.send(RawWebSocket.continuation, [UInt8](repeating: 7, count: 3000), fin: true)
            let close = try #require(await peer.next())
            #expect(close.opcode == RawWebSocket.close && Array(close.payload.prefix(2)) == [0x03, 0xF1])  // 1009: too big
        }
    }

    @Test func framesAClientMustNotSendCloseTheConnection() async throws {
        try await withTestServer { server in
            let cases: [(String, Frame, Bool, [UInt8])] = [
                ("unmasked", Frame(opcode: RawWebSocket.binary, payload: [1, 2, 3]), false, [0x03, 0xEA]),  // 1002
                ("text", Frame(opcode: 0x1, payload: Array("hi".utf8)), true, [0x03, 0xEB]),  // 1003
                ("stray continuation", Frame(opcode: RawWebSocket.continuation, payload: [1]), true, [0x03, 0xEA]),
            ]
            for (name, frame, masked, code) in cases {
                let (peer, _) = try await Self.established(on: server)
                try await peer.send(frame.opcode, frame.payload, masked: masked)
                let close = try #require(await peer.next(), "\(name)")
                #expect(close.opcode == RawWebSocket.close && Array(close.payload.prefix(2)) == code, "\(name)")
                try await peer.send(RawWebSocket.close, close.payload.prefix(2).map { $0 })
                #expect(await peer.closedByServer(), "\(name)")
            }
            try await waitUntil("every refused connection is offline") { server.server.hub.connectionCount == 0 }
        }
    }

    /// A client that closes its socket without a close frame goes offline; before, the
    /// half-closed connection stayed on the hub (Hummingbird's channels allow half-closure).
    @Test func aPeerThatLeavesWithoutACloseFrameGoesOffline() async throws {
        try await withTestServer { server in
            let (peer, _) = try await Self.established(on: server)
            try await waitUntil("the connection is online") { server.server.hub.connectionCount == 1 }
            peer.socket.close()
            try await waitUntil("the connection is offline") { server.server.hub.connectionCount == 0 }
        }
    }

    @Test func aCloseIsAnsweredWithItsCode() async throws {
        try await withTestServer { server in
            let (peer, _) = try await Self.established(on: server)
            try await peer.send(RawWebSocket.close, [0x03, 0xE8])
            #expect(await peer.next() == Frame(opcode: RawWebSocket.close, payload: [0x03, 0xE8]))
            #expect(await peer.closedByServer())
        }
    }
}

