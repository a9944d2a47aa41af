import Crypto
import Testing
@testable import ThemisKit

/// Sequence and time windows of data messages.
@Suite(.timeLimit(.minutes(5))) struct SecureSessionDataMessageTests {
    /// A saved state with chosen sequence numbers, to start a session anywhere in the uint32 range.
    static func restoredPair(clientSequence: UInt32, serverSequence: UInt32, clock: ManualClock) throws -> (SecureSession, SecureSession) {
        let masterKey = [UInt8](repeating: 0x42, count: 32)
        func blob(isClient: Bool) -> [UInt8] {
            var payload: [UInt8] = [0xDE, 0xB0, 0x90, 0x85]
            payload.appendBE32(isClient ? 1 : 0)
            payload += masterKey
            payload.appendBE32(isClient ? clientSequence : serverSequence)
            payload.appendBE32(isClient ? serverSequence : clientSequence)
            return SoterContainer(tag: "TSSC", payload: payload).serialized
        }
        let key = ThemisPrivateKey()
        return (try SecureSession(restoring: blob(isClient: true), id: [1], privateKey: key, peerKeyLookup: { _ in nil }, clock: clock.closure),
                try SecureSession(restoring: blob(isClient: false), id: [2], privateKey: key, peerKeyLookup: { _ in nil }, clock: clock.closure))
    }

    /// The 12 bytes of a data frame that are the GCM nonce.
    static func nonce(_ frame: [UInt8]) -> [UInt8] { Array(frame[4..<16]) }

    @Test func copiesOfASessionNeverSendUnderOneNonce() throws {
        var (client, server, _) = try SessionParties().handshake()
        var copy = client
        var spare = client
        var nonces: Set<[UInt8]> = []
        for round in 0..<50 {
            nonces.insert(Self.nonce(try client.wrap([UInt8(round)])))
            nonces.insert(Self.nonce(try copy.wrap([UInt8(round)])))
        }
        #expect(nonces.count == 100)
        // A copy still speaks the session.
        #expect(try server.receive(try spare.wrap([7])) == .data([7]))
    }

    @Test func restoredSessionsSendWithRandomNonces() throws {
        let clock = ManualClock(1_700_000_000)
        // Two restores of one saved state share its key: their nonces must still differ.
        var (first, server) = try Self.restoredPair(clientSequence: 5, serverSequence: 9, clock: clock)
        var (second, _) = try Self.restoredPair(clientSequence: 5, serverSequence: 9, clock: clock)
        var nonces: Set<[UInt8]> = []
        for round in 0..<50 {
            nonces.insert(Self.nonce(try first.wrap([UInt8(round)])))
            nonces.insert(Self.nonce(try second.wrap([UInt8(round)])))
        }
        #expect(nonces.count == 100)
        var fresh = try Self.restoredPair(clientSequence: 5, serverSequence: 9, clock: clock).0
        #expect(try server.receive(try fresh.wrap([1])) == .data([1]))
    }

    @Test func replayAndReorderingAreRejected() throws {
        var (client, server, _) = try SessionParties().handshake()
        let first = try client.wrap([1])
        let second = try client.wrap([2])
        #expect(try server.receive(first) == .data([1]))
        #expect(throws: ThemisError.replayedMessage) { try server.receive(first) }
        #expect(try server.receive(second) == .data([2]))
        #expect(throws: ThemisError.replayedMessage) { try server.receive(second) }
        #expect(throws: ThemisError.replayedMessage) { try server.receive(first) }  // older
    }

    @Test func sequenceWindowIsEightAhead() throws {
        var (client, server, _) = try SessionParties().handshake()
        let messages = try (0..<20).map { try client.wrap([UInt8($0)]) }

        // Before anything arrived: the initial number and up to 8 after it.
        var fresh = server
        #expect(throws: ThemisError.sequenceOutOfWindow) { try fresh.receive(messages[9]) }
        #expect(try fresh.receive(messages[8]) == .data([8]))

        #expect(try server.receive(messages[0]) == .data([0]))
        #expect(throws: ThemisError.sequenceOutOfWindow) { try server.receive(messages[9]) }  // +9
        #expect(try server.receive(messages[8]) == .data([8]))  // +8: seven lost, tolerated
        #expect(throws: ThemisError.replayedMessage) { try server.receive(messages[5]) }  // late
        #expect(try server.receive(messages[9]) == .data([9]))
        #expect(try server.receive(messages[17]) == .data([17]))
        #expect(try server.receive(messages[19]) == .data([19]))
    }

    @Test func sequenceNumbersWrapAround() throws {
        let clock = ManualClock(1_795_920_569)
        var (client, server) = try Self.restoredPair(clientSequence: UInt32.max - 2, serverSequence: 5, clock: clock)
        for index in 0..<8 {
            #expect(try server.receive(client.wrap([UInt8(index)])) == .data([UInt8(index)]))
            #expect(try client.receive(server.wrap([UInt8(index)])) == .data([UInt8(index)]))
        }
        // The last accepted client number is now 4 (wrapped); one from before the wrap is old.
        var early = try Self.restoredPair(clientSequence: UInt32.max, serverSequence: 5, clock: clock).0
        #expect(throws: ThemisError.replayedMessage) { try server.receive(early.wrap([0])) }
    }

    @Test func timestampWindowIsOneDay() throws {
        let parties = SessionParties(now: 1_795_920_569)
        var (client, server, _) = try parties.handshake()
        let start = parties.clock.now

        parties.clock.now = start - 86_401
        let stale = try client.wrap([1])
        parties.clock.now = start - 86_400
        let oldest = try client.wrap([2])
        parties.clock.now = start + 86_401
        let future = try client.wrap([3])
        parties.clock.now = start + 86_400
        let newest = try client.wrap([4])

        parties.clock.now = start
        #expect(throws: ThemisError.timestampOutOfWindow) { try server.receive(stale) }
        #expect(try server.receive(oldest) == .data([2]))
        #expect(throws: ThemisError.timestampOutOfWindow) { try server.receive(future) }
        #expect(try server.receive(newest) == .data([4]))
    }

    @Test func windowArithmetic() throws {
        var window = SequenceWindow(initial: UInt32.max)
        #expect(throws: ThemisError.replayedMessage) { try window.check(UInt32.max - 1) }
        try window.check(UInt32.max)  // the initial number itself, once
        try window.check(7)           // +8 across the wrap
        #expect(throws: ThemisError.sequenceOutOfWindow) { try window.check(8) }
        window.accept(UInt32.max)
        #expect(throws: ThemisError.replayedMessage) { try window.check(UInt32.max) }
        try window.check(0)
        #expect(throws: ThemisError.replayedMessage) { try window.check(UInt32.max - 1_000_000) }
        #expect(throws: ThemisError.sequenceOutOfWindow) { try window.check(1_000_000) }
    }

    @Test func wrapRejectsEmptyAndKeepsSequence() throws {
        var (client, server, _) = try SessionParties().handshake()
        #expect(throws: ThemisError.emptyInput) { try client.wrap([]) }
        #expect(try server.receive(client.wrap([9])) == .data([9]))
    }
}
