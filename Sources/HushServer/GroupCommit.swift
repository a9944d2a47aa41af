import GRDB
import NIOConcurrencyHelpers

/// Group commit: writes that arrive while a transaction is being committed wait, then share
/// the next transaction, so that one fsync (`synchronous=FULL`) makes a whole batch durable.
/// Each write runs in its own savepoint, so a refusal (`HushError`) rolls back only itself.
/// Nothing is answered before the commit: each write's result, and its after-commit action
/// (the pushes), are delivered once the batch is durable, in the order the writes ran, before
/// the next batch starts — so a room's pushes leave in sequence order.
final class GroupCommitter: Sendable {
    /// One queued write, type-erased: `run` executes it inside the batch's transaction, keeps
    /// its outcome and returns its error, if any; `finish` delivers it after the commit (or the
    /// commit's failure).
    struct Job: Sendable {
        let run: @Sendable (Database) -> (any Error)?
        let finish: @Sendable ((any Error)?) -> Void
    }

    private let pool: DatabasePool
    private let queue = NIOLockedValueBox<(jobs: [Job], draining: Bool)>(([], false))
    /// Writes in one transaction at most: bounds a batch's latency and its journal.
    let maxBatch: Int

    /// `maxBatch` 1 commits every write on its own (benchmarks compare against that).
    init(pool: DatabasePool, maxBatch: Int) {
        self.pool = pool
        self.maxBatch = max(1, maxBatch)
    }

    /// Runs `body` in the next transaction; returns its value once that transaction is
    /// committed, after `afterCommit` ran with it. A thrown error changes nothing.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T,
                            afterCommit: (@Sendable (T) -> Void)? = nil) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
            enqueue(Job(
                run: { db in
                    var result: Result<T, any Error> = .failure(StoreError("the write did not run"))
                    do {
                        try db.inSavepoint {
                            result = .success(try body(db))
                            return .commit
                        }
                    } catch {
                        result = .failure(Self.reported(error))
                    }
                    outcome.withLockedValue { $0 = result }
                    if case .failure(let error) = result { return error }
                    return nil
                },
                finish: { commitError in
                    let result: Result<T, any Error> = commitError.map { .failure(Self.reported($0)) }
                        ?? outcome.withLockedValue { $0 } ?? .failure(StoreError("the write did not run"))
                    if case .success(let value) = result { afterCommit?(value) }
                    continuation.resume(with: result)
                }))
        }
    }

    /// SQLite out of space (the disk, or the file's ceiling, `PRAGMA max_page_count`) is the
    /// server being full, which the client is told as such, not as a failure of the server.
    static func reported(_ error: any Error) -> any Error {
        guard let error = error as? DatabaseError, error.resultCode == .SQLITE_FULL else { return error }
        return StorageRules.serverFull
    }

    private func enqueue(_ job: Job) {
        let start = queue.withLockedValue { state in
            state.jobs.append(job)
            defer { state.draining = true }
            return !state.draining
        }
        if start { Task { await drain() } }
    }

    /// Commits batches until the queue is empty.
    private func drain() async {
        while true {
            let batch = queue.withLockedValue { state in
                let batch = Array(state.jobs.prefix(maxBatch))
                state.jobs.removeFirst(batch.count)
                if batch.isEmpty { state.draining = false }
                return batch
            }
            if batch.isEmpty { return }
            var commitError: (any Error)?
            do {
                try await pool.write { db in
                    for job in batch {
                        // SQLite may answer SQLITE_FULL (or an I/O error) by rolling back the whole
                        // transaction: then nothing of the batch holds, and every write in it fails.
                        if let error = job.run(db), !db.isInsideTransaction { throw error }
                    }
                }
            } catch {
                commitError = error
            }
            for job in batch { job.finish(commitError) }
        }
    }
}
