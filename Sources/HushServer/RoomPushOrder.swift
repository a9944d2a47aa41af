import NIOConcurrencyHelpers

/// Hands a room's after-commit actions over in the order its writes took the room's row lock,
/// which is their commit (and sequence) order: concurrent transactions of one room finish in
/// that order in the database, but their callers may resume in any order.
///
/// A write takes a ticket once it holds the room's lock and, committed or not, settles it; a
/// ticket's action runs only after every earlier ticket of the room was settled.
final class RoomPushOrder: Sendable {
    struct Ticket: Sendable {
        let room: String
        let number: Int
    }

    private struct Queue {
        var issued = 0
        var settled = 0
        /// Settled out of order: the action (nil: nothing to push) and the waiting caller.
        var waiting: [Int: (action: (@Sendable () -> Void)?, resume: CheckedContinuation<Void, Never>)] = [:]
    }

    private let queues = NIOLockedValueBox<[String: Queue]>([:])

    /// Call while holding the room's row lock.
    func ticket(room: String) -> Ticket {
        queues.withLockedValue { queues in
            queues[room, default: Queue()].issued += 1
            return Ticket(room: room, number: queues[room]!.issued)
        }
    }

    /// Settles `tickets` (a write's attempts, the last one the one that counts) and runs
    /// `action` for the last; returns once it ran, after every earlier ticket of its room.
    func settle(_ tickets: [Ticket], action: (@Sendable () -> Void)?) async {
        for (index, ticket) in tickets.enumerated() {
            await settle(ticket, action: index == tickets.count - 1 ? action : nil)
        }
    }

    private func settle(_ ticket: Ticket, action: (@Sendable () -> Void)?) async {
        await withCheckedContinuation { (resume: CheckedContinuation<Void, Never>) in
            queues.withLockedValue { queues in
                var queue = queues[ticket.room] ?? Queue()
                queue.waiting[ticket.number] = (action, resume)
                // Run under the lock: another thread must not push a later seq of this room first.
                while let next = queue.waiting.removeValue(forKey: queue.settled + 1) {
                    next.action?()
                    next.resume.resume()
                    queue.settled += 1
                }
                queues[ticket.room] = queue.settled == queue.issued && queue.waiting.isEmpty ? nil : queue
            }
        }
    }
}
