import HushProtocol
import Testing
import ThemisKit

/// Invite links come from people (pasted, scripted): parsing is strict and bounded.
@Suite(.timeLimit(.minutes(5))) struct InviteLinkTests {
    let invite = InviteLink(room: "gDVf2ivsiym_rZ9wYm2vvg", token: [UInt8](repeating: 7, count: 32),
                            owner: KeyID.json(ThemisPrivateKey().publicKey), server: "72ae 5abd 8a0a d2cf a8f2")

    @Test func roundTrip() throws {
        let (server, parsed) = try InviteLink.parse(invite.link(serverURL: "http://127.0.0.1:8080/"))
        #expect(server == "http://127.0.0.1:8080")
        #expect(parsed == invite)
    }

    @Test func refusesOversizedAndMalformedLinks() throws {
        let link = invite.link(serverURL: "http://127.0.0.1:8080")
        let padded = link.replacingOccurrences(of: "/#", with: "/" + String(repeating: "a", count: InviteLink.maxLinkLength) + "#")
        #expect(throws: HushError.self) { _ = try InviteLink.parse(padded) }
        #expect(throws: HushError.self) { _ = try InviteLink.parse(String(link.dropLast(4))) }
        #expect(throws: HushError.self) { _ = try InviteLink.parse("http://127.0.0.1:8080/") }
        var shortToken = invite
        shortToken.token = Base64Bytes([1, 2, 3])
        #expect(throws: HushError.self) { _ = try InviteLink.parse(shortToken.link(serverURL: "http://h")) }
    }
}
