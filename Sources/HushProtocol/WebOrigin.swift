/// A web origin as a browser writes it, such as an invite's `relay` (docs/PROTOCOL.md §6.6), a
/// page origin a relay allows (`hush serve --allow-origin`) or a copy's relay (`hush web export
/// --relay`): `http` or `https`, a host of lowercase DNS labels (an IPv4 address is one) or a
/// bracketed lowercase IPv6 address, and a port only when it is not the scheme's default; no
/// path, user, query or fragment, at most 255 characters. One spelling per origin, so that
/// comparing two is comparing strings (the web client's `isWebOrigin` is the same rule; both run
/// Tests/Fixtures/invite-links.json).
public struct WebOrigin: Sendable, Hashable, CustomStringConvertible {
    public let description: String
    /// `host` or `host:port`, as a `Host` header names the same origin.
    public let authority: String

    public static let maxLength = 255

    public init(_ text: String) throws(HushError) {
        let invalid = HushError(.badRequest, "not an origin such as https://relay.example or http://127.0.0.1:8080 (lowercase, no path)")
        guard text.utf8.count <= Self.maxLength else { throw invalid }
        let isHTTPS = text.hasPrefix("https://")
        guard isHTTPS || text.hasPrefix("http://") else { throw invalid }
        let authority = text.utf8.dropFirst(isHTTPS ? 8 : 7)
        // The port starts at the last colon after the host (an IPv6 host holds colons of its own).
        let hostEnd: Substring.UTF8View.Index? = authority.first == UInt8(ascii: "[")
            ? authority.firstIndex(of: UInt8(ascii: "]")).map { authority.index(after: $0) }
            : authority.firstIndex(of: UInt8(ascii: ":")) ?? authority.endIndex
        guard let hostEnd, Self.isHost(authority[..<hostEnd]) else { throw invalid }
        let port = authority[hostEnd...]
        if !port.isEmpty {
            let digits = port.dropFirst()
            guard port.first == UInt8(ascii: ":"), (1...5).contains(digits.count), digits.first != UInt8(ascii: "0"),
                  digits.allSatisfy(Self.isDigit), let number = Int(String(decoding: digits, as: UTF8.self)),
                  number <= 65535, number != (isHTTPS ? 443 : 80) else { throw invalid }
        }
        description = text
        self.authority = String(decoding: authority, as: UTF8.self)
    }

    private static func isHost(_ host: Substring.UTF8View) -> Bool {
        if host.first == UInt8(ascii: "[") {
            let address = host.dropFirst().dropLast()
            return host.last == UInt8(ascii: "]") && (2...45).contains(address.count)
                && address.allSatisfy { isDigit($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }
        }
        let labels = host.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            (1...63).contains(label.count) && label.first != UInt8(ascii: "-") && label.last != UInt8(ascii: "-")
                && label.allSatisfy { isDigit($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
}
