import Foundation
import HushProtocol
import Testing

/// The shared invite-link cases (Tests/Fixtures/invite-links.json): the web client runs the
/// same file (tests/js/invite-links.test.mjs), so both read exactly the same links.
@Suite(.timeLimit(.minutes(5))) struct InviteLinkVectorTests {
    struct Case: Decodable {
        struct Expect: Decodable {
            let server, room, owner, fingerprint, token: String
            let roomName, ownerName: String?
            let history: String
            let relay: String?
        }
        let name: String
        let link: String
        let valid: Bool
        let expect: Expect?
    }

    static let cases: [Case] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/invite-links.json")
        struct File: Decodable { let cases: [Case] }
        return (try? JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases) ?? []
    }()

    @Test func theFileHasValidAndInvalidCases() {
        #expect(Self.cases.filter(\.valid).count >= 2)
        #expect(Self.cases.filter { !$0.valid }.count >= 10)
    }

    @Test(arguments: cases.map(\.name))
    func everyCase(_ name: String) throws {
        let entry = try #require(Self.cases.first { $0.name == name })
        guard entry.valid else {
            #expect(throws: HushError.self, "\(name)") { try InviteLink.parse(entry.link) }
            return
        }
        let (server, invite) = try InviteLink.parse(entry.link)
        let expect = try #require(entry.expect)
        #expect(server == expect.server)
        #expect(invite.room == expect.room && invite.owner == expect.owner && invite.server == expect.fingerprint)
        #expect(Base64.encode(invite.token.bytes) == expect.token)
        #expect(invite.roomName == expect.roomName && invite.ownerName == expect.ownerName)
        #expect(invite.historyForNewMembers.rawValue == expect.history)
        #expect(invite.relay == expect.relay)
        #expect(invite.relayURL(pageURL: server) == expect.relay ?? expect.server)
        // Written again by this client, the link reads back the same.
        #expect(try InviteLink.parse(invite.link(serverURL: server)).invite == invite)
    }
}
