/// Bounds on TCP connections to the chat port, before any WebSocket (docs/PROTOCOL.md §2, §7).
public struct ConnectionLimits: Sendable {
    /// Time a connection has to send a complete request head, counted from the accept; a kept-alive
    /// connection gets it again after each response.
    public var requestHeadTimeout: Duration = .seconds(10)

    public init() {}
}
