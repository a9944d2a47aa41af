@testable import HushServer
import Synchronization
import Testing

/// When the server gives freed connection memory back to the system.
@Suite(.timeLimit(.minutes(1))) struct HeapTrimmerTests {
    @Test func dueOnceAsManyClosedAsAreOpen() {
        #expect(!HeapTrimmer.isDue(closesSinceTrim: HeapTrimmer.minimumCloses - 1, open: 0))
        #expect(HeapTrimmer.isDue(closesSinceTrim: HeapTrimmer.minimumCloses, open: 0))
        #expect(!HeapTrimmer.isDue(closesSinceTrim: 4999, open: 5001))
        #expect(HeapTrimmer.isDue(closesSinceTrim: 5000, open: 5000))
    }

    /// 10,000 connections closing one by one: a trim at each halving, the last once fewer than
    /// `minimumCloses` remain, so that at most that many connections' memory stays unreturned.
    @Test func crowdLeavingTrimsAtEachHalving() {
        let trims = Mutex<[Int]>([])
        let open = Atomic<Int>(10_000)
        let trimmer = HeapTrimmer(settleDelay: .zero, trim: { trims.withLock { $0.append(open.load(ordering: .relaxed)) } }, background: { $0() }, later: { _, _ in })
        while open.load(ordering: .relaxed) > 0 {
            trimmer.connectionClosed(open: open.subtract(1, ordering: .relaxed).newValue)
        }
        #expect(trims.withLock { $0 } == [5000, 2500, 1250, 625, 312, 156, 78, 14])
    }

    /// A trim still running holds the next ones back.
    @Test func oneTrimAtATime() {
        let pending = Mutex<[@Sendable () -> Void]>([])
        let trims = Atomic<Int>(0)
        let trimmer = HeapTrimmer(settleDelay: .zero, trim: { trims.add(1, ordering: .relaxed) }, background: { job in pending.withLock { $0.append(job) } },
                                  later: { _, _ in })
        for _ in 0..<(3 * HeapTrimmer.minimumCloses) { trimmer.connectionClosed(open: 0) }
        #expect(pending.withLock { $0.count } == 1)
        pending.withLock { $0.removeFirst() }()
        #expect(trims.load(ordering: .relaxed) == 1)
        for _ in 0..<HeapTrimmer.minimumCloses { trimmer.connectionClosed(open: 0) }
        #expect(pending.withLock { $0.count } == 1)
    }

    /// A crowd leaving: one more trim after the last due one has settled, none for the earlier ones.
    @Test func oneSettlingTrimAfterTheLastDueTrim() {
        let settling = Mutex<[@Sendable () -> Void]>([])
        let trims = Atomic<Int>(0)
        let trimmer = HeapTrimmer(settleDelay: .seconds(35), trim: { trims.add(1, ordering: .relaxed) }, background: { $0() },
                                  later: { delay, job in
                                      #expect(delay == .seconds(35))
                                      settling.withLock { $0.append(job) }
                                  })
        var open = 1000
        while open > 0 {
            open -= 1
            trimmer.connectionClosed(open: open)
        }
        let due = trims.load(ordering: .relaxed)
        #expect(due > 1 && settling.withLock { $0.count } == due)
        for job in settling.withLock({ $0 }) { job() }
        #expect(trims.load(ordering: .relaxed) == due + 1)
    }
}
