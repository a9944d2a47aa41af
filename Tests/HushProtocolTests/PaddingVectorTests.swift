import Crypto
import Foundation
@testable import HushProtocol
import Testing
import ThemisKit

/// Length hiding (docs/PROTOCOL.md §6.1): the shared vector Tests/Fixtures/padding.json (shape in
/// padding.md) through `Padding` and `RoomPayload.open`; the length of real sealed chat payloads;
/// and padded messages sealed by the web client (Tests/Fixtures/padding-sealed-by-js.json). The web
/// client runs the same vector and opens ours (padding-sealed-by-swift.json, written below).
@Suite(.timeLimit(.minutes(2))) struct PaddingVectorTests {
    static func fixture(_ name: String) -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
    }

    static func load(_ name: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: fixture(name)))
    }

    static func expand(_ input: JSONValue) throws -> String {
        if let text = input.string { return text }
        let repeated = try #require(input["repeat"]?.string)
        let count = try #require(input["count"]?.int)
        return try #require(input["prefix"]?.string) + String(repeating: repeated, count: count) + #require(input["suffix"]?.string)
    }

    /// The inner JSON inside a sealed room payload: unsealed, then read out of Secure Message's
    /// signed layout (a 12-byte header whose second field is the message's length).
    static func inner(of payload: [UInt8], roomKey: SymmetricKey, room: String, epoch: Int) throws -> [UInt8] {
        let signed = try RoomPayload.cell(roomKey).decrypt(payload, context: Statement.roomContext(room: room, epoch: epoch))
        let length = signed[4..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        return Array(signed[12..<(12 + length)])
    }

    @Test func bucketsAreTheVectors() throws {
        #expect(try #require(Self.load("padding.json")["buckets"]?.array).compactMap(\.int) == Padding.buckets)
        #expect(Padding.buckets.last! + Padding.maxSealOverhead == Limits.standard.maxPayloadBytes)
    }

    @Test func senderCases() throws {
        let cases = try #require(try Self.load("padding.json")["pad"]?.array)
        #expect(cases.count >= 15)
        for entry in cases {
            let name = entry["name"]?.string ?? "?"
            let input = Array(try Self.expand(try #require(entry["input"])).utf8)
            if entry["tooLarge"] == .bool(true) {
                #expect(throws: MessageTooLarge.self, "\(name)") { try Padding.pad(input) }
                continue
            }
            let padded = try Padding.pad(input)
            #expect(padded.count == entry["length"]?.int, "\(name)")
            let text = String(decoding: padded, as: UTF8.self)
            if let exact = entry["padded"]?.string { #expect(text == exact, "\(name)") }
            var members = try #require(try JSONDecoder().decode(JSONValue.self, from: Data(padded)).object, "\(name)")
            let pad = try #require(members.removeValue(forKey: "pad")?.string, "\(name)")
            #expect(Padding.isValidPad(pad) && text.hasSuffix("\"pad\":\"\(pad)\"}"), "\(name)")
            #expect(JSONValue.object(members) == (try JSONDecoder().decode(JSONValue.self, from: Data(input))), "\(name): the members are unchanged")
        }
        print("padding cases checked: \(cases.count)")
    }

    @Test func readerCases() throws {
        let vector = try Self.load("padding.json")
        let room = try #require(vector["room"]?.string)
        let epoch = try #require(vector["epoch"]?.int)
        let cases = try #require(vector["read"]?.array)
        #expect(cases.count >= 10)
        let sender = ThemisPrivateKey()
        for entry in cases {
            let name = entry["name"]?.string ?? "?"
            let roomKey = RoomPayload.newRoomKey()
            let signed = try SecureMessage.sign(Array(try #require(entry["inner"]?.string).utf8), with: sender)
            let payload = try RoomPayload.cell(roomKey).encrypt(signed, context: Statement.roomContext(room: room, epoch: epoch))
            let opened = Result { () throws(PayloadError) in
                try RoomPayload.open(payload, roomKey: roomKey, room: room, epoch: epoch, sender: sender.publicKey)
            }
            if entry["valid"] == .bool(true) {
                #expect((try? opened.get()) != nil, "\(name): \(opened)")
            } else {
                #expect(throws: PayloadError.malformed, "\(name)") { try opened.get() }
            }
        }
        print("padding reader cases checked: \(cases.count)")
    }

    /// Real seals: the padded inner JSON is exactly the smallest bucket that holds the message with
    /// its `pad` member, and the payload around it is constant but for the signature's length.
    @Test func sealedChatPayloadsLandInTheirBucket() throws {
        let sender = ThemisPrivateKey(), room = "Jd7NeG0366hu3LTUT1LpWA"
        for text in ["", "hi", String(repeating: "x", count: 150), String(repeating: "x", count: 160),
                     String(repeating: "é", count: 400), String(repeating: "€", count: 4000), String(repeating: "y", count: 40_000)] {
            let roomKey = RoomPayload.newRoomKey()
            let message = ChatMessage(room: room, epoch: 2, counter: 7, ts: 1_700_000_000_000, text: text)
            let unpadded = RoomPayload.json(message).count + 9
            let bucket = try #require(Padding.buckets.first { $0 >= unpadded })
            let payload = try RoomPayload.seal(message, roomKey: roomKey, signer: sender)
            #expect(try Self.inner(of: payload, roomKey: roomKey, room: room, epoch: 2).count == bucket, "\(text.count) characters")
            #expect((bucket + 44 + 12 + 8)...(bucket + Padding.maxSealOverhead) ~= payload.count, "\(payload.count)")
            #expect(try RoomPayload.open(payload, roomKey: roomKey, room: room, epoch: 2, sender: sender.publicKey) == .chat(message))
        }
        let tooLong = ChatMessage(room: room, epoch: 2, counter: 7, ts: 1, text: String(repeating: "z", count: 70_000))
        #expect(throws: MessageTooLarge.self) { try RoomPayload.seal(tooLong, roomKey: RoomPayload.newRoomKey(), signer: sender) }
        let roomKey = RoomPayload.newRoomKey()
        let name = try RoomPayload.seal(NameMessage(room: room, epoch: 2, counter: 8, ts: 1, name: "Alice"), roomKey: roomKey, signer: sender)
        #expect(try Self.inner(of: name, roomKey: roomKey, room: room, epoch: 2).count == 256, "a name message is padded too")
    }

    @Test func theSendersTextLimitIsTheWebClients() throws {
        #expect(ChatMessage.maxTextLength == (try Self.load("padding.json")["maxTextLength"]?.int))
        #expect(ChatMessage.isSendable(String(repeating: "€", count: 4000)))
        #expect(!ChatMessage.isSendable(String(repeating: "x", count: 4001)))
        #expect(!ChatMessage.isSendable(String(repeating: "😀", count: 2001)), "an astral character is two UTF-16 units, as in a browser")
    }

    @Test func paddedMessagesSealedByTheWebClientOpen() throws {
        let sealed = try Self.load("padding-sealed-by-js.json")
        let room = try #require(sealed["room"]?.string)
        let epoch = try #require(sealed["epoch"]?.int)
        let messages = try #require(sealed["messages"]?.array)
        #expect(messages.count >= 4)
        for entry in messages {
            let roomKey = SymmetricKey(data: try #require(entry["roomKey"]?.string.flatMap(Base64.decode)))
            let payload = try #require(entry["payload"]?.string.flatMap(Base64.decode))
            let sender = try ThemisPublicKey(containerBytes: try #require(entry["sender"]?.string.flatMap(Base64.decode)))
            guard case .chat(let message) = try RoomPayload.open(payload, roomKey: roomKey, room: room, epoch: epoch, sender: sender) else {
                Issue.record("not a chat message")
                continue
            }
            #expect(message.text == entry["text"]?.string)
            let inner = try Self.inner(of: payload, roomKey: roomKey, room: room, epoch: epoch)
            #expect(Padding.buckets.contains(inner.count) && inner.count == entry["bucket"]?.int)
            #expect(String(decoding: inner, as: UTF8.self).hasSuffix("\"}") && inner.contains(Array(#","pad":""#.utf8)))
        }
        print("web-sealed padded messages opened: \(messages.count)")
    }
}

/// Writes Tests/Fixtures/padding-sealed-by-swift.json, which the web client opens
/// (`HUSH_WRITE_PADDING_VECTORS=1 swift test --filter PaddingVectorWriter`; every byte anew).
@Suite(.timeLimit(.minutes(1))) struct PaddingVectorWriter {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["HUSH_WRITE_PADDING_VECTORS"] == "1"))
    func writeSealed() throws {
        let vector = try PaddingVectorTests.load("padding.json")
        let room = try #require(vector["room"]?.string)
        let epoch = try #require(vector["epoch"]?.int)
        let sender = ThemisPrivateKey()
        let texts = ["hello from Swift", String(repeating: "x", count: 1000), String(repeating: "€", count: 4000),
                     String(repeating: "ünïcødé 😀", count: 200)]
        let messages = try texts.enumerated().map { index, text -> JSONValue in
            let roomKey = RoomPayload.newRoomKey()
            let payload = try RoomPayload.seal(ChatMessage(room: room, epoch: epoch, counter: index + 1, ts: 1_700_000_000_000, text: text),
                                               roomKey: roomKey, signer: sender)
            let bucket = try PaddingVectorTests.inner(of: payload, roomKey: roomKey, room: room, epoch: epoch).count
            return ["text": .string(text), "bucket": .int(bucket), "roomKey": .string(Base64.encode(roomKey.bytes)),
                    "sender": .string(KeyID.json(sender.publicKey)), "payload": .string(Base64.encode(payload))]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let object: JSONValue = ["room": .string(room), "epoch": .int(epoch), "messages": .array(messages)]
        try (encoder.encode(object) + Data("\n".utf8)).write(to: PaddingVectorTests.fixture("padding-sealed-by-swift.json"))
    }
}
