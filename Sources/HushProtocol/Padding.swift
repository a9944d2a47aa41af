/// A room message whose inner JSON cannot be padded: with the `pad` member it is longer than the
/// top bucket, so its sealed payload could exceed the server's 64 KiB bound.
public struct MessageTooLarge: Error, Sendable, Equatable {
    /// The inner JSON's length with an empty `pad` member, in bytes.
    public let bytes: Int
}

/// Length hiding (docs/PROTOCOL.md §6.1): before a chat, name or file message is signed and
/// sealed, its inner JSON is padded to a size bucket, so that the server learns the bucket and
/// not the length. The same rule is `padInnerJSON` in web/app/padding.mjs; both run
/// Tests/Fixtures/padding.json.
public enum Padding {
    /// Sealed overhead: Secure Cell Seal's 44-byte header, Secure Message sign's 12-byte header,
    /// and the longest DER ECDSA P-256 signature, 72 bytes (shorter ones vary at random).
    public static let maxSealOverhead = 44 + 12 + 72

    /// The lengths a padded inner JSON takes, in bytes. The top one is the largest inner JSON whose
    /// payload fits the server's bound (§7) whatever the signature's length: 65,536 − 128.
    public static let buckets = [256, 1024, 4096, 16384, Limits.standard.maxPayloadBytes - maxSealOverhead]

    /// The member `"pad":""` and the comma before it.
    static let emptyMemberBytes = 9

    /// Pads the compact JSON text of an object (`{` … `}`, as the encoder writes it) with a last
    /// member `"pad":"<spaces>"`, to exactly the smallest bucket that holds it.
    public static func pad(_ json: [UInt8]) throws(MessageTooLarge) -> [UInt8] {
        precondition(json.count >= 2 && json.first == UInt8(ascii: "{") && json.last == UInt8(ascii: "}"),
                     "padding takes the JSON text of an object")
        let isEmpty = json.count == 2
        let unpadded = json.count + emptyMemberBytes - (isEmpty ? 1 : 0)
        guard let bucket = buckets.first(where: { $0 >= unpadded }) else { throw MessageTooLarge(bytes: unpadded) }
        let member = Array((isEmpty ? "" : ",").utf8) + Array(#""pad":""#.utf8)
            + [UInt8](repeating: UInt8(ascii: " "), count: bucket - unpadded) + [UInt8(ascii: "\""), UInt8(ascii: "}")]
        return json.dropLast() + member
    }

    /// A reader's rule: `pad`, when present, is a string of U+0020 spaces only (any count, since
    /// no reader can tell a conforming sender's bucket from an old message without one).
    public static func isValidPad(_ pad: String) -> Bool {
        pad.utf8.allSatisfy { $0 == UInt8(ascii: " ") }
    }
}
