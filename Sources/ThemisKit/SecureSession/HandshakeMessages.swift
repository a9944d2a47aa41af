/// The four Secure Session handshake messages (wire format §6.2). Each is one `TSPM` Soter
/// container; these types only encode and split them — signatures and MACs are checked by
/// `SecureSession`, which knows the keys.
///
/// Parsing is stricter than Themis, at no cost with a correct Themis peer:
/// * the `TSPM` size field must equal the message length (Themis allows extra bytes);
/// * every inner container must have size ≥ 12 and lie within the `TSPM` payload (Themis does
///   not bounds-check them);
/// * the signature part of messages 1–3 must be non-empty;
/// * message 4 must carry exactly the 32-byte MAC (Themis accepts any prefix, even 1 byte).
struct HandshakeFrame: Sendable {
    static let tag = "TSPM"
    let payload: [UInt8]

    /// Messages 1 and 2 begin with the sender's `TSID` container; messages 3 and 4 begin with
    /// a DER signature or a MAC. Lets the state machine tell a misplaced step from a broken one.
    var isHello: Bool { payload.starts(with: HandshakeHello.idTag.utf8) }

    init(parsing message: [UInt8]) throws(ThemisError) {
        guard !message.isEmpty else { throw .emptyInput }
        // Tag first: a data message or garbage is "not a handshake message", whatever its
        // would-be size field says.
        guard message.starts(with: Self.tag.utf8) else { throw .unexpectedTag }
        payload = try SoterContainer(parsing: message).payload
    }

    static func serialize(_ payload: [UInt8]) -> [UInt8] {
        SoterContainer(tag: tag, payload: payload).serialized
    }
}

/// Messages 1 (client → server) and 2 (server → client):
/// `TSID(id) ‖ ephemeral UEC2 ‖ DER signature`.
struct HandshakeHello: Sendable {
    static let idTag = "TSID"

    let id: [UInt8]
    /// `containerBytes` keeps the ephemeral key exactly as sent: that is what is signed,
    /// MACed and fed to the KDF.
    let ephemeral: ThemisPublicKey
    let signature: [UInt8]

    init(_ frame: HandshakeFrame) throws(ThemisError) {
        let payload = frame.payload[...]
        let (idContainer, idCount) = try SoterContainer.parsePrefix(payload)
        guard idContainer.hasTag(Self.idTag) else { throw .unexpectedTag }
        guard !idContainer.payload.isEmpty else { throw .emptyInput }
        let rest = payload.dropFirst(idCount)
        let (_, keyCount) = try SoterContainer.parsePrefix(rest)
        ephemeral = try ThemisPublicKey(containerBytes: rest.prefix(keyCount))
        signature = Array(rest.dropFirst(keyCount))
        guard !signature.isEmpty else { throw .truncated }
        id = idContainer.payload
    }

    static func serialize(id: [UInt8], ephemeral: [UInt8], signature: [UInt8]) -> [UInt8] {
        HandshakeFrame.serialize(SoterContainer(tag: idTag, payload: id).serialized + ephemeral + signature)
    }
}

/// Message 3 (client → server): `DER signature ‖ HMAC (32)`.
struct HandshakeClientFinish: Sendable {
    let signature: [UInt8]
    let mac: [UInt8]

    init(_ frame: HandshakeFrame) throws(ThemisError) {
        guard frame.payload.count > HandshakeServerFinish.macCount else { throw .truncated }
        signature = Array(frame.payload.dropLast(HandshakeServerFinish.macCount))
        mac = Array(frame.payload.suffix(HandshakeServerFinish.macCount))
    }

    static func serialize(signature: [UInt8], mac: [UInt8]) -> [UInt8] {
        HandshakeFrame.serialize(signature + mac)
    }
}

/// Message 4 (server → client): the 32-byte HMAC alone.
struct HandshakeServerFinish: Sendable {
    static let macCount = 32
    let mac: [UInt8]

    init(_ frame: HandshakeFrame) throws(ThemisError) {
        guard frame.payload.count >= Self.macCount else { throw .truncated }
        guard frame.payload.count == Self.macCount else { throw .trailingBytes }
        mac = frame.payload
    }

    static func serialize(mac: [UInt8]) -> [UInt8] {
        HandshakeFrame.serialize(mac)
    }
}
