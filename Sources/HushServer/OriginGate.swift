import HushProtocol

/// Which web pages may use this relay from a browser (docs/PROTOCOL.md §2): its own pages, and
/// the origins given with `hush serve --allow-origin` (copies of the web client written by
/// `hush web export`). Browsers send `Origin` with every WebSocket upgrade and cross-origin
/// fetch and a page cannot forge it; a client that is not a browser can send anything, so this
/// decides which pages' code the relay serves, and keeps pages on other sites off a relay on a
/// private network, but authenticates no one: the Secure Session and the room keys do that.
struct OriginGate: Sendable {
    let allowed: Set<WebOrigin>

    enum Verdict: Equatable {
        /// No page origin (not a browser), or the relay's own pages.
        case sameOriginOrNone
        /// A page elsewhere that the relay allows: cross-origin reads get CORS headers.
        case allowed(String)
        case refused
    }

    /// `origin` and `host`: the request's `Origin` and `Host` headers.
    func verdict(origin: String?, host: String?) -> Verdict {
        // Browsers write http(s) origins, or "null" for opaque ones (file:, data:, sandboxes);
        // other values (the Swift client sends ws://host) do not come from a web page.
        guard let origin, origin == "null" || origin.hasPrefix("http://") || origin.hasPrefix("https://") else {
            return .sameOriginOrNone
        }
        guard let page = try? WebOrigin(origin) else { return .refused }
        if let host, page.authority == host.lowercased() { return .sameOriginOrNone }
        return allowed.contains(page) ? .allowed(page.description) : .refused
    }
}
