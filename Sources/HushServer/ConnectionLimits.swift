#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bounds on TCP connections to the chat port, before any WebSocket (docs/PROTOCOL.md §2, §7).
public struct ConnectionLimits: Sendable {
    /// Time a connection has to send a complete request head, counted from the accept; a kept-alive
    /// connection gets it again after each response.
    public var requestHeadTimeout: Duration = .seconds(10)
    /// Open connections on the chat port; a new one beyond it is answered `503` and closed.
    public var maxConnections = DescriptorLimit.connectionBudget
    /// Open connections from one source address; a new one beyond it is answered `429` and closed.
    public var maxConnectionsPerAddress = 64

    public init() {}
}

/// The process's open-file limit (`RLIMIT_NOFILE`): every connection holds a descriptor.
public enum DescriptorLimit {
    /// Descriptors kept out of the connection budget for the database, static files, the event
    /// loops and the runtime: libdispatch traps when it cannot open `/proc/<tid>/stat`.
    public static let reserve = 64

    /// The soft limit in force.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        return Int(clamping: limit.rlim_cur)
    }

    /// Connections the current limit allows with the reserve kept; at least half of a small limit.
    public static var connectionBudget: Int { max(current - reserve, current / 2) }

    /// Raises the soft limit to the hard one (a process may, unprivileged); returns the soft limit
    /// in force afterwards.
    @discardableResult
    public static func raiseToHard() -> Int {
        var limit = rlimit()
        if getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            // Darwin refuses RLIM_INFINITY for descriptors; the old soft limit then stays.
            _ = setrlimit(resource, &raised)
        }
        return current
    }

    #if canImport(Glibc)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif
}
