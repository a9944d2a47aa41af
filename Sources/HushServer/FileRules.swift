import HushProtocol

/// What a `file_put` does to the stored records.
public enum ChunkWrite: Sendable, Equatable {
    /// The same bytes are already stored at this index: nothing to write.
    case repeated(FileRecord)
    /// Store `data` at the index (replacing what was there, if anything), then write back the
    /// room (its quota) and the file.
    case store(room: RoomRecord, file: FileRecord)
}

extension ChunkWrite {
    /// The file after the write.
    public var file: FileRecord {
        switch self {
        case .repeated(let file), .store(_, let file): file
        }
    }
}

/// The room core's rules for files (docs/PROTOCOL.md §4.9), pure like the rest of `RoomRules`:
/// who may store a chunk, read a file or attach it, and what that costs.
extension RoomRules {
    /// `file_put` from an authorized key. `file`: the room's file with this id, if any;
    /// `stored`: the chunk already at `index`, if any; `pendingOfKey`: this key's pending files
    /// in the room; `filesInRoom`: all of the room's files.
    public static func putChunk(room: RoomRecord, file: FileRecord?, id: [UInt8], by key: String, chunks: Int, index: Int,
                                data: [UInt8], stored: [UInt8]?, pendingOfKey: Int, filesInRoom: Int, now: Int64,
                                databaseBytes: Int, limits: Limits) throws(HushError) -> ChunkWrite {
        guard (1...limits.maxFileChunks).contains(chunks) else {
            throw HushError(.badRequest, "chunks must be 1–\(limits.maxFileChunks)")
        }
        guard (0..<chunks).contains(index) else { throw HushError(.badRequest, "index must be 0 … chunks − 1") }
        var file = file ?? FileRecord(room: room.id, id: id, uploader: key, chunks: chunks, storedChunks: 0, seq: nil, createdAt: now)
        guard file.uploader == key, file.chunks == chunks else {
            throw HushError(.fileExists, "another file with this id is in the room")
        }
        var cost = data.count + StorageRules.recordOverhead
        if let stored {
            if stored == data { return .repeated(file) }
            guard !file.isComplete, file.seq == nil else {
                throw HushError(.fileExists, "this chunk of a complete file is already stored with other bytes")
            }
            cost = data.count - stored.count
        } else if file.storedChunks == 0 {
            guard pendingOfKey < limits.maxPendingFilesPerKey else {
                throw HushError(.limitReached, "this key has too many files uploaded and not yet sent in this room")
            }
            guard filesInRoom < limits.maxFilesPerRoom else { throw HushError(.limitReached, "the room holds too many files") }
        }
        if cost > 0 { try StorageRules.checkMessage(cost: cost, room: room, databaseBytes: databaseBytes, limits: limits) }
        var room = room
        room.storedBytes += cost
        if stored == nil { file.storedChunks += 1 }
        return .store(room: room, file: file)
    }

    /// `file_get`: a file attached to a message the key may read through `history` (above its
    /// floor and not expired), or a pending file it uploaded. Anything else is `unknown_file`,
    /// whether or not the file exists.
    public static func readableFile(_ file: FileRecord?, room: RoomRecord, member: MemberRecord) throws(HushError) -> FileRecord {
        guard let file else { throw unknownFile }
        if let seq = file.seq {
            guard seq > member.floor, seq > room.expiredThrough else { throw unknownFile }
        } else {
            guard file.uploader == member.key else { throw unknownFile }
        }
        return file
    }

    /// `send` with `files`: each is a pending, complete file of the sender in this room; they
    /// come back attached to `seq`.
    public static func attach(_ files: [FileRecord?], by key: String, seq: Int) throws(HushError) -> [FileRecord] {
        var attached: [FileRecord] = []
        for file in files {
            guard var file, file.uploader == key, file.seq == nil else { throw unknownFile }
            guard file.isComplete else {
                throw HushError(.fileIncomplete, "not every chunk of the file is stored: upload the rest, then send")
            }
            file.seq = seq
            attached.append(file)
        }
        return attached
    }

    /// What deleting a file's chunks gives back to its room's quota.
    public static func fileCost(chunkBytes: Int, chunkCount: Int) -> Int {
        chunkBytes + chunkCount * StorageRules.recordOverhead
    }

    static let unknownFile = HushError(.unknownFile, "no such file for this key")
}
