import HushProtocol
import NIOConcurrencyHelpers
import Synchronization

/// What a connection's writer gets: a message to wrap and send, or the order to close.
public enum Outgoing: Sendable {
    case message(EncodedMessage)
    case close(reason: String)
}

/// A wire message as JSON bytes, encoded once however many connections it goes to (each
/// only wraps it in its own Secure Session).
public struct EncodedMessage: Sendable {
    public let json: [UInt8]
    /// A `message` push: its room and sequence number, which the writer records as delivered.
    public let delivery: (room: String, seq: Int)?

    public init(_ message: WireMessage) {
        json = message.encoded()
        if message.type == "message", let room = message.room, let seq = message.seq {
            delivery = (room, seq)
        } else {
            delivery = nil
        }
    }
}

/// A connection's bounded outgoing queue, filled from any thread and drained by the
/// connection's handler on its event loop (`SessionHandler`). Whatever arrives before the writer
/// runs goes out together. A reader too slow to drain it is disconnected: when the queue is
/// full the connection is closed rather than buffered without limit.
public final class Outbox: Sendable {
    public let id: UInt64
    public let key: String
    private let capacity: Int
    private let queue = NIOLockedValueBox(Queue())
    /// Asks the writer to drain; called once per batch, by the send that starts it.
    private let wake: @Sendable () -> Void
    private let retired = Atomic<Bool>(false)

    private struct Queue {
        var items: [Outgoing] = []
        /// A drain is due: later sends only add to the batch.
        var wakePending = false
        var overflowed = false
        /// Closed, overflowed or unregistered: nothing more is queued.
        var finished = false
    }

    init(id: UInt64, key: String, capacity: Int, wake: @escaping @Sendable () -> Void) {
        self.id = id
        self.key = key
        self.capacity = capacity
        self.wake = wake
    }

    public func send(_ message: WireMessage) { send(EncodedMessage(message)) }

    public func send(_ message: EncodedMessage) { enqueue(.message(message)) }

    public func close(reason: String) { enqueue(.close(reason: reason)) }

    private func enqueue(_ item: Outgoing) {
        let wakes = queue.withLockedValue { queue -> Bool in
            guard !queue.finished else { return false }
            defer { queue.wakePending = true }
            if case .message = item, queue.items.count >= capacity {
                queue.overflowed = true
                queue.finished = true
                // Even past a pending drain: a writer waiting for the socket must hear it too.
                return true
            }
            queue.items.append(item)
            if case .close = item { queue.finished = true }
            return !queue.wakePending
        }
        if wakes { wake() }
    }

    /// Everything queued so far, in order; the next send wakes the writer again.
    public func take() -> [Outgoing] {
        queue.withLockedValue { queue in
            defer {
                queue.items = []
                queue.wakePending = false
            }
            return queue.items
        }
    }

    public var didOverflow: Bool { queue.withLockedValue { $0.overflowed } }
    /// The key left or was removed while this connection was open: every later request is
    /// refused without asking the store (a new connection of the key is refused at connect).
    public var isRetired: Bool { retired.load(ordering: .acquiring) }
    func retire() { retired.store(true, ordering: .releasing) }
    func finish() { queue.withLockedValue { $0.finished = true } }
}

/// Who is online on this node: established connections by key. Pushes reach it from this
/// node's writes and, on a shared PostgreSQL store, from the other nodes' (`PostgresFanOut`).
public final class Hub: Sendable {
    private let connections = NIOLockedValueBox<[String: [UInt64: Outbox]]>([:])
    private let nextID = Atomic<UInt64>(1)
    let capacity: Int

    public init(capacity: Int) { self.capacity = capacity }

    /// `wake` is how the connection's writer hears that its outbox has something to send.
    public func register(key: String, wake: @escaping @Sendable () -> Void = {}) -> Outbox {
        let outbox = Outbox(id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue, key: key, capacity: capacity,
                            wake: wake)
        connections.withLockedValue { $0[key, default: [:]][outbox.id] = outbox }
        return outbox
    }

    public func unregister(_ outbox: Outbox) {
        connections.withLockedValue { table in
            table[outbox.key]?[outbox.id] = nil
            if table[outbox.key]?.isEmpty == true { table[outbox.key] = nil }
        }
        outbox.finish()
    }

    private func outboxes(of key: String) -> [Outbox] {
        connections.withLockedValue { Array(($0[key] ?? [:]).values) }
    }

    /// Carries out what the room core decided, in order; `requester` is the connection whose
    /// request it answers.
    public func apply(_ effects: [ConnectionEffect], requester: Outbox?) {
        for effect in effects {
            switch effect {
            case .push(let message, let keys, let skipsRequester):
                push(message, to: keys, except: skipsRequester ? requester : nil)
            case .retire(let key, let closingWith):
                retire(key: key, closingWith: closingWith)
            }
        }
    }

    public func push(_ message: WireMessage, to keys: [String], except: Outbox? = nil) {
        let encoded = EncodedMessage(message)
        for key in keys {
            for outbox in outboxes(of: key) where outbox.id != except?.id { outbox.send(encoded) }
        }
    }

    /// Marks every open connection of `key` retired; with a message, sends it to them as their
    /// last and closes them.
    private func retire(key: String, closingWith message: WireMessage?) {
        let encoded = message.map(EncodedMessage.init)
        for outbox in outboxes(of: key) {
            outbox.retire()
            guard let encoded, let message else { continue }
            outbox.send(encoded)
            outbox.close(reason: message.code ?? "closed")
        }
    }

    /// Closes every connection of `key` (its client connects again and reads what it missed).
    public func disconnect(key: String, reason: String) {
        for outbox in outboxes(of: key) { outbox.close(reason: reason) }
    }

    public func connectionCount(of key: String) -> Int { connections.withLockedValue { $0[key]?.count ?? 0 } }

    public var connectionCount: Int { connections.withLockedValue { $0.values.reduce(0) { $0 + $1.count } } }
}
