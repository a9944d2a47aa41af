/// Bounds on everything a peer controls (docs/PROTOCOL.md §7).
public struct Limits: Sendable {
    public var maxFrameBytes = 256 * 1024
    public var maxRequestBytes = 200 * 1024
    public var maxPayloadBytes = 64 * 1024
    public var maxSmallBlobBytes = 4 * 1024
    /// A `send`'s idempotency id (`messageId`), decoded.
    public var maxMessageIDBytes = 32
    public var requestsPerSecond = 20.0
    public var requestBurst = 40.0
    /// `file_put` and `file_get` have their own budget (§4.9), so a file moves at several MiB/s
    /// while chat requests stay bounded.
    public var fileRequestsPerSecond = 64.0
    public var fileRequestBurst = 128.0
    /// One sealed file chunk, decoded: 64 KiB of padded plaintext plus the Secure Cell header.
    public var maxFileChunkBytes = 66 * 1024
    /// Chunks of one file: 25 MiB.
    public var maxFileChunks = 400
    /// Files a key has uploaded in a room and not yet sent (§4.9).
    public var maxPendingFilesPerKey = 4
    public var maxFilesPerRoom = 10_000
    /// A pending file is deleted this long after its first chunk, in milliseconds.
    public var pendingFileLifetime: Int64 = 24 * 3600 * 1000
    public var maxOpenInvitesPerRoom = 64
    public var maxPendingJoinsPerRoom = 16
    public var maxRoomsPerKey = 8
    public var maxMembersPerRoom = 256
    public var maxHistoryPage = 100
    /// Payload and wrap bytes in one history reply, so a page always fits a bounded frame.
    public var maxHistoryPageBytes = 1024 * 1024
    public var maxOutgoingFrames = 256
    public var handshakeTimeout: Duration = .seconds(10)
    public var maxInviteLifetime: Int64 = 30 * 24 * 3600
    /// Stored bytes of one room (payloads, wraps, and a fixed cost per stored record): a `send`
    /// beyond it is refused with `room_full` (§4.4).
    public var roomQuotaBytes = 256 * 1024 * 1024
    /// Database bytes in use (pages, not counting free ones) beyond which messages and new rooms
    /// are refused with `server_full`; nil bounds only by the disk.
    public var maxStorageBytes: Int?
    /// How far the database file may grow past `maxStorageBytes`, for what is never refused for
    /// space (a rotation owed after a departure, removals); past it every write is `server_full`.
    public var storageHeadroomBytes = 32 * 1024 * 1024
    public var maxRotateEvery = 10_000
    public var defaultRotateEvery = 100

    public init() {}
    public static let standard = Limits()
}
