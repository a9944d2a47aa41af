/// A Soter container: 4-byte ASCII tag, big-endian total size, little-endian CRC-32C of the
/// whole container (with the CRC field zeroed), then the payload. Key containers and Secure
/// Session handshake messages use it.
struct SoterContainer: Equatable, Sendable {
    static let headerCount = 12

    let tag: [UInt8]
    let payload: [UInt8]

    init(tag: String, payload: [UInt8]) {
        precondition(tag.utf8.count == 4, "Soter tags are four ASCII bytes")
        self.tag = Array(tag.utf8)
        self.payload = payload
    }

    /// Parses a container that must fill `bytes` exactly.
    init(parsing bytes: [UInt8]) throws(ThemisError) {
        let (container, count) = try Self.parsePrefix(bytes[...])
        guard count == bytes.count else { throw .trailingBytes }
        self = container
    }

    private init(tagBytes: [UInt8], payload: [UInt8]) {
        self.tag = tagBytes
        self.payload = payload
    }

    /// Parses the container at the start of `bytes`, whose length comes from its own size
    /// field, and returns it with the number of bytes it spans. The size field is checked
    /// against the bytes present before anything is copied.
    static func parsePrefix(_ bytes: ArraySlice<UInt8>) throws(ThemisError) -> (SoterContainer, Int) {
        guard bytes.count >= headerCount else { throw .truncated }
        let start = bytes.startIndex
        let size = bytes[(start + 4)..<(start + 8)].reduce(0) { Int($0) << 8 | Int($1) }
        guard size >= headerCount else { throw .lengthMismatch }
        guard size <= bytes.count else { throw .truncated }
        let stored = bytes[(start + 8)..<(start + 12)].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let header = bytes[start..<(start + 8)]
        let body = bytes[(start + headerCount)..<(start + size)]
        let computed = CRC32C.checksum(body, initial: CRC32C.checksum(header + [0, 0, 0, 0]))
        guard computed == stored else { throw .badChecksum }
        return (SoterContainer(tagBytes: Array(bytes[start..<(start + 4)]), payload: Array(body)), size)
    }

    func hasTag(_ expected: String) -> Bool { tag.elementsEqual(expected.utf8) }

    var serialized: [UInt8] {
        var out = tag
        out.reserveCapacity(Self.headerCount + payload.count)
        out.appendBE32(UInt32(Self.headerCount + payload.count))
        let crc = CRC32C.checksum(payload, initial: CRC32C.checksum(out + [0, 0, 0, 0]))
        out.appendLE32(crc)
        out.append(contentsOf: payload)
        return out
    }
}
