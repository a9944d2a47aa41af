import Crypto
import Foundation
import HushTestSupport
@testable import HushClient
import HushProtocol
import HushTerminal
import Testing
import ThemisKit

/// The sealed key store file: round trip, wrong passphrase, damage, bounds, atomic writes.
@Suite(.timeLimit(.minutes(5))) struct KeyStoreTests {
    static func sampleRoom(name: String = "lobby") -> StoredRoom {
        let owner = ThemisPrivateKey()
        var record = StoredRoom(room: "room-\(UUID().uuidString.prefix(8))", name: name, server: "http://127.0.0.1:1",
                                serverKey: KeyID.json(ThemisPrivateKey().publicKey), role: .owner, status: .active,
                                privateKey: owner, owner: KeyID.json(owner.publicKey), rotateEvery: 5)
        let state = RoomState(room: record.room, owner: owner.publicKey, me: owner, epoch: 0, roomKey: RoomPayload.newRoomKey())
        record.absorb(state)
        record.addInvite(token: RoomPayload.randomBytes(32), expiresAt: Int64(Date().timeIntervalSince1970) + 3600)
        return record
    }

    @Test func sealedRoundTripRestoresTheRoomState() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let file = KeyStoreFile(path: folder.path("ks.hush"), passphrase: "correct horse")
        let record = Self.sampleRoom()
        try file.update(create: true) { $0.upsert(record) }
        let loaded = try file.load()
        #expect(loaded.rooms == [record])
        let state = try loaded.rooms[0].roomState()
        #expect(state.room == record.room && state.epoch == 0 && state.isOwner)
        #expect(state.currentKey == record.keys["0"]?.symmetricKey)
        // The file never holds the plaintext.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: file.path))
        #expect(bytes.range(of: Data(record.room.utf8)) == nil)
        #expect(bytes.range(of: Data(record.privateKey.bytes)) == nil)
        #expect(Array(bytes.prefix(8)) == KeyStoreFile.magic)
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    }

    @Test func wrongPassphraseIsRefusedAndChangesNothing() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("ks.hush")
        try KeyStoreFile(path: path, passphrase: "right").update(create: true) { $0.upsert(Self.sampleRoom()) }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let wrong = KeyStoreFile(path: path, passphrase: "wrong")
        #expect(throws: KeyStoreError.wrongPassphrase) { try wrong.load() }
        #expect(throws: KeyStoreError.wrongPassphrase) { try wrong.update { $0.upsert(Self.sampleRoom(name: "other")) } }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        #expect(KeyStoreError.wrongPassphrase.description.contains("wrong passphrase"))
    }

    @Test func damagedFilesGiveClearErrors() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("ks.hush")
        let file = KeyStoreFile(path: path, passphrase: "pw")
        try file.update(create: true) { $0.upsert(Self.sampleRoom()) }
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))

        func expectCorrupt(_ bytes: [UInt8], _ comment: Comment) {
            do {
                _ = try KeyStoreFile.open(bytes, passphrase: "pw")
                Issue.record(comment)
            } catch KeyStoreError.corrupt {
            } catch KeyStoreError.wrongPassphrase {
                // a flipped ciphertext bit cannot be told from a wrong passphrase: both fail the tag
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        var badHeader = good
        badHeader[0] ^= 1
        #expect(throws: KeyStoreError.corrupt("not a Hush key store (bad header)")) { try KeyStoreFile.open(badHeader, passphrase: "pw") }
        expectCorrupt(Array(good.prefix(good.count / 2)), "truncated file opened")
        var flipped = good
        flipped[good.count - 5] ^= 0x40
        expectCorrupt(flipped, "tampered file opened")
        #expect(throws: KeyStoreError.corrupt("not a Hush key store (bad header)")) { try KeyStoreFile.open([], passphrase: "pw") }
        // A missing file says where it looked.
        #expect(throws: KeyStoreError.missing(folder.path("none"))) { try KeyStoreFile(path: folder.path("none"), passphrase: "pw").load() }
    }

    /// A file of the current format around `json`, with a cheap store-key seal.
    static func sealed(_ json: String, passphrase: String = "pw") throws -> [UInt8] {
        let key = SymmetricKey(size: .bits256)
        let sealedKey = try KeyStoreFile.sealStoreKey(key, passphrase: passphrase, iterations: 1000)
        let data = try SecureCell.Seal(key: key).encrypt(Array(json.utf8), context: KeyStoreFile.dataContext)
        let length = UInt32(sealedKey.count)
        return KeyStoreFile.magic + [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            + sealedKey + data
    }

    static func sealed(_ store: KeyStore) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try sealed(String(decoding: try encoder.encode(store), as: UTF8.self))
    }

    @Test func decryptedContentIsParsedStrictly() throws {
        func sealed(_ json: String) throws -> [UInt8] { try Self.sealed(json) }
        #expect(try KeyStoreFile.open(try sealed(#"{"version":1,"rooms":[]}"#), passphrase: "pw").rooms.isEmpty)
        for bad in [#"[]"#, #"{"version":2,"rooms":[]}"#, #"{"version":1,"rooms":[],"extra":1}"#, #"{"version":1}"#,
                    #"{"version":1,"rooms":[{"room":"x"}]}"#, "not json"] {
            #expect(throws: KeyStoreError.self, "\(bad)") { try KeyStoreFile.open(try sealed(bad), passphrase: "pw") }
        }
        // A room with a wrong-sized room key or an unknown field is refused.
        var store = KeyStore()
        var room = Self.sampleRoom()
        room.keys["0"] = Base64Key(SymmetricKey(data: [1, 2, 3]))
        store.rooms = [room]
        #expect(throws: KeyStoreError.corrupt("room lobby: bad room key entry")) { try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw") }
        // So is a pending rotation's key or a joining key `J` of another length than 32 bytes.
        for length in [0, 31, 33] {
            var rotating = Self.sampleRoom()
            rotating.pendingRotation = StoredRoom.PendingRotation(epoch: 1, key: Base64Key(SymmetricKey(data: [UInt8](repeating: 7, count: length))))
            store.rooms = [rotating]
            #expect(throws: KeyStoreError.corrupt("room lobby: bad pending rotation")) { try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw") }
            var joining = Self.sampleRoom()
            let invite = InviteLink(room: joining.room, token: RoomPayload.randomBytes(32), owner: joining.owner, server: "ab")
            joining.join = StoredRoom.PendingJoin(invite: invite,
                                                  joiningKey: Base64Key(SymmetricKey(data: [UInt8](repeating: 7, count: length))))
            store.rooms = [joining]
            #expect(throws: KeyStoreError.corrupt("room lobby: bad joining key")) { try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw") }
        }
        var duplicate = KeyStore()
        duplicate.rooms = [Self.sampleRoom(name: "a"), Self.sampleRoom(name: "a")]
        #expect(throws: KeyStoreError.corrupt("a room name appears twice")) {
            try KeyStoreFile.open(try Self.sealed(duplicate), passphrase: "pw")
        }
    }

    /// The outbox keeps lines in the order written, each once, at most `maxOutbox`; it is saved
    /// and read back, and a damaged entry makes the store refuse to open rather than send it.
    @Test func theOutboxIsBoundedOrderedAndReadStrictly() throws {
        var room = Self.sampleRoom()
        func line(_ index: Int, _ text: String = "") -> StoredRoom.QueuedLine {
            StoredRoom.QueuedLine(id: Base64Bytes(Array(repeating: UInt8(index % 256), count: 15) + [UInt8(index / 256)]),
                                  text: text.isEmpty ? "line \(index)" : text, at: Int64(index))
        }
        let queuedAll = room.enqueue(line(1)) && room.enqueue(line(2)) && room.enqueue(line(1))
        #expect(queuedAll)
        #expect(room.outbox?.map(\.text) == ["line 1", "line 2"])
        let shortID = room.enqueue(StoredRoom.QueuedLine(id: Base64Bytes([1]), text: "short id", at: 0))
        let tooLong = room.enqueue(line(3, String(repeating: "x", count: ChatMessage.maxTextLength + 1)))
        #expect(!shortID && !tooLong)
        var store = KeyStore()
        store.rooms = [room]
        #expect(try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw").rooms[0].outbox == room.outbox)
        room.dequeue(id: line(1).id)
        #expect(room.outbox?.map(\.text) == ["line 2"])
        room.dequeue(id: line(2).id)
        #expect(room.outbox == nil)  // written as absent, which older stores are too
        for index in 0..<StoredRoom.maxOutbox { _ = room.enqueue(line(index)) }
        let overFull = room.enqueue(line(StoredRoom.maxOutbox))
        #expect(!overFull)
        #expect(room.outbox?.count == StoredRoom.maxOutbox)

        var damaged = Self.sampleRoom()
        damaged.outbox = [StoredRoom.QueuedLine(id: Base64Bytes([1, 2, 3]), text: "a", at: 0)]
        store.rooms = [damaged]
        #expect(throws: KeyStoreError.corrupt("room lobby: bad outbox")) { try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw") }
        damaged.outbox = [line(1, "")]
        damaged.outbox?[0].text = ""
        store.rooms = [damaged]
        #expect(throws: KeyStoreError.corrupt("room lobby: bad outbox")) { try KeyStoreFile.open(try Self.sealed(store), passphrase: "pw") }
    }

    /// One PBKDF2 per unlock, none per write: every write keeps the sealed store key made when
    /// the store was created (600,000 rounds, in its header), and a store of the first format
    /// still opens and is converted by its next write.
    @Test func writesReuseTheSealedStoreKeyAndOldStoresConvert() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("ks.hush")
        let file = KeyStoreFile(path: path, passphrase: "pw")
        try file.update(create: true) { $0.upsert(Self.sampleRoom(name: "one")) }
        let first = try KeyStoreFile.split(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))).sealedKey
        // The iteration count travels in the passphrase cell's header (little-endian).
        let rounds = withUnsafeBytes(of: KeyStoreFile.passphraseIterations.littleEndian, Array.init)
        #expect(first.indices.contains { first[$0...].starts(with: rounds) })
        try file.update { $0.upsert(Self.sampleRoom(name: "two")) }
        // Another process (another KeyStoreFile) opens it with the passphrase and writes too.
        try KeyStoreFile(path: path, passphrase: "pw").update { $0.upsert(Self.sampleRoom(name: "three")) }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(try KeyStoreFile.split(bytes).sealedKey == first)
        #expect(try KeyStoreFile.open(bytes, passphrase: "pw").rooms.map(\.name) == ["one", "two", "three"])

        // The first format: the JSON in one passphrase cell.
        let legacyPath = folder.path("old.hush")
        var legacyStore = KeyStore()
        legacyStore.rooms = [Self.sampleRoom(name: "old")]
        let json = try JSONEncoder().encode(legacyStore)
        let legacy = KeyStoreFile.legacyMagic
            + (try SecureCell.PassphraseSeal(passphrase: "pw").encrypt(json, context: KeyStoreFile.legacyContext))
        try KeyStoreFile.atomicWrite(legacy, to: legacyPath)
        let old = KeyStoreFile(path: legacyPath, passphrase: "pw")
        #expect(try old.load().rooms.map(\.name) == ["old"])
        #expect(throws: KeyStoreError.wrongPassphrase) { try KeyStoreFile(path: legacyPath, passphrase: "nope").load() }
        try old.update { $0.upsert(Self.sampleRoom(name: "new")) }
        let converted = try [UInt8](Data(contentsOf: URL(fileURLWithPath: legacyPath)))
        #expect(converted.starts(with: KeyStoreFile.magic))
        #expect(try KeyStoreFile.open(converted, passphrase: "pw").rooms.map(\.name) == ["old", "new"])
    }

    @Test func oversizedFilesAreNotRead() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("big.hush")
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: UInt64(KeyStoreFile.maxBytes + 1))  // sparse: nothing is allocated
        try handle.close()
        #expect(throws: KeyStoreError.tooLarge(KeyStoreFile.maxBytes + 1)) { try KeyStoreFile(path: path, passphrase: "pw").load() }
        #expect(throws: KeyStoreError.tooLarge(KeyStoreFile.maxBytes + 1)) {
            try KeyStoreFile.open([UInt8](repeating: 0, count: KeyStoreFile.maxBytes + 1), passphrase: "pw")
        }
    }

    @Test func writesAreAtomicAndLeaveNoTemporaryFiles() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("ks.hush")
        let file = KeyStoreFile(path: path, passphrase: "pw")
        try file.update(create: true) { $0.upsert(Self.sampleRoom(name: "one")) }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        // A change that fails half-way is not written.
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try file.update { store in
                store.upsert(Self.sampleRoom(name: "two"))
                throw Boom()
            }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        for index in 0..<5 { try file.update { $0.upsert(Self.sampleRoom(name: "r\(index)")) } }
        #expect(try file.load().rooms.count == 6)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.url.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
        // The rename target is replaced, never appended to: an old reader's file stays whole.
        #expect(try KeyStoreFile.open([UInt8](before), passphrase: "pw").rooms.map(\.name) == ["one"])
    }

    @Test func absorbingIsMonotoneAcrossWriters() throws {
        var record = Self.sampleRoom()
        var state = try record.roomState()
        let key1 = RoomPayload.newRoomKey()
        state = RoomState(room: state.room, owner: state.owner, me: state.me, epoch: 1, keys: [0: state.keys[0]!, 1: key1],
                          lastSeq: 9, sentCounter: 4, accepted: ["k": [1: 3, 2: 5]])
        record.absorb(state)
        #expect(record.epoch == 1 && record.lastSeq == 9 && record.sentCounter == 4 && record.accepted.count == 2)
        // An older view (another process that saw less) never moves anything back.
        let older = try Self.sampleRoom().roomState()
        let stale = RoomState(room: state.room, owner: state.owner, me: state.me, epoch: 0, keys: [0: state.keys[0]!],
                              lastSeq: 2, sentCounter: 1, accepted: ["k": [1: 3]])
        _ = older
        record.absorb(stale)
        #expect(record.epoch == 1 && record.lastSeq == 9 && record.sentCounter == 4 && record.keys["1"]?.symmetricKey == key1)
        let restored = try record.roomState()
        #expect(restored.sentCounter == 4 && restored.acceptedCounters["k"]?[2] == 5 && restored.keys[1] == key1)
    }

    /// The saved replay table is bounded (PROTOCOL.md §6.1): however many messages a sender
    /// sent, the newest 1024 counters are kept and the rest folded into its floor, which a
    /// restore hands back; a second writer's floor is merged, never lowered.
    @Test func savedReplayTableStaysWithinTheWindow() throws {
        var record = Self.sampleRoom()
        let base = try record.roomState()
        let sent = Dictionary(uniqueKeysWithValues: (1...3000).map { ($0, $0 + 10) })
        let busy = RoomState(room: base.room, owner: base.owner, me: base.me, epoch: 0, keys: base.keys, lastSeq: 3010,
                             sentCounter: 0, accepted: ["k": sent])
        #expect(busy.acceptedCounters["k"]?.count == RoomState.defaultReplayWindow)
        record.absorb(busy)
        let window = RoomState.defaultReplayWindow
        #expect(record.accepted.count == window && record.accepted.map(\.counter).min() == 3000 - window + 1)
        #expect(record.replayFloors == [StoredRoom.StoredReplayFloor(from: "k", counter: 3000 - window, seq: 3000 - window + 10)])
        let restored = try record.roomState()
        #expect(restored.replayFloors["k"] == RoomState.ReplayFloor(counter: 3000 - window, seq: 3000 - window + 10))
        // A writer that saw less never lowers the floor; one that saw more raises it.
        let stale = RoomState(room: base.room, owner: base.owner, me: base.me, epoch: 0, keys: base.keys, lastSeq: 20,
                              sentCounter: 0, accepted: ["k": [1: 11, 2: 12]])
        record.absorb(stale)
        #expect(record.replayFloors?.first?.counter == 3000 - window && record.accepted.count == window)
        let ahead = RoomState(room: base.room, owner: base.owner, me: base.me, epoch: 0, keys: base.keys, lastSeq: 4000,
                              sentCounter: 0, accepted: ["k": [3500: 3600]])
        record.absorb(ahead)
        #expect(record.replayFloors?.first?.counter == 3000 - window + 1 && record.accepted.count == window)
        // The sealed file stays small: about 1024 entries, not one per message ever sent.
        let folder = try TempFolder()
        defer { folder.remove() }
        let file = KeyStoreFile(path: folder.path("bounded.hush"), passphrase: "bounded pass")
        try file.update(create: true) { (store: inout KeyStore) throws in store.upsert(record) }
        #expect(try file.load().find(record.name).accepted.count == window)
    }

    @Test func storePathComesFromFlagThenEnvironmentThenHome() {
        #expect(KeyStoreFile.defaultPath(flag: "/x/a.hush", environment: ["HUSH_STORE": "/y"]) == "/x/a.hush")
        #expect(KeyStoreFile.defaultPath(flag: nil, environment: ["HUSH_STORE": "/y/b.hush", "HOME": "/h"]) == "/y/b.hush")
        #expect(KeyStoreFile.defaultPath(flag: nil, environment: ["HOME": "/h"]) == "/h/.hush/keystore.hush")
    }
}

/// Pure pieces of the terminal: line commands, member lookup, output formats, bench statistics.
@Suite(.timeLimit(.minutes(5))) struct TerminalFormatTests {
    @Test func lineCommands() {
        #expect(LineCommand.parse("hello there") == .say("hello there"))
        #expect(LineCommand.parse("  ") == .empty)
        #expect(LineCommand.parse("/quit") == .quit)
        #expect(LineCommand.parse("/remove 1a2b 3c4d") == .remove("1a2b 3c4d"))
        #expect(LineCommand.parse("/invite") == .invite)
        #expect(LineCommand.parse("/members") == .members)
        #expect(LineCommand.parse("/rotate") == .rotate)
        #expect(LineCommand.parse("/history") == .history)
        #expect(LineCommand.parse("/file  my photo.png ") == .file("my photo.png"))
        #expect(LineCommand.parse("/save 7") == .save(7))
        if case .unknown = LineCommand.parse("/save seven") {} else { Issue.record("/save without a number") }
        #expect(LineCommand.parse("/name  Mary Ann ") == .name("Mary Ann"))
        if case .unknown = LineCommand.parse("/name") {} else { Issue.record("/name without a name") }
        #expect(LineCommand.parse("//not a command") == .say("/not a command"))
        if case .unknown = LineCommand.parse("/remove") {} else { Issue.record("/remove without a member") }
        if case .unknown = LineCommand.parse("/frobnicate") {} else { Issue.record("unknown command") }
    }

    @Test func membersAreFoundByFingerprintPrefix() throws {
        let keys = (0..<3).map { _ in KeyID.json(ThemisPrivateKey().publicKey) }
        let target = keys[1]
        let fingerprint = Format.fingerprint(ofKey: target)
        #expect(LineCommand.resolve(member: String(fingerprint.prefix(14)), among: keys) == .success(target))
        #expect(LineCommand.resolve(member: fingerprint.replacingOccurrences(of: " ", with: "").uppercased(), among: keys) == .success(target))
        #expect(LineCommand.resolve(member: "ab", among: keys) == .failure(.tooShort))
        #expect(LineCommand.resolve(member: "zzzz", among: keys) == .failure(.none))
    }

    @Test func peerTextCannotSteerTheTerminal() {
        #expect(Format.sanitize("hi\u{1B}[2J\rthere\u{202E}") == "hi?[2J?there?")
        #expect(Format.sanitize("plain ünïcode ✓") == "plain ünïcode ✓")
        let key = KeyID.json(ThemisPrivateKey().publicKey)
        let line = Format.line(.chat(seq: 1, from: key, ts: 0, text: "x\u{1B}y"), me: "", timeZone: TimeZone(identifier: "UTC")!)
        #expect(line == "[00:00:00] <\(Format.short(key))> x?y")
        #expect(Format.short(key).count == 8)
        let json = Format.jsonLine(Format.json(.chat(seq: 3, from: key, ts: 5, text: "hé \"q\"")))
        let decoded = try? JSONDecoder().decode(Format.JSONEvent.self, from: Data(json.utf8))
        #expect(decoded?.text == "hé \"q\"" && decoded?.seq == 3 && decoded?.from == Format.fingerprint(ofKey: key))
    }

    @Test func latencyPercentilesAreOrdered() {
        let recorder = LatencyRecorder()
        for value in 1...1000 { recorder.record(microseconds: UInt64(value * 10)) }
        let summary = recorder.summary
        #expect(summary.count == 1000)
        #expect(summary.p50 <= summary.p90 && summary.p90 <= summary.p99 && summary.p99 <= summary.p999 && summary.p999 <= summary.max)
        #expect(abs(summary.p50 - 5.0) < 0.1 && abs(summary.max - 10.0) < 0.1)
        #expect(LatencyRecorder().summary.count == 0)
        var config = BenchConfig(server: "http://127.0.0.1:1")
        config.members = 1
        #expect(throws: ChatError.self) { try config.validate() }
        config.members = 2
        config.verifyEvery = 10
        #expect(throws: ChatError.self) { try config.validate() }  // sealing ahead needs a message count
        config.messages = 100
        #expect(throws: Never.self) { try config.validate() }
        config.serverPID = 0
        #expect(throws: ChatError.self) { try config.validate() }

        // /proc/PID/stat: CPU ticks counted after the command name, which may hold spaces and parentheses.
        let usage = ProcessUsage(stat: "4242 (hush (serve) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1",
                                 status: "Name:\thush\nVmRSS:\t  20480 kB\nThreads:\t4\n", ticksPerSecond: 100)
        #expect(usage == ProcessUsage(cpuSeconds: 3, residentBytes: 20480 * 1024))
        #expect(ProcessUsage(stat: "4242 (hush) S 1 2", status: "VmRSS: 1 kB", ticksPerSecond: 100) == nil)
        #expect(ProcessUsage.current.map { $0.cpuSeconds > 0 && $0.residentBytes > 0 } == true)
    }
}
