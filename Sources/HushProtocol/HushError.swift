/// Error codes of docs/PROTOCOL.md §5.
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case badRequest = "bad_request"
    case tooLarge = "too_large"
    case rateLimited = "rate_limited"
    case limitReached = "limit_reached"
    case notFound = "not_found"
    case notMember = "not_member"
    case notOwner = "not_owner"
    case unknownInvite = "unknown_invite"
    case inviteExpired = "invite_expired"
    case inviteUsed = "invite_used"
    case noPendingJoin = "no_pending_join"
    case badSignature = "bad_signature"
    case epochChanged = "epoch_changed"
    case wrapsRequired = "wraps_required"
    case epochMismatch = "epoch_mismatch"
    case staleEpoch = "stale_epoch"
    case rotationPending = "rotation_pending"
    case fileExists = "file_exists"
    case unknownFile = "unknown_file"
    case fileIncomplete = "file_incomplete"
    case alreadyMember = "already_member"
    case roomFull = "room_full"
    case serverFull = "server_full"
    case removed
    case `internal`
}

/// A protocol-level refusal: becomes an `error` reply and changes nothing.
public struct HushError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String
    /// The room's current epoch, for `stale_epoch` and `rotation_pending` (§4.4).
    public let epoch: Int?
    public init(_ code: ErrorCode, _ message: String, epoch: Int? = nil) {
        self.code = code
        self.message = message
        self.epoch = epoch
    }
    public var description: String { "\(code.rawValue): \(message)" }
}
