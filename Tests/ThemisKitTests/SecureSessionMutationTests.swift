import Testing
@testable import ThemisKit

/// Every byte of every message flipped, every truncation, a few extensions: each must throw
/// (never crash, never be silently accepted) and leave the receiving session unchanged, so the
/// genuine message still works afterwards.
@Suite(.timeLimit(.minutes(5))) struct SecureSessionMutationTests {
    /// Spoiled copies of a handshake message. Flips are tried twice: as they are (the outer
    /// CRC catches them) and with the outer CRC recomputed, so they reach the checks behind it
    /// (ids, inner containers, signatures, MACs). Truncations and extensions are likewise tried
    /// raw and re-framed as a valid `TSPM` container around the shortened or lengthened payload.
    static func handshakeMutations(of genuine: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        let payload = Array(genuine[12...])
        for index in genuine.indices {
            out.append(genuine.flipping(index))
            out.append(genuine.flipping(index, mask: 0x80).withFixedContainerChecksum())
        }
        for count in 0..<genuine.count { out.append(Array(genuine.prefix(count))) }
        for count in 0..<payload.count { out.append(HandshakeFrame.serialize(Array(payload.prefix(count)))) }
        for extra in [[0], [0x30], [UInt8](repeating: 0xAA, count: 40)] {
            out.append(genuine + extra)
            out.append(HandshakeFrame.serialize(payload + extra))
        }
        return out.filter { $0 != genuine }
    }

    /// Feeds every mutation to `receiver`, then the genuine message. Returns how many were tried.
    @discardableResult
    static func expectAllRejected(
        _ mutations: [[UInt8]], by receiver: inout SecureSession, then genuine: [UInt8],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (count: Int, event: SecureSession.Event) {
        let before = (receiver.isClient, receiver.isEstablished, receiver.peerID, receiver.peerPublicKey)
        for mutated in mutations {
            #expect(throws: ThemisError.self, "mutation \(mutated.hex)", sourceLocation: sourceLocation) {
                try receiver.receive(mutated)
            }
        }
        let after = (receiver.isClient, receiver.isEstablished, receiver.peerID, receiver.peerPublicKey)
        #expect(before == after, sourceLocation: sourceLocation)
        return (mutations.count, try receiver.receive(genuine))
    }

    @Test func handshakeMessages() throws {
        let parties = SessionParties()
        var client = parties.makeClient()
        var server = parties.makeServer()
        var tried = 0

        let m1 = try client.connectRequest()
        let (n1, e2) = try Self.expectAllRejected(Self.handshakeMutations(of: m1), by: &server, then: m1)
        let m2 = try e2.replyBytes

        let (n2, e3) = try Self.expectAllRejected(Self.handshakeMutations(of: m2), by: &client, then: m2)
        let m3 = try e3.replyBytes

        let (n3, e4) = try Self.expectAllRejected(Self.handshakeMutations(of: m3), by: &server, then: m3)
        guard case let .established(m4?) = e4 else { Issue.record("server did not finish"); return }

        let (n4, e5) = try Self.expectAllRejected(Self.handshakeMutations(of: m4), by: &client, then: m4)
        #expect(e5 == .established(reply: nil))
        tried = n1 + n2 + n3 + n4
        #expect(tried > 1500)

        #expect(try server.receive(client.wrap([1])) == .data([1]))
        #expect(try client.receive(server.wrap([2])) == .data([2]))
    }

    /// Specific errors for specific damage, with the CRC recomputed so the check behind it runs.
    @Test func handshakeDamageIsNamed() throws {
        let parties = SessionParties()
        var client = parties.makeClient()
        var server = parties.makeServer()
        let m1 = try client.connectRequest()
        let signatureStart = 12 + 18 + 45
        #expect(throws: ThemisError.invalidSignature) {
            try server.receive(m1.flipping(signatureStart + 10).withFixedContainerChecksum())
        }
        #expect(throws: ThemisError.badChecksum) { try server.receive(m1.flipping(40)) }
        #expect(throws: ThemisError.badChecksum) { try server.receive(m1.flipping(40).withFixedContainerChecksum()) }  // inner UEC2 CRC
        #expect(throws: ThemisError.unexpectedTag) { try server.receive(m1.flipping(0)) }
        #expect(throws: ThemisError.trailingBytes) { try server.receive(m1 + [0]) }
        #expect(throws: ThemisError.truncated) { try server.receive(Array(m1.dropLast())) }
        // Signature part missing entirely.
        #expect(throws: ThemisError.truncated) {
            try server.receive(HandshakeFrame.serialize(Array(m1[12..<signatureStart])))
        }
        // An inner container that claims to run past the payload.
        var overlong = m1
        overlong[12 + 7] = 0xFF  // TSID size low byte
        #expect(throws: ThemisError.truncated) { try server.receive(overlong.withFixedContainerChecksum()) }
        // An inner size below the header size.
        var undersized = m1
        undersized[12 + 7] = 4
        #expect(throws: ThemisError.lengthMismatch) { try server.receive(undersized.withFixedContainerChecksum()) }
        // An empty id.
        let emptyID = HandshakeFrame.serialize(
            SoterContainer(tag: "TSID", payload: []).serialized + Array(m1[(12 + 18)...]))
        #expect(throws: ThemisError.emptyInput) { try server.receive(emptyID) }

        let m2 = try server.receive(m1).replyBytes
        let m3 = try client.receive(m2).replyBytes
        #expect(throws: ThemisError.invalidMAC) {
            try server.receive(m3.flipping(m3.count - 1).withFixedContainerChecksum())
        }
        #expect(throws: ThemisError.invalidSignature) { try server.receive(m3.flipping(20).withFixedContainerChecksum()) }
        guard case let .established(m4?) = try server.receive(m3) else { Issue.record("no message 4"); return }
        #expect(throws: ThemisError.invalidMAC) { try client.receive(m4.flipping(20).withFixedContainerChecksum()) }
        #expect(try client.receive(m4) == .established(reply: nil))
    }

    @Test(arguments: [1, 100, 1024])
    func dataMessages(size: Int) throws {
        var (client, server, _) = try SessionParties().handshake()
        let text = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let genuine = try client.wrap(text)
        let fillerRange = 16..<20  // the 4 IV bytes that are not part of the GCM nonce

        var mutations: [[UInt8]] = []
        for index in genuine.indices where !fillerRange.contains(index) {
            mutations.append(genuine.flipping(index))
            mutations.append(genuine.flipping(index, mask: 0x80))
        }
        for count in 0..<genuine.count { mutations.append(Array(genuine.prefix(count))) }
        for extra in [[0], [0, 0], [UInt8](repeating: 0x55, count: 16)] {
            let extended = genuine + extra
            // One error for every frame that fails GCM: nothing unauthenticated is decrypted to
            // say why.
            #expect(throws: ThemisError.authenticationFailed) { try server.receive(extended) }
        }
        try Self.expectAllRejected(mutations, by: &server, then: genuine)
        // The genuine message has been delivered once (by `expectAllRejected`): now it is a replay.
        #expect(throws: ThemisError.replayedMessage) { try server.receive(genuine) }

        // The filler bytes are not authenticated, in Themis either: a copy that differs only
        // there decrypts to the same message — and counts as that message.
        let next = try client.wrap(text)
        for index in fillerRange {
            var receiver = server
            #expect(try receiver.receive(next.flipping(index, mask: 0xFF)) == .data(text))
            #expect(throws: ThemisError.replayedMessage) { try receiver.receive(next) }
        }
        #expect(try server.receive(next) == .data(text))
    }
}
