import Foundation
import Logging

/// Deletes expired history (docs/PROTOCOL.md §4.7) in bounded passes, each one transaction of
/// the store, so that requests' writes go on between them.
public struct RetentionSweeper: Sendable {
    let store: any Store
    let retention: Retention
    /// How long a file may stay pending (uploaded, never sent) before it is deleted (§4.9).
    let pendingFileLifetime: Int64
    let clock: @Sendable () -> Date

    /// One round over every room, pass after pass; returns how many records and pending files it
    /// deleted. Pending files expire whether or not history does.
    @discardableResult
    public func sweep() async throws -> Int {
        var deleted = 0
        let cutoff = Int64(clock().timeIntervalSince1970 * 1000) - pendingFileLifetime
        while true {
            let files = try await store.expirePendingFiles(before: cutoff)
            deleted += files
            if files == 0 { break }
        }
        guard retention.isEnabled else { return deleted }
        var afterRoom: Int64 = 0
        while true {
            let now = Int64(clock().timeIntervalSince1970 * 1000)
            let pass = try await store.expire(now: now, retention: retention, afterRoom: afterRoom)
            deleted += pass.deleted
            guard let next = pass.nextRoom else { return deleted }
            afterRoom = next
        }
    }

    /// Sweeps every `retention.sweepEvery` until cancelled; a failed round is tried again at the next.
    public func run(logger: Logger) async {
        while !Task.isCancelled {
            do {
                try await sweep()
            } catch {
                logger.error("retention sweep failed: \(error)")
            }
            try? await Task.sleep(for: retention.sweepEvery)
        }
    }
}
