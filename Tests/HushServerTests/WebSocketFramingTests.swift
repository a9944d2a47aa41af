import Foundation
import HushProtocol
import HushServer
import HushTestSupport
import Testing
import ThemisKit

/// The server's WebSocket layer (`SessionHandler`) spoken to byte by byte: fragmented
/// messages, pings, frames a client must not send, and a peer that leaves without a close.
@Suite(.timeLimit(.minutes(2))) struct WebSocketFramingTests {
    /// One WebSocket frame as it travels.
    struct Frame: Equatable {
        var fin = true
        var opcode: UInt8
        var payload: [UInt8]

        static let continuation: UInt8 = 0x0, binary: UInt8 = 0x2, close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA

        /// As a client sends it: masked unless told otherwise (RFC 6455 §5.2).
        func encoded(masked: Bool = true) -> [UInt8] {
            var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
            let maskBit: UInt8 = masked ? 0x80 : 0
            switch payload.count {
            case ..<126: bytes.append(maskBit | UInt8(payload.count))
            case ..<65536: bytes += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
            default: bytes += [maskBit | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
            }
            guard masked else { return bytes + payload }
            let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
            return bytes + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        }

        /// The server's frames at the start of `bytes` (unmasked), and how many bytes they took.
        static func decode(_ bytes: [UInt8]) -> (frames: [Frame], used: Int) {
            var frames: [Frame] = []
            var offset = 0
            while bytes.count - offset >= 2 {
                var length = Int(bytes[offset + 1] & 0x7F)
                var header = 2
                if length == 126 {
                    guard bytes.count - offset >= 4 else { break }
                    length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                    header = 4
                } else if length == 127 {
                    guard bytes.count - offset >= 10 else { break }
                    length = (2..<10).reduce(0) { $0 << 8 | Int(bytes[offset + $1]) }
                    header = 10
                }
                guard bytes.count - offset >= header + length else { break }
                frames.append(Frame(fin: bytes[offset] & 0x80 != 0, opcode: bytes[offset] & 0x0F,
                                    payload: Array(bytes[(offset + header)..<(offset + header + length)])))
                offset += header + length
            }
            return (frames, offset)
        }
    }

    /// A raw WebSocket at `/ws`, with the frames read so far.
    final class Peer: @unchecked Sendable {
        let socket: RawSocket
        private var unread: [UInt8] = []

        init(port: Int) async throws {
            socket = try await RawSocket.connect(port: port)
            try await socket.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            let head = await socket.read(timeout: .seconds(20), until: hasResponseHead).bytes
            #expect(RawResponse(head)?.status == 101)
            let end = try #require(String(decoding: head, as: UTF8.self).range(of: "\r\n\r\n"))
            unread = Array(String(decoding: head, as: UTF8.self)[end.upperBound...].utf8)
        }

        func send(_ frame: Frame, masked: Bool = true) async throws { try await socket.send(frame.encoded(masked: masked)) }

        /// The next frame from the server, or nil when it closed or said nothing in time.
        func next() async -> Frame? {
            let read = await socket.read(timeout: .seconds(20)) { [unread] more in !Frame.decode(unread + more).frames.isEmpty }
            unread += read.bytes
            let decoded = Frame.decode(unread)
            guard let first = decoded.frames.first else { return nil }
            unread.removeFirst(Frame.encodedCount(first))
            return first
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
        try await peer.send(Frame(opcode: Frame.binary, payload: try session.connectRequest()))
        while !session.isEstablished {
            let frame = try #require(await peer.next())
            switch try session.receive(frame.payload) {
            case .reply(let bytes): try await peer.send(Frame(opcode: Frame.binary, payload: bytes))
            case .established(let reply): if let reply { try await peer.send(Frame(opcode: Frame.binary, payload: reply)) }
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
            try await peer.send(Frame(fin: false, opcode: Frame.binary, payload: thirds[0]))
            try await peer.send(Frame(fin: false, opcode: Frame.continuation, payload: thirds[1]))
            // A ping may come between the frames of a message.
            try await peer.send(Frame(opcode: Frame.ping, payload: Array("between".utf8)))
            try await peer.send(Frame(fin: true, opcode: Frame.continuation, payload: thirds[2]))
            #expect(await peer.next() == Frame(opcode: Frame.pong, payload: Array("between".utf8)))
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
            try await peer.send(Frame(fin: false, opcode: Frame.binary, payload: [UInt8](repeating: 7, count: 1000)))
            try await peer.send(Frame(fin: false, opcode: Frame.continuation, payload: [UInt8](repeating: 7, count: 3000)))
            try await peer.send(Frame(fin: true, opcode: Frame.continuation, payload: [UInt8](repeating: 7, count: 3000)))
            let close = try #require(await peer.next())
            #expect(close.opcode == Frame.close && Array(close.payload.prefix(2)) == [0x03, 0xF1])  // 1009: too big
        }
    }

    @Test func framesAClientMustNotSendCloseTheConnection() async throws {
        try await withTestServer { server in
            let cases: [(String, Frame, Bool, [UInt8])] = [
                ("unmasked", Frame(opcode: Frame.binary, payload: [1, 2, 3]), false, [0x03, 0xEA]),  // 1002
                ("text", Frame(opcode: 0x1, payload: Array("hi".utf8)), true, [0x03, 0xEB]),  // 1003
                ("stray continuation", Frame(opcode: Frame.continuation, payload: [1]), true, [0x03, 0xEA]),
            ]
            for (name, frame, masked, code) in cases {
                let (peer, _) = try await Self.established(on: server)
                try await peer.send(frame, masked: masked)
                let close = try #require(await peer.next(), "\(name)")
                #expect(close.opcode == Frame.close && Array(close.payload.prefix(2)) == code, "\(name)")
                try await peer.send(Frame(opcode: Frame.close, payload: close.payload.prefix(2).map { $0 }))
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
            try await peer.send(Frame(opcode: Frame.close, payload: [0x03, 0xE8]))
            #expect(await peer.next() == Frame(opcode: Frame.close, payload: [0x03, 0xE8]))
            #expect(await peer.closedByServer())
        }
    }
}

extension WebSocketFramingTests.Frame {
    /// The length of this frame as the server sends it (unmasked).
    static func encodedCount(_ frame: Self) -> Int {
        frame.encoded(masked: false).count
    }
}
