import Foundation
import HushProtocol
import Testing

/// Message objects of the wrong shape, which only a hostile server sends: each is refused
/// alone, and the connection they came on goes on (the web client does the same).
@Suite(.timeLimit(.minutes(1))) struct ServerFrameTests {
    static func frame(_ json: String) -> ServerFrame? { try? ServerFrame(Array(json.utf8)) }

    static let good1 = #"{"room":"r","seq":1,"kind":"message","from":"k","epoch":0,"at":5,"payload":"AQ=="}"#
    static let good3 = #"{"room":"r","seq":3,"kind":"rotation","from":"k","epoch":1,"at":6,"wrap":"Ag=="}"#

    @Test func aHistoryEntryOfTheWrongShapeIsDroppedAndTheRestIsRead() throws {
        let wrongShapes = [#"{"room":"r","seq":"2","kind":"message","from":"k","epoch":0,"at":5}"#, "7", "null", "[]",
                           #"{"room":"r","seq":2}"#, #"{"room":"r","seq":2,"kind":"message","from":"k","epoch":0,"at":5,"payload":"%%"}"#]
        for wrong in wrongShapes {
            let reply = Self.frame(#"{"type":"history","id":"r4","more":false,"messages":[\#(Self.good1),\#(wrong),\#(Self.good3)]}"#)
            guard case .message(let message) = reply else { Issue.record("refused the page for \(wrong)"); continue }
            #expect(message.id == "r4" && message.messages?.map(\.seq) == [1, 3], "\(wrong)")
            #expect(message.messages?.last?.wrap?.bytes == [2])
        }
    }

    @Test func theListKeepsItsJSONForm() throws {
        guard case .message(let absent) = Self.frame(#"{"type":"history"}"#), case .message(let null) = Self.frame(#"{"type":"history","messages":null}"#),
              case .message(let empty) = Self.frame(#"{"type":"history","messages":[]}"#) else {
            Issue.record("a well-formed reply was refused")
            return
        }
        #expect(absent.messages == nil && null.messages == nil && empty.messages == [])
        #expect(!String(decoding: absent.encoded(), as: UTF8.self).contains("messages"))
        #expect(String(decoding: empty.encoded(), as: UTF8.self) == #"{"messages":[],"type":"history"}"#)
        var page = WireMessage(type: "history")
        page.messages = [Envelope(room: "r", seq: 9, kind: "message", from: "k", epoch: 2, at: 1, payload: [1, 2], wrap: nil)]
        #expect(try ServerFrame(page.encoded()) == .message(page))
    }

    @Test func aMessageOfTheWrongShapeIsRefusedWithTheRequestItNames() {
        #expect(Self.frame(#"{"type":"history","id":"r7","messages":"all of them"}"#) == .refused(requestID: "r7"))
        #expect(Self.frame(#"{"type":"sent","id":"r8","seq":"8"}"#) == .refused(requestID: "r8"))
        #expect(Self.frame(#"{"type":"message","id":3,"seq":"x"}"#) == .refused(requestID: nil))
        #expect(Self.frame(#"{"type":"pong","id":"r1"}"#) == .message({ var pong = WireMessage(type: "pong"); pong.id = "r1"; return pong }()))
    }

    /// As in the web client, a frame that is no message object at all ends the connection.
    @Test func aFrameThatIsNoMessageObjectEndsTheConnection() {
        for nothing in [#"{"type":5,"id":"r8"}"#, #"{"id":"r9"}"#, "[1]", "\"text\"", "", "{", "null"] {
            #expect(throws: HushError.self, "\(nothing)") { try ServerFrame(Array(nothing.utf8)) }
        }
    }
}
