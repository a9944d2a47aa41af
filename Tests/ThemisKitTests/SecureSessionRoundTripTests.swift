import Crypto
import Testing
@testable import ThemisKit

/// Our client against our server, in memory.
@Suite(.timeLimit(.minutes(5))) struct SecureSessionRoundTripTests {
    @Test func manyHandshakes() throws {
        let parties = SessionParties()
        var sessionIDs: Set<[UInt8]> = []
        for round in 0..<50 {
            var (client, server, messages) = try parties.handshake()
            #expect(client.isEstablished && server.isEstablished)
            #expect(client.isClient && !server.isClient)
            #expect(client.peerID == parties.serverID && server.peerID == parties.clientID)
            #expect(client.peerPublicKey == parties.serverKey.publicKey)
            #expect(server.peerPublicKey == parties.clientKey.publicKey)
            // TSPM header + TSID("client"/"server") + compressed UEC2 + DER signature (at most
            // 72 bytes); TSPM + DER + MAC; TSPM + MAC.
            for hello in messages[0...1] {
                let signature = try HandshakeHello(HandshakeFrame(parsing: hello)).signature
                #expect(hello.count == 12 + 18 + 45 + signature.count && signature.count <= 72)
            }
            let finish = try HandshakeClientFinish(HandshakeFrame(parsing: messages[2]))
            #expect(messages[2].count == 12 + finish.signature.count + 32 && finish.signature.count <= 72)
            #expect(messages[3].count == 44)

            let fromClient = try client.wrap(Array("ping \(round)".utf8))
            #expect(try server.receive(fromClient) == .data(Array("ping \(round)".utf8)))
            let fromServer = try server.wrap(Array("pong \(round)".utf8))
            #expect(try client.receive(fromServer) == .data(Array("pong \(round)".utf8)))
            sessionIDs.insert(Array(fromClient.prefix(4)))
            #expect(fromServer.prefix(4) == fromClient.prefix(4))
        }
        #expect(sessionIDs.count >= 49)  // 4 random bytes each; a collision is possible, two are not
    }

    @Test func longInterleavedExchange() throws {
        var (client, server, _) = try SessionParties().handshake()
        var generator = SystemRandomNumberGenerator()
        var pendingToServer: [([UInt8], [UInt8])] = []
        var pendingToClient: [([UInt8], [UInt8])] = []
        var delivered = 0
        for index in 0..<500 {
            let size = [1, 2, 15, 16, 17, 1024, 4096, 65_536][index % 8]
            let text = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if Bool.random(using: &generator) {
                pendingToServer.append((try client.wrap(text), text))
            } else {
                pendingToClient.append((try server.wrap(text), text))
            }
            // Deliver in bursts of up to 8, in order, from either side.
            if pendingToServer.count == 8 || Bool.random(using: &generator) {
                for (wrapped, text) in pendingToServer { #expect(try server.receive(wrapped) == .data(text)) }
                delivered += pendingToServer.count
                pendingToServer.removeAll()
            }
            if pendingToClient.count == 8 || Bool.random(using: &generator) {
                for (wrapped, text) in pendingToClient { #expect(try client.receive(wrapped) == .data(text)) }
                delivered += pendingToClient.count
                pendingToClient.removeAll()
            }
        }
        for (wrapped, text) in pendingToServer { #expect(try server.receive(wrapped) == .data(text)) }
        for (wrapped, text) in pendingToClient { #expect(try client.receive(wrapped) == .data(text)) }
        delivered += pendingToServer.count + pendingToClient.count
        #expect(delivered == 500)
    }

    @Test func dataMessageLayout() throws {
        let parties = SessionParties()
        var (client, _, _) = try parties.handshake()
        let wrapped = try client.wrap(Array("hello".utf8))
        #expect(wrapped.count == 5 + DataChannel.overhead)
        let iv = Array(wrapped[4..<20])
        var again = client
        let second = try again.wrap(Array("hello".utf8))
        #expect(Array(second[4..<20]) != iv)  // fresh random IV per message
    }

    @Test func wrongOrUnknownKeysFail() throws {
        let parties = SessionParties()
        let stranger = ThemisPrivateKey()

        // The client expects another server key: message 2's signature fails.
        var client = parties.makeClient(serverKnownAs: stranger.publicKey)
        var server = parties.makeServer()
        let m2 = try server.receive(client.connectRequest()).replyBytes
        #expect(throws: ThemisError.invalidSignature) { try client.receive(m2) }
        #expect(client.peerID == nil && !client.isEstablished)

        // The server expects another client key: message 1's signature fails.
        client = parties.makeClient()
        server = parties.makeServer(clientKnownAs: stranger.publicKey)
        #expect(throws: ThemisError.invalidSignature) { try server.receive(client.connectRequest()) }
        #expect(server.peerID == nil)

        // Nobody knows these ids.
        let unknownClient = SessionParties(clientID: "mallory")
        var mallory = SecureSession(id: unknownClient.clientID, privateKey: unknownClient.clientKey,
                                    peerKeyLookup: { _ in parties.serverKey.publicKey })
        server = parties.makeServer()
        #expect(throws: ThemisError.unknownPeer) { try server.receive(mallory.connectRequest()) }

        client = SecureSession(id: parties.clientID, privateKey: parties.clientKey, peerKeyLookup: { _ in nil })
        server = parties.makeServer()
        let reply = try server.receive(client.connectRequest()).replyBytes
        #expect(throws: ThemisError.unknownPeer) { try client.receive(reply) }

    }

    @Test func callsOutOfOrder() throws {
        let parties = SessionParties()
        var client = parties.makeClient()
        var server = parties.makeServer()
        #expect(throws: ThemisError.invalidState) { try client.wrap([1]) }
        #expect(throws: ThemisError.invalidState) { try server.wrap([1]) }

        let m1 = try client.connectRequest()
        #expect(throws: ThemisError.invalidState) { try client.connectRequest() }
        #expect(throws: ThemisError.unknownPeer) { try client.receive(m1) }  // its own hello reflected back
        let m2 = try server.receive(m1).replyBytes
        #expect(throws: ThemisError.invalidState) { try server.connectRequest() }
        #expect(throws: ThemisError.unexpectedMessage) { try server.receive(m1) }  // duplicate hello
        #expect(throws: ThemisError.invalidState) { try server.wrap([1]) }
        let m3 = try client.receive(m2).replyBytes
        #expect(throws: ThemisError.unexpectedMessage) { try client.receive(m2) }  // duplicate hello
        #expect(throws: ThemisError.invalidState) { try client.wrap([1]) }
        guard case let .established(m4?) = try server.receive(m3) else { Issue.record("no message 4"); return }
        #expect(try client.receive(m4) == .established(reply: nil))

        // A fresh server must not take the finishing messages, nor data.
        var fresh = parties.makeServer()
        #expect(throws: ThemisError.unexpectedMessage) { try fresh.receive(m3) }
        #expect(throws: ThemisError.unexpectedMessage) { try fresh.receive(m4) }
        #expect(throws: ThemisError.unexpectedTag) { try fresh.receive(client.wrap([1, 2, 3])) }
        #expect(throws: ThemisError.emptyInput) { try fresh.receive([]) }

        // Established: handshake messages are just malformed data messages.
        #expect(throws: ThemisError.sessionMismatch) { try server.receive(m1) }
        #expect(throws: ThemisError.truncated) { try client.receive(m4) }
        #expect(throws: ThemisError.emptyInput) { try client.wrap([]) }
        #expect(throws: ThemisError.invalidState) { try client.connectRequest() }

        // Everything above left both ends usable.
        #expect(try server.receive(client.wrap([7])) == .data([7]))
        #expect(try client.receive(server.wrap([8])) == .data([8]))
    }

    /// Themis accepts an uncompressed (77-byte) ephemeral key; so do we, and its full container
    /// is what gets signed and fed to the KDF.
    @Test func uncompressedEphemeralKey() throws {
        let parties = SessionParties()
        let ephemeral = ThemisPrivateKey()
        let uncompressed = SoterContainer(
            tag: "UEC2", payload: Array(ephemeral.signingKey.publicKey.x963Representation)).serialized
        #expect(uncompressed.count == 77)
        let signature = try HandshakeTranscript.sign(uncompressed, with: parties.clientKey)
        let m1 = HandshakeHello.serialize(id: parties.clientID, ephemeral: uncompressed, signature: signature)

        var server = parties.makeServer()
        let m2 = try HandshakeHello(HandshakeFrame(parsing: server.receive(m1).replyBytes))
        let transcript = HandshakeTranscript(clientID: parties.clientID, serverID: parties.serverID,
                                             clientEphemeral: uncompressed, serverEphemeral: m2.ephemeral.containerBytes)
        try HandshakeTranscript.verify(m2.signature, over: transcript.serverHelloSigned, with: parties.serverKey.publicKey)

        // Finish by hand as the client and check the server's message 4.
        let keys = SessionKeySchedule(transcript: transcript, sharedSecret: try ephemeral.sharedSecret(with: m2.ephemeral))
        let m3 = HandshakeClientFinish.serialize(
            signature: try HandshakeTranscript.sign(transcript.clientFinishSigned, with: parties.clientKey),
            mac: keys.finishMAC(over: transcript.serverEphemeral))
        let m4 = HandshakeServerFinish.serialize(mac: keys.finishMAC(over: transcript.clientEphemeral))
        #expect(try server.receive(m3) == .established(reply: m4))
    }
}
