import Crypto
import Foundation
import Testing
@testable import ThemisKit

/// A clock tests can move. Sessions take a `@Sendable` closure, so the time lives behind a lock.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var seconds: UInt64

    init(_ seconds: UInt64) { self.seconds = seconds }

    var now: UInt64 {
        get { lock.withLock { seconds } }
        set { lock.withLock { seconds = newValue } }
    }

    var closure: @Sendable () -> UInt64 { { self.now } }
}

/// Two parties with long-term keys that know each other, ready to start sessions.
struct SessionParties {
    let clientID: [UInt8]
    let serverID: [UInt8]
    let clientKey = ThemisPrivateKey()
    let serverKey = ThemisPrivateKey()
    let clock: ManualClock

    init(clientID: String = "client", serverID: String = "server", now: UInt64 = 1_795_920_569) {
        self.clientID = Array(clientID.utf8)
        self.serverID = Array(serverID.utf8)
        clock = ManualClock(now)
    }

    /// Knows exactly the given ids.
    static func lookup(_ known: [[UInt8]: ThemisPublicKey]) -> SecureSession.PeerKeyLookup {
        { known[$0] }
    }

    func makeClient(serverKnownAs key: ThemisPublicKey? = nil) -> SecureSession {
        SecureSession(id: clientID, privateKey: clientKey,
                      peerKeyLookup: Self.lookup([serverID: key ?? serverKey.publicKey]), clock: clock.closure)
    }

    func makeServer(clientKnownAs key: ThemisPublicKey? = nil) -> SecureSession {
        SecureSession(id: serverID, privateKey: serverKey,
                      peerKeyLookup: Self.lookup([clientID: key ?? clientKey.publicKey]), clock: clock.closure)
    }

    /// The four handshake messages of one run, with both sessions established at the end.
    func handshake() throws -> (client: SecureSession, server: SecureSession, messages: [[UInt8]]) {
        var client = makeClient()
        var server = makeServer()
        let m1 = try client.connectRequest()
        let m2 = try server.receive(m1).replyBytes
        let m3 = try client.receive(m2).replyBytes
        guard case let .established(reply?) = try server.receive(m3) else { throw TestFailure("server did not finish") }
        #expect(try client.receive(reply) == .established(reply: nil))
        return (client, server, [m1, m2, m3, reply])
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension SecureSession.Event {
    var replyBytes: [UInt8] {
        get throws {
            guard case let .reply(bytes) = self else { throw TestFailure("expected a reply, got \(self)") }
            return bytes
        }
    }
}

/// The raw bytes of a key, for comparing with recorded values.
enum SymmetricKeyBytes {
    static func of(_ key: SymmetricKey) -> [UInt8] { key.withUnsafeBytes { Array($0) } }
}

extension Array where Element == UInt8 {
    /// Recomputes a Soter container's CRC after a test has edited it, so the edit reaches the
    /// checks behind the checksum.
    func withFixedContainerChecksum() -> [UInt8] {
        guard count >= 12 else { return self }
        var copy = self
        copy.replaceSubrange(8..<12, with: [0, 0, 0, 0])
        let crc = CRC32C.checksum(copy)
        copy.replaceSubrange(8..<12, with: [UInt8].le32(crc))
        return copy
    }

    func flipping(_ index: Int, mask: UInt8 = 0x01) -> [UInt8] {
        var copy = self
        copy[index] ^= mask
        return copy
    }
}
