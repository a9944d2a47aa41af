/// `GET /.well-known/hush` (docs/PROTOCOL.md §2).
public struct WellKnown: Codable, Sendable, Equatable {
    /// The protocol this code speaks (docs/PROTOCOL.md); clients refuse any other.
    public static let protocolVersion = 2
    public var serverId: String
    public var publicKey: String
    public var fingerprint: String
    public var ws: String
    public var `protocol`: Int

    public init(serverId: String, publicKey: String, fingerprint: String, ws: String = "/ws", protocol: Int = WellKnown.protocolVersion) {
        self.serverId = serverId
        self.publicKey = publicKey
        self.fingerprint = fingerprint
        self.ws = ws
        self.protocol = `protocol`
    }
}
