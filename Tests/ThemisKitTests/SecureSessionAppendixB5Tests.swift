import Crypto
import Testing
@testable import ThemisKit

/// Wire-format doc, Appendix B.5: our client against a real Themis 0.15 server. We play the
/// client with its recorded ephemeral key, so everything but the (randomised) ECDSA signatures
/// must come out exactly as recorded.
@Suite(.timeLimit(.minutes(5))) struct SecureSessionAppendixB5Tests {
    static let clientID = Array("reimpl client id".utf8)
    static let serverID = Array("pythemis server".utf8)
    static let clientStatic = try! ThemisPrivateKey(containerBytes: [UInt8](hex: "524543320000002d8763ab22005a973b2001c71809b33c0eae8ecad6d05a3746d064deb43a29c6d30986ef0097")!)
    static let clientStaticPublic = try! ThemisPublicKey(containerBytes: [UInt8](hex: "554543320000002d8b5298ef036db0f2ef46349ebe3864eebdeb22f00a21dc0a37e15c3f60baf485e669dd0114")!)
    static let clientEphemeral = try! ThemisPrivateKey(containerBytes: [UInt8](hex: "524543320000002dd6aa1df60040b0cf5ff2497f0f3258c0395acefea17aab2d5457af82a46c297fc929418518")!)
    static let serverStaticPublic = try! ThemisPublicKey(containerBytes: [UInt8](hex: "554543320000002dab14a92d02b3633bacff4460873b251ca9861116c8ae180b0d9dc0665b8c270cd2acb9d417")!)
    static let message1 = [UInt8](hex: "5453504d0000009d8b484337545349440000001cc0640b3b7265696d706c20636c69656e74206964554543320000002d5113f7e803264c4adfdf8e9d8f56c9e2d00d45ea52c28b7530e1abb8a4c760299f5cf5e0923046022100857d2afd2f43ffb32b3fe88fa7ca242502b52c4081a309e1e579711b9dcaf040022100cca69b08dfe0aab09492697e52154897c73855a2effd51a3faacbde37eb1a98f")!
    static let message2 = [UInt8](hex: "5453504d0000009a9c3f7eb9545349440000001b8152445b70797468656d697320736572766572554543320000002d85ca48bd02c783f39907fdf67ffd071948a2a9aa0015954c961b2c7e34f141b33dbd826f5b304402203d0d2296ed3190f9812dc56f980fd234c1f904b9742c9f4966144c948631a34c022038220d5b68b73a5f55cd6e58df778fee2863d5962d08cdf5308c15eb9f7cd516")!
    static let message3 = [UInt8](hex: "5453504d000000737ff3883f3045022100e8db2fcb121275e7ebd1f9568803bbfa6d2a40a8d1f9098f6377182ce61c13f302204c196624c62a27fd803bbd3b68f8b5682b6e021819322ae8df20b8c29ed7e9ab2850534ec9789c90ad7bad2418f3ae06aa29b18e262e1c874dbe0d111ea5da9d")!
    static let message4 = [UInt8](hex: "5453504d0000002c9d2c1279c6dd0cf1e794452f51c7cb412850ed81d2e8f8c2dd5d78f32536027e7a35e2d7")!
    static let clock: UInt64 = 1_795_920_314
    static let serverData = [
        ([UInt8](hex: "deb0908575aeeb307f44137fad8b9eb5f4655da2d5654fc6bf64a7a87a15226844275e6adbeff902ee19757e20006f266fb2f52c91900babec0b4b2b1bbd89b84e")!, "themis says 0"),
        ([UInt8](hex: "deb09085996d1fe02bfc188bf80af7e97ad7ef0465b517c4545bc137f81f17dfb91948d60524778a15f8f18c3f8e904ac91d31ec8b78bc0b49fc2fd3ecf899da18")!, "themis says 1"),
    ]
    static let clientData = [
        ([UInt8](hex: "deb0908500000000000000000000000000000000fc4487d8bbf6976495533d7d2430e049913558881177c93aea0542512d44ff79402ba02bdaacb6b0fbb79d4e8d")!, "reimpl says 0", [UInt8](repeating: 0, count: 16)),
        ([UInt8](hex: "deb0908501010101010101010101010101010101176fe7f4dad3b7815a0de77f80d8b8be87d73b0d360b331ccffd2a761e0f10144f5d3adf78f08d8978e951af05")!, "reimpl says 1", [UInt8](repeating: 1, count: 16)),
    ]

    static func makeClient() -> SecureSession {
        SecureSession(id: clientID, privateKey: clientStatic,
                      peerKeyLookup: { $0 == serverID ? serverStaticPublic : nil },
                      clock: { clock }, ephemeralKey: clientEphemeral)
    }

    @Test func keyScheduleMatches() throws {
        let transcript = HandshakeTranscript(
            clientID: Self.clientID, serverID: Self.serverID,
            clientEphemeral: Self.clientEphemeral.publicKey.containerBytes,
            serverEphemeral: try HandshakeHello(HandshakeFrame(parsing: Self.message2)).ephemeral.containerBytes)
        let serverEphemeral = try HandshakeHello(HandshakeFrame(parsing: Self.message2)).ephemeral
        let keys = SessionKeySchedule(transcript: transcript,
                                      sharedSecret: try Self.clientEphemeral.sharedSecret(with: serverEphemeral))
        #expect(keys.sessionIDBytes.hex == "8590b0de")
        #expect(SymmetricKeyBytes.of(keys.masterKey).hex == "9d14e9fb5767ccef2b0b66c1c890144960d0373f5c183756263941c8bae79520")
        let channel = keys.dataChannel(isClient: true)
        #expect(channel.sessionIDOnWire.hex == "deb09085")
        #expect(SymmetricKeyBytes.of(channel.sendKey).hex == "549fd07697fb008d6959282b7c869a989fcd02ece0962f8ae6e79632e3e87efa")
        #expect(SymmetricKeyBytes.of(channel.receiveKey).hex == "1c46bcdbc7fe7a05b3f3f981e83b1d13aa61e75c6cfd0dabe9ebe76a6a9df203")
        #expect(channel.sendSequence == 1_535_090_560)
        #expect(channel.receiveWindow.last == 3_319_170_881)
        // The recorded handshake MACs are deterministic given MK.
        #expect(keys.finishMAC(over: transcript.serverEphemeral) == Array(Self.message3.suffix(32)))
        #expect(keys.finishMAC(over: transcript.clientEphemeral) == Array(Self.message4.suffix(32)))
        VectorCounter.shared.add("appendix B.5", 1)
    }

    @Test func playTheClient() throws {
        var client = Self.makeClient()

        // Message 1: same id and ephemeral container as recorded; a fresh signature that verifies.
        let m1 = try client.connectRequest()
        #expect(client.isClient && !client.isEstablished && client.peerID == nil)
        let ours1 = try HandshakeHello(HandshakeFrame(parsing: m1))
        let recorded1 = try HandshakeHello(HandshakeFrame(parsing: Self.message1))
        #expect(ours1.id == recorded1.id)
        #expect(ours1.ephemeral.containerBytes == recorded1.ephemeral.containerBytes)
        try HandshakeTranscript.verify(ours1.signature, over: ours1.ephemeral.containerBytes, with: Self.clientStaticPublic)

        // Message 3: a signature that verifies and the recorded MAC.
        let m3 = try client.receive(Self.message2).replyBytes
        #expect(client.peerID == Self.serverID)
        #expect(client.peerPublicKey == Self.serverStaticPublic)
        let ours3 = try HandshakeClientFinish(HandshakeFrame(parsing: m3))
        let recorded3 = try HandshakeClientFinish(HandshakeFrame(parsing: Self.message3))
        #expect(ours3.mac == recorded3.mac)
        let transcript = HandshakeTranscript(
            clientID: Self.clientID, serverID: Self.serverID, clientEphemeral: ours1.ephemeral.containerBytes,
            serverEphemeral: try HandshakeHello(HandshakeFrame(parsing: Self.message2)).ephemeral.containerBytes)
        try HandshakeTranscript.verify(ours3.signature, over: transcript.clientFinishSigned, with: Self.clientStaticPublic)
        try HandshakeTranscript.verify(recorded3.signature, over: transcript.clientFinishSigned, with: Self.clientStaticPublic)

        #expect(try client.receive(Self.message4) == .established(reply: nil))
        #expect(client.isEstablished)

        for (wrapped, text) in Self.serverData {
            #expect(try client.receive(wrapped) == .data(Array(text.utf8)))
        }
        for (wrapped, text, iv) in Self.clientData {
            #expect(try client.wrap(Array(text.utf8), iv: iv) == wrapped)
        }
        VectorCounter.shared.add("appendix B.5", 8)
    }

    /// Themis' client accepts a message 4 carrying any prefix of the MAC; we require all of it.
    @Test func truncatedFinishMACIsRejected() throws {
        var client = Self.makeClient()
        _ = try client.connectRequest()
        _ = try client.receive(Self.message2)
        for count in [1, 16, 31] {
            let short = HandshakeFrame.serialize(Array(Self.message4[12..<(12 + count)]))
            #expect(throws: ThemisError.truncated) { try client.receive(short) }
        }
        #expect(throws: ThemisError.trailingBytes) {
            try client.receive(HandshakeFrame.serialize(Array(Self.message4[12...]) + [0]))
        }
        #expect(try client.receive(Self.message4) == .established(reply: nil))
    }
}
