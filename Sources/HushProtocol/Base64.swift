import Crypto
import Foundation

/// Base64 forms used on the wire (docs/PROTOCOL.md §1).
public enum Base64 {
    /// Standard base64 with padding.
    public static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    /// Strict standard base64 decoding; `nil` on anything else.
    public static func decode(_ text: String) -> [UInt8]? {
        Data(base64Encoded: text).map { Array($0) }
    }

    /// base64url without padding.
    public static func encodeURL(_ bytes: [UInt8]) -> String {
        encode(bytes).replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decodeURL(_ text: String) -> [UInt8]? {
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        let remainder = standard.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { standard += String(repeating: "=", count: 4 - remainder) }
        return decode(standard)
    }
}

/// Bytes that travel in JSON as standard base64.
public struct Base64Bytes: Codable, Sendable, Hashable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let bytes = Base64.decode(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not base64"))
        }
        self.bytes = bytes
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Base64.encode(bytes))
    }
}

/// A secret key that travels in JSON (a join grant, a rotation, the key store's plaintext) as
/// standard base64, and is held in between as a swift-crypto `SymmetricKey`, whose storage is
/// zeroed when it is released, and whose `==` takes the same time wherever the keys differ.
public struct Base64Key: Codable, Sendable, Equatable {
    public var symmetricKey: SymmetricKey
    public init(_ key: SymmetricKey) { symmetricKey = key }

    public init(from decoder: any Decoder) throws {
        symmetricKey = SymmetricKey(data: try Base64Bytes(from: decoder).bytes)
    }

    public func encode(to encoder: any Encoder) throws {
        try Base64Bytes(symmetricKey.bytes).encode(to: encoder)
    }
}

extension SymmetricKey {
    /// A copy of the key's bytes, for the few places that must hand them on as bytes: a
    /// Secure Message to the owner (§6.2) and base64 in JSON. Keep the copy short-lived.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The key's length in bytes, for the length rules of room, joining and file keys.
    public var byteCount: Int { bitCount / 8 }
}
