import Foundation

/// Bounds-checked reading of fixed-width integers and slices. Every read checks the bytes
/// actually present before touching them, so length fields from hostile input can never
/// index out of range or size an allocation.
struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    /// Position relative to the start of `bytes`.
    private(set) var offset: Int

    init(_ bytes: ArraySlice<UInt8>, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    init(_ bytes: [UInt8], offset: Int = 0) {
        self.init(bytes[...], offset: offset)
    }

    var remainingCount: Int { bytes.count - offset }

    mutating func read(_ count: Int) throws(ThemisError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remainingCount else { throw .truncated }
        defer { offset += count }
        let start = bytes.startIndex + offset
        return bytes[start..<(start + count)]
    }

    mutating func readLE32() throws(ThemisError) -> UInt32 {
        let slice = try read(4)
        return slice.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func readLE16() throws(ThemisError) -> UInt16 {
        let slice = try read(2)
        return UInt16(slice[slice.startIndex]) | UInt16(slice[slice.startIndex + 1]) << 8
    }

    mutating func readBE32() throws(ThemisError) -> UInt32 {
        try read(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func readBE64() throws(ThemisError) -> UInt64 {
        try read(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func readRest() -> ArraySlice<UInt8> {
        defer { offset = bytes.count }
        return bytes[(bytes.startIndex + offset)...]
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE32(_ value: UInt32) {
        append(contentsOf: [UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8),
                            UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 24)])
    }

    mutating func appendLE16(_ value: UInt16) {
        append(contentsOf: [UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8)])
    }

    mutating func appendBE32(_ value: UInt32) {
        append(contentsOf: [UInt8(truncatingIfNeeded: value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                            UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)])
    }

    mutating func appendBE64(_ value: UInt64) {
        appendBE32(UInt32(truncatingIfNeeded: value >> 32))
        appendBE32(UInt32(truncatingIfNeeded: value))
    }

    static func le32(_ value: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLE32(value)
        return out
    }
}

/// The bytes as an array: the same storage when they already are one, else one contiguous copy.
func byteArray<Bytes: DataProtocol>(_ bytes: Bytes) -> [UInt8] {
    if let array = bytes as? [UInt8] { return array }
    if bytes.regions.count == 1, let region = bytes.regions.first {
        return region.withUnsafeBytes { Array($0) }
    }
    return Array(bytes)
}

/// Compares two byte strings in time that depends only on their lengths.
@inlinable
public func constantTimeEquals<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
where A.Element == UInt8, B.Element == UInt8 {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}
