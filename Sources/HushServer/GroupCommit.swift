import GRDB
import NIOConcurrencyHelpers

/// How a store commits a batch of writes: one transaction, each write in its own savepoint so
/// that a refusal rolls back only itself (the write returns its error); the batch's own
/// failure, returned by `commit`, means nothing of it holds.
protocol BatchCommitting: Sendable {
    associatedtype Write: Sendable
    /// What a write holds until its batch ends that another lane's batch would wait for (a
    /// room's row), if anything: lanes take disjoint ones, so they do not wait on each other.
    static func held(by write: Write) -> String?
    func commit(_ writes: [Write]) async -> (any Error)?
}

/// Group commit, one rule for every store: writes that arrive while a transaction is being
/// committed wait, then share the next transaction, so that one flush makes a whole batch
/// durable. Nothing is answered before the commit: each write's result, and its after-commit
/// action (the pushes), are delivered once its batch is durable, in the order the writes ran,
/// before the lane takes its next batch. With one lane (SQLite's single writer) a room's pushes
/// leave in sequence order; a store that runs several lanes orders them itself (PostgreSQL
/// numbers them under the room's row lock, `PostgresFanOut`). Lanes take the writes of what
/// no other lane holds (`BatchCommitting.held`), each in queue order.
final class GroupCommitter<Store: BatchCommitting>: Sendable {
    struct Job: Sendable {
        let write: Store.Write
        /// Delivers the write's outcome after the commit, or the commit's failure.
        let finish: @Sendable ((any Error)?) -> Void
    }

    private let store: Store
    private struct Queue {
        var jobs: [Job] = []
        var lanes = 0
        /// What the running lanes' batches hold.
        var held: Set<String> = []
    }

    private let queue = NIOLockedValueBox(Queue())
    /// Writes in one transaction at most: bounds a batch's latency and its journal.
    let maxBatch: Int
    /// Batches committed at once at most, each on its own connection.
    let maxLanes: Int

    /// `maxBatch` 1 commits every write on its own (benchmarks compare against that).
    init(store: Store, maxBatch: Int, maxLanes: Int = 1) {
        self.store = store
        self.maxBatch = max(1, maxBatch)
        self.maxLanes = max(1, maxLanes)
    }

    /// Queues a write; returns its value once its transaction is committed, after
    /// `afterCommit` ran with it. `make` builds the store's write around `keep`, which the
    /// write calls with its outcome each time it runs (a retried batch runs it again).
    func write<T: Sendable>(afterCommit: (@Sendable (T) -> Void)? = nil,
                            _ make: (_ keep: @escaping @Sendable (Result<T, any Error>) -> Void) -> Store.Write) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
            let write = make { result in outcome.withLockedValue { $0 = result } }
            enqueue(Job(write: write, finish: { commitError in
                let result: Result<T, any Error> = commitError.map { .failure($0) }
                    ?? outcome.withLockedValue { $0 } ?? .failure(StoreError("the write did not run"))
                if case .success(let value) = result { afterCommit?(value) }
                continuation.resume(with: result)
            }))
        }
    }

    /// Writes waiting for a lane (tests wait on it to know a batch is formed).
    var queuedWrites: Int { queue.withLockedValue { $0.jobs.count } }

    private func enqueue(_ job: Job) {
        let start = queue.withLockedValue { state in
            state.jobs.append(job)
            guard state.lanes < maxLanes else { return false }
            state.lanes += 1
            return true
        }
        if start { Task { await drain() } }
    }

    /// Commits batches until nothing in the queue is free to take: what is left is held by
    /// another lane, which takes it after its batch.
    private func drain() async {
        var holding: Set<String> = []
        while true {
            let batch = queue.withLockedValue { state in
                state.held.subtract(holding)
                holding = []
                var batch: [Job] = []
                var left: [Job] = []
                for job in state.jobs {
                    let held = Store.held(by: job.write)
                    if batch.count < maxBatch, held.map({ !state.held.contains($0) }) ?? true {
                        batch.append(job)
                        if let held { holding.insert(held) }
                    } else {
                        left.append(job)
                    }
                }
                state.jobs = left
                state.held.formUnion(holding)
                if batch.isEmpty { state.lanes -= 1 }
                return batch
            }
            if batch.isEmpty { return }
            let commitError = await store.commit(batch.map(\.write))
            for job in batch { job.finish(commitError) }
        }
    }
}

/// SQLite's batches: its one writer connection, each write in a GRDB savepoint.
struct SQLiteBatches: BatchCommitting {
    typealias Write = @Sendable (Database) -> (any Error)?

    let pool: DatabasePool

    /// One writer: nothing to keep apart.
    static func held(by write: Write) -> String? { nil }

    func commit(_ writes: [Write]) async -> (any Error)? {
        do {
            try await pool.write { db in
                for write in writes {
                    // SQLite may answer SQLITE_FULL (or an I/O error) by rolling back the whole
                    // transaction: then nothing of the batch holds, and every write in it fails.
                    if let error = write(db), !db.isInsideTransaction { throw error }
                }
            }
            return nil
        } catch {
            return Self.reported(error)
        }
    }

    /// SQLite out of space (the disk, or the file's ceiling, `PRAGMA max_page_count`) is the
    /// server being full, which the client is told as such, not as a failure of the server.
    static func reported(_ error: any Error) -> any Error {
        guard let error = error as? DatabaseError, error.resultCode == .SQLITE_FULL else { return error }
        return StorageRules.serverFull
    }
}

extension GroupCommitter where Store == SQLiteBatches {
    /// Runs `body` in its own savepoint of the next transaction; a thrown error changes nothing.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T,
                            afterCommit: (@Sendable (T) -> Void)? = nil) async throws -> T {
        try await write(afterCommit: afterCommit) { keep in
            { db in
                do {
                    var value: T?
                    try db.inSavepoint {
                        value = try body(db)
                        return .commit
                    }
                    guard let value else { throw StoreError("the write did not run") }
                    keep(.success(value))
                    return nil
                } catch {
                    let reported = SQLiteBatches.reported(error)
                    keep(.failure(reported))
                    return reported
                }
            }
        }
    }
}
