import Foundation
import HushProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Pushes across the nodes that share one PostgreSQL database (docs/POSTGRES.md).
///
/// A write with pushes records them, in its own transaction, as the next event of its room:
/// a `node_events` row numbered by the room's `event_seq`, which the room's row lock makes
/// commit order, and a `NOTIFY` on `hush_events` that PostgreSQL delivers at commit. Every node
/// `LISTEN`s, reads the events it has not handed over yet and hands each room's events to its
/// own connections one after the other in that order, its own writes included: a room's pushes
/// reach the connections of every node in sequence order, whichever node committed them. A
/// node that lost its `LISTEN` connection catches up from the table when it is back; one
/// that fell further behind than the table keeps closes its connections of that room, whose
/// clients then read the room again from `hello` and `history`.
final class PostgresFanOut: Sendable {
    static let channel = "hush_events"
    /// How long events are kept for a node that lost its `LISTEN` connection to catch up.
    static let keptSeconds = 600
    /// The most an event's effects can take: a push of the largest payload or wrap set, base64
    /// in JSON, with room to spare; anything larger was not written by a node.
    static let maxEventBytes = 4 << 20

    /// One recorded event: its room, its number there, and the id of the write attempt that
    /// recorded it (a retried transaction records again under a new id).
    struct Event: Sendable, Equatable {
        let room: String
        let seq: Int
        let id: String
    }

    private struct RoomQueue {
        /// Every event up to this one was handed over.
        var handedOver = 0
        var waiting: [Int: (effects: [ConnectionEffect], requester: Outbox?)] = [:]
    }

    private struct State {
        var rooms: [String: RoomQueue] = [:]
        /// Events this node recorded and hands over itself once committed, with the requester.
        var ownInFlight: Set<String> = []
        var hub: Hub?
        var listener: Task<Void, Never>?
    }

    private let client: PostgresClient
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    // MARK: recording (inside a write's transaction)

    /// Records `effects` as the room's next event, to be handed over by this node once the
    /// transaction commits (`deliver`) and by the others when notified.
    func record(_ connection: PostgresConnection, room: String, effects: [ConnectionEffect]) async throws -> Event {
        let id = UUID().uuidString
        let effectsJSON = ByteBuffer(bytes: try JSONEncoder().encode(effects))
        // One round trip: number the event on the room's row, store it, notify (at commit).
        guard let seq = try await connection.query("""
            WITH numbered AS (UPDATE rooms SET event_seq = event_seq + 1 WHERE id = \(room) RETURNING event_seq),
            stored AS (INSERT INTO node_events (room, event_seq, id, effects)
                       SELECT \(room), event_seq, \(id), \(effectsJSON) FROM numbered RETURNING event_seq)
            SELECT event_seq, pg_notify(\(Self.channel), \(room) || ' ' || event_seq || ' ' || \(id)) FROM stored
            """, logger: logger).collect().first?.makeRandomAccess()["event_seq"].decode(Int.self) else {
            throw StoreError("the room of an event is gone")
        }
        let event = Event(room: room, seq: seq, id: id)
        state.withLockedValue { _ = $0.ownInFlight.insert(event.id) }
        return event
    }

    /// The event was not committed (its transaction failed or was retried), or whether it was
    /// is unknown: if it was, it is handed over like another node's.
    func forget(_ event: Event) {
        state.withLockedValue { _ = $0.ownInFlight.remove(event.id) }
    }

    /// Hands a committed event of this node over, after every earlier event of its room.
    func deliver(_ event: Event, effects: [ConnectionEffect], requester: Outbox?, hub: Hub) {
        state.withLockedValue { _ = $0.ownInFlight.remove(event.id) }
        if enqueue(room: event.room, seq: event.seq, effects: effects, requester: requester, hub: hub) {
            catchUpInBackground(room: event.room)
        }
    }

    // MARK: order

    /// Queues an event and hands over every event of the room that is next in order; returns
    /// whether something still waits for an earlier event.
    private func enqueue(room: String, seq: Int, effects: [ConnectionEffect], requester: Outbox?, hub: Hub) -> Bool {
        state.withLockedValue { state in
            var queue = state.rooms[room] ?? RoomQueue()
            guard seq > queue.handedOver else { return false }
            queue.waiting[seq] = (effects, requester)
            // Under the lock: no other thread may hand over a later event of this room first.
            while let next = queue.waiting.removeValue(forKey: queue.handedOver + 1) {
                hub.apply(next.effects, requester: next.requester)
                queue.handedOver += 1
            }
            state.rooms[room] = queue
            return !queue.waiting.isEmpty
        }
    }

    // MARK: listening

    /// Starts handing other nodes' events to `hub`: from each room's current event on, then
    /// whatever is notified, and what was missed whenever the `LISTEN` connection is back.
    func start(hub: Hub) async throws {
        let current = try await client.withConnection { connection in
            try await connection.query("SELECT id, event_seq FROM rooms", logger: logger).collect()
                .map { try ($0.decode((String, Int).self)) }
        }
        state.withLockedValue { state in
            state.hub = hub
            for (room, seq) in current { state.rooms[room] = RoomQueue(handedOver: seq) }
            state.listener = Task { [self] in await listen() }
        }
    }

    /// Stops listening; returns once the listener ended.
    func stop() async {
        let listener = state.withLockedValue { state in
            defer { state.listener = nil }
            return state.listener
        }
        listener?.cancel()
        await listener?.value
    }

    private func listen() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        // LISTEN is on: whatever commits from now on is notified; read what was
                        // committed before (at start, or while the connection was lost).
                        try await catchUp(connection)
                        var pruned = ContinuousClock.now
                        for try await notification in notifications {
                            try await notified(notification.payload, connection)
                            if ContinuousClock.now - pruned > .seconds(60) {
                                try await prune(connection)
                                pruned = .now
                            }
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("lost the LISTEN connection for pushes from other nodes; reconnecting",
                               metadata: ["error": "\(String(reflecting: error))"])
            }
            // A short pause before trying again, so a database that is down is not hammered.
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func notified(_ payload: String, _ connection: PostgresConnection) async throws {
        guard let event = Self.event(fromNotification: payload) else {
            logger.warning("a malformed notification on \(Self.channel) was ignored")
            return
        }
        let needed = state.withLockedValue { state in
            !state.ownInFlight.contains(event.id) && event.seq > (state.rooms[event.room]?.handedOver ?? 0)
        }
        if needed { try await read(room: event.room, connection) }
    }

    /// Every room whose events this node has not all handed over.
    private func catchUp(_ connection: PostgresConnection) async throws {
        let latest = try await connection.query("SELECT room, MAX(event_seq) FROM node_events GROUP BY room", logger: logger)
            .collect().map { try $0.decode((String, Int).self) }
        for (room, seq) in latest where seq > (state.withLockedValue { $0.rooms[room]?.handedOver ?? 0 }) {
            try await read(room: room, connection)
        }
    }

    private func catchUpInBackground(room: String) {
        Task { [self] in
            do {
                try await client.withConnection { connection in try await read(room: room, connection) }
            } catch {
                logger.warning("could not read a room's events from other nodes", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }

    /// Reads the room's events after the last one handed over and hands them over, except
    /// this node's own in flight (their writer does, with its requester).
    private func read(room: String, _ connection: PostgresConnection) async throws {
        let (after, hub) = state.withLockedValue { ($0.rooms[room]?.handedOver ?? 0, $0.hub) }
        guard let hub else { return }
        let rows = try await connection.query("""
            SELECT event_seq, id, effects FROM node_events WHERE room = \(room) AND event_seq > \(after) ORDER BY event_seq
            """, logger: logger).collect()
        var expected = after + 1
        for row in rows {
            let (seq, id, effectsJSON) = try row.decode((Int, String, ByteBuffer).self)
            if seq > expected {
                // Older than the table keeps: this node cannot push what it missed.
                try await resynchronize(room: room, through: seq - 1, connection, hub: hub)
            }
            expected = seq + 1
            guard !state.withLockedValue({ $0.ownInFlight.contains(id) }) else { continue }
            // What another process wrote is read strictly: an event too large or not what a
            // node writes cannot be pushed, and must not stop the room's later events (nor
            // every catch-up after it): the room resynchronizes past it instead.
            guard effectsJSON.readableBytes <= Self.maxEventBytes,
                  let effects = try? JSONDecoder().decode([ConnectionEffect].self, from: Data(effectsJSON.readableBytesView)) else {
                logger.warning("an unreadable event in node_events was skipped")
                try await resynchronize(room: room, through: seq, connection, hub: hub)
                continue
            }
            _ = enqueue(room: room, seq: seq, effects: effects, requester: nil, hub: hub)
        }
    }

    /// Closes this node's connections of the room's keys and goes on after `seq`: their clients
    /// reconnect and read the room again (`hello`, `history`).
    private func resynchronize(room: String, through seq: Int, _ connection: PostgresConnection, hub: Hub) async throws {
        logger.warning("events of a room were older than the node could catch up on; its connections here are closed to resynchronize")
        let keys = try await connection.query("SELECT key FROM members WHERE room = \(room)", logger: logger).collect()
            .map { try $0.decode(String.self) }
        for key in keys { hub.disconnect(key: key, reason: "resynchronize") }
        state.withLockedValue { state in
            var queue = state.rooms[room] ?? RoomQueue()
            queue.handedOver = max(queue.handedOver, seq)
            queue.waiting = queue.waiting.filter { $0.key > seq }
            state.rooms[room] = queue
        }
    }

    private func prune(_ connection: PostgresConnection) async throws {
        try await connection.query("""
            DELETE FROM node_events WHERE at < now() - make_interval(secs => \(Self.keptSeconds))
            """, logger: logger)
    }

    // MARK: notification payload: "room seq id" (as `record` builds it; well under NOTIFY's 8000 bytes)

    static func event(fromNotification payload: String) -> Event? {
        let fields = payload.split(separator: " ", omittingEmptySubsequences: false)
        guard payload.utf8.count <= 200, fields.count == 3, !fields[0].isEmpty, let seq = Int(fields[1]), seq > 0,
              UUID(uuidString: String(fields[2])) != nil else { return nil }
        return Event(room: String(fields[0]), seq: seq, id: String(fields[2]))
    }
}
