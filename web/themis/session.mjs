// Secure Session (Themis 0.15 wire format) as a pure, transport-free state machine:
// bytes in -> { send?, plaintext?, established } out. Client and server, plus the
// TSSC saved-state format. Ids are arbitrary non-empty bytes.
//
// Handshake (all TSPM containers; Ceph/Seph = full ephemeral UEC2 containers):
//   1 C->S  TSID(Cid) | Ceph | Sign_C(Ceph)
//   2 S->C  TSID(Sid) | Seph | Sign_S(Seph | Ceph | Sid | Cid)
//   3 C->S  Sign_C(Ceph | Seph | Cid | Sid) | HMAC(MK, Seph | SID)
//   4 S->C  HMAC(MK, Ceph | SID)
// Data: BE32(session id) | IV(16) | GCM(key, nonce = IV[0..12]) of
//       [BE32(len+12) | BE32(seq) | BE64(unix seconds) | message] | tag(16)
//
// Deliberately stricter than Themis (a correct Themis peer never trips these):
//  * message 4 must carry the full 32-byte MAC (Themis compares only the bytes present);
//  * every container must have size >= 12, lie inside its parent, and TSPM messages must
//    have no trailing bytes; ids and signatures must be non-empty;
//  * data messages: no bytes after the GCM tag (surface as authenticationFailed), no empty
//    payloads, length field must match; sequence numbers must be strictly newer than the
//    last accepted one and at most 8 ahead, i.e. seq in (last, last+8] with uint32
//    wrapping (Themis accepts +-8, so replays and reordering; it never sends either);
//  * failed steps never change state; operations on one session are serialized.
import { ThemisError, check } from './errors.mjs';
import {
  concatBytes, constantTimeEqual, readU32BE, readU32LE, readU64BE, requireBytes, u32BE, u64BE,
} from './bytes.mjs';
import { buildContainer, parseContainer, readContainer } from './container.mjs';
import { decodePoint } from './p256.mjs';
import { exportPublicKey, importPrivateKey, importPublicKey, parsePublicKey } from './keys.mjs';
import { ecdh, signDer, verifyDer } from './ec.mjs';
import { soterKdf } from './kdf.mjs';
import { gcmDecrypt, gcmEncrypt, hmacSha256, importGcmKey, randomBytes } from './symmetric.mjs';

const LABEL_SESSION_ID = 'Themis secure session unique identifier';
const LABEL_MASTER_KEY = 'Themis secure session master key';
const LABEL_CLIENT_KEY = 'Themis secure session client key';
const LABEL_SERVER_KEY = 'Themis secure session server key';
const LABEL_CLIENT_SEQ = 'Themis secure session client initial sequence number';
const LABEL_SERVER_SEQ = 'Themis secure session server initial sequence number';
const DATA_OVERHEAD = 52; // 4 sid + 16 IV + 4 length + 4 seq + 8 timestamp + 16 tag
const SEQ_WINDOW = 8;
const TIME_WINDOW = 86400n;
const MAC_LENGTH = 32;

// ---- Pure handshake helpers (exported for tests and cross-implementation tools) ----

/**
 * Parse handshake message 1 or 2: TSPM(TSID(id) | ephemeral UEC2 | DER signature).
 * @param {Uint8Array} message
 * @returns {{id: Uint8Array, ephemeralKey: Uint8Array, signature: Uint8Array}}
 */
export function parseHello(message) {
  requireBytes(message, 'handshake message');
  const { payload } = parseContainer(message, 'TSPM');
  check(payload.length >= 12 && String.fromCharCode(...payload.subarray(0, 4)) === 'TSID', 'badTag', 'TSID container expected');
  const idc = readContainer(payload, 0);
  check(idc.payload.length > 0, 'emptyInput', 'peer id is empty');
  check(payload.length - idc.end >= 12 && String.fromCharCode(...payload.subarray(idc.end, idc.end + 3)) === 'UEC',
    'badTag', 'ephemeral public key container expected');
  const eph = readContainer(payload, idc.end);
  parsePublicKey(eph.bytes);
  const signature = payload.subarray(eph.end);
  check(signature.length > 0, 'badSignature', 'handshake signature missing');
  return { id: idc.payload.slice(), ephemeralKey: eph.bytes.slice(), signature: signature.slice() };
}

/**
 * Parse handshake message 3: TSPM(DER signature | 32-byte MAC).
 * @returns {{signature: Uint8Array, mac: Uint8Array}}
 */
export function parseFinish(message) {
  requireBytes(message, 'handshake message');
  const { payload } = parseContainer(message, 'TSPM');
  check(payload.length > MAC_LENGTH, 'truncated', 'message 3 too short');
  return { signature: payload.slice(0, -MAC_LENGTH), mac: payload.slice(-MAC_LENGTH) };
}

/**
 * Parse handshake message 4: TSPM(32-byte MAC) -- exactly 32 bytes (Themis accepts a prefix).
 * @returns {{mac: Uint8Array}}
 */
export function parseConfirm(message) {
  requireBytes(message, 'handshake message');
  const { payload } = parseContainer(message, 'TSPM');
  check(payload.length === MAC_LENGTH, 'badMAC', 'message 4 must carry a 32-byte MAC');
  return { mac: payload.slice() };
}

/** The data signed in messages 1, 2 and 3. */
export const signedData = {
  hello: (ceph) => ceph,
  reply: (ceph, seph, cid, sid) => concatBytes(seph, ceph, sid, cid),
  finish: (ceph, seph, cid, sid) => concatBytes(ceph, seph, cid, sid),
};

/**
 * The 4 raw session-id bytes: SoterKDF(implicit key, label, [Ceph, Seph, Cid, Sid], 4).
 * On the wire they appear reversed (BE32 of their little-endian value).
 */
export function deriveSessionIdBytes(ceph, seph, cid, sid) {
  return soterKdf(null, LABEL_SESSION_ID, [ceph, seph, cid, sid], 4);
}

/** MK = SoterKDF(raw ECDH X of the ephemeral keys, label, [SID bytes], 32). */
export function deriveMasterKey(sharedSecret, sidBytes) {
  return soterKdf(sharedSecret, LABEL_MASTER_KEY, [sidBytes], 32);
}

/** Handshake MAC: HMAC-SHA256(MK, ephemeral | SID bytes); message 3 uses Seph, message 4 Ceph. */
export function handshakeMac(masterKey, ephemeralKey, sidBytes) {
  return hmacSha256(masterKey, concatBytes(ephemeralKey, sidBytes));
}

/**
 * Message keys and initial sequence numbers (KDF bytes read little-endian).
 * @returns {Promise<{clientKey: Uint8Array, serverKey: Uint8Array, clientSeq: number, serverSeq: number}>}
 */
export async function deriveSessionKeys(masterKey, sidBytes) {
  const ctx = [sidBytes];
  const [clientKey, serverKey, c, s] = await Promise.all([
    soterKdf(masterKey, LABEL_CLIENT_KEY, ctx, 32),
    soterKdf(masterKey, LABEL_SERVER_KEY, ctx, 32),
    soterKdf(masterKey, LABEL_CLIENT_SEQ, ctx, 4),
    soterKdf(masterKey, LABEL_SERVER_SEQ, ctx, 4),
  ]);
  return { clientKey, serverKey, clientSeq: readU32LE(c, 0), serverSeq: readU32LE(s, 0) };
}

// ---- The session object ----

const defaultClock = () => Math.floor(Date.now() / 1000);

/**
 * @typedef {object} SessionOptions
 * @property {Uint8Array} id own id, non-empty (Hush clients: see identity.mjs)
 * @property {Uint8Array} privateKey own long-term REC2 key
 * @property {(peerId: Uint8Array) => (Uint8Array|null|undefined|Promise<Uint8Array|null|undefined>)} getPublicKey
 *   peer long-term UEC2 key by id; null/undefined/throw = unknown peer
 * @property {() => number} [clock] unix time in seconds (default: Date.now)
 * @property {(n: number) => Uint8Array} [random] source of data-message IVs (default: CSPRNG)
 * @property {Uint8Array} [ephemeralPrivateKey] REC2 ephemeral key; ONLY for known-answer tests
 *
 * @typedef {object} ReceiveResult
 * @property {Uint8Array} [send] bytes to deliver to the peer (handshake replies)
 * @property {Uint8Array} [plaintext] decrypted data message
 * @property {boolean} established whether the session is established after this step
 */

export class SecureSession {
  /**
   * Use SecureSession.client / .server / .restore. Public read-only properties:
   * `role` ('client'|'server'), `established`, `peerId`.
   */
  constructor(fields) {
    Object.assign(this, fields);
    this._queue = Promise.resolve();
  }

  /** @param {SessionOptions} options @returns {Promise<SecureSession>} */
  static client(options) { return SecureSession._create('client', options); }

  /** @param {SessionOptions} options @returns {Promise<SecureSession>} */
  static server(options) { return SecureSession._create('server', options); }

  static async _create(role, { id, privateKey, getPublicKey, clock = defaultClock, random = randomBytes, ephemeralPrivateKey } = {}) {
    requireBytes(id, 'id');
    check(id.length > 0, 'emptyInput', 'session id is empty');
    check(typeof getPublicKey === 'function', 'invalidArgument', 'getPublicKey callback required');
    const own = await importPrivateKey(privateKey);
    const eph = ephemeralPrivateKey ? await importPrivateKey(ephemeralPrivateKey) : await generateEphemeral();
    return new SecureSession({
      role, clock, random, getPublicKey,
      ownId: id.slice(), ownSigningKey: own.ecdsa,
      ephemeral: { ecdh: eph.ecdh, container: eph.publicKey },
      state: role === 'client' ? 'idle' : 'accept',
    });
  }

  /**
   * Restore an established session from a Themis TSSC blob (secure_session_save):
   * BE32 session id | BE32 is_client | MK(32) | BE32 out_seq | BE32 in_seq.
   * in_seq is Themis' "last accepted" number, or the peer's initial number when nothing was
   * received yet; both cases look alike when it equals the peer's initial number, in which
   * case that number is accepted once more (a possible single replay, documented).
   * @param {Uint8Array} blob
   * @param {{clock?: () => number, random?: (n: number) => Uint8Array}} [options]
   * @returns {Promise<SecureSession>}
   */
  static async restore(blob, { clock = defaultClock, random = randomBytes } = {}) {
    requireBytes(blob, 'saved state');
    const { payload } = parseContainer(blob, 'TSSC');
    check(payload.length === 48, 'badLength', 'TSSC payload must be 48 bytes');
    const isClient = readU32BE(payload, 4);
    check(isClient <= 1, 'invalidArgument', 'TSSC is_client flag must be 0 or 1');
    const sidBytes = payload.slice(0, 4).reverse();
    const session = new SecureSession({ role: isClient ? 'client' : 'server', clock, random, peerIdBytes: null });
    await session._establish(payload.slice(8, 40), sidBytes);
    session.outSeq = readU32BE(payload, 40);
    const inSeq = readU32BE(payload, 44);
    session.receivedAny = inSeq !== session.peerSeq0;
    session.nextInSeq = session.receivedAny ? (inSeq + 1) >>> 0 : inSeq;
    return session;
  }

  /** True once the handshake completed (or the session was restored). */
  get established() { return this.state === 'established'; }

  /** The peer's id after it was received (null before, and for restored sessions). */
  get peerId() { return this.peerIdBytes ? this.peerIdBytes.slice() : null; }

  /** Run one operation at a time so that concurrent calls cannot interleave state updates. */
  _serial(fn) {
    const run = this._queue.then(fn);
    this._queue = run.catch(() => {});
    return run;
  }

  /**
   * Client only, once: build handshake message 1.
   * @returns {Promise<Uint8Array>}
   */
  connectRequest() {
    return this._serial(async () => {
      check(this.role === 'client' && this.state === 'idle', 'outOfState', 'connectRequest is only valid on a new client');
      const ceph = this.ephemeral.container;
      const signature = await signDer(this.ownSigningKey, signedData.hello(ceph));
      const message = buildContainer('TSPM', concatBytes(buildContainer('TSID', this.ownId), ceph, signature));
      this.state = 'waitReply';
      return message;
    });
  }

  /**
   * Feed one message from the peer: a handshake step or, once established, a data message.
   * Throws ThemisError on any failure and then leaves the session exactly as it was.
   * @param {Uint8Array} message
   * @returns {Promise<ReceiveResult>}
   */
  receive(message) {
    return this._serial(async () => {
      requireBytes(message, 'message');
      check(message.length > 0, 'emptyInput', 'message is empty');
      switch (`${this.role}:${this.state}`) {
        case 'server:accept': return this._serverHello(message);
        case 'client:waitReply': return this._clientReply(message);
        case 'server:waitFinish': return this._serverFinish(message);
        case 'client:waitFinish': return this._clientConfirm(message);
        case 'client:established':
        case 'server:established': return { plaintext: await this._unwrap(message), established: true };
        default: throw new ThemisError('outOfState', `cannot receive in state ${this.state}`);
      }
    });
  }

  async _peerKey(peerId) {
    let key;
    try { key = await this.getPublicKey(peerId.slice()); } catch { key = null; }
    if (!(key instanceof Uint8Array) || key.length === 0) throw new ThemisError('unknownPeer', 'no public key for peer id');
    return importPublicKey(key, 'ECDSA');
  }

  async _masterKey(ceph, seph, cid, sid, peerEphemeral) {
    const sidBytes = await deriveSessionIdBytes(ceph, seph, cid, sid);
    const peer = await importPublicKey(peerEphemeral, 'ECDH');
    const mk = await deriveMasterKey(await ecdh(this.ephemeral.ecdh, peer), sidBytes);
    return { sidBytes, mk };
  }

  async _serverHello(message) {
    const hello = parseHello(message);
    const peerKey = await this._peerKey(hello.id);
    await verifyDer(peerKey, hello.signature, signedData.hello(hello.ephemeralKey));
    const seph = this.ephemeral.container;
    const signature = await signDer(this.ownSigningKey, signedData.reply(hello.ephemeralKey, seph, hello.id, this.ownId));
    const send = buildContainer('TSPM', concatBytes(buildContainer('TSID', this.ownId), seph, signature));
    Object.assign(this, { state: 'waitFinish', peerIdBytes: hello.id, peerKey, ceph: hello.ephemeralKey, seph });
    return { send, established: false };
  }

  async _clientReply(message) {
    const reply = parseHello(message);
    const ceph = this.ephemeral.container;
    const [cid, sid, seph] = [this.ownId, reply.id, reply.ephemeralKey];
    const peerKey = await this._peerKey(sid);
    await verifyDer(peerKey, reply.signature, signedData.reply(ceph, seph, cid, sid));
    const { sidBytes, mk } = await this._masterKey(ceph, seph, cid, sid, seph);
    const signature = await signDer(this.ownSigningKey, signedData.finish(ceph, seph, cid, sid));
    const send = buildContainer('TSPM', concatBytes(signature, await handshakeMac(mk, seph, sidBytes)));
    Object.assign(this, { state: 'waitFinish', peerIdBytes: sid, ceph, seph, pending: { sidBytes, mk } });
    return { send, established: false };
  }

  async _serverFinish(message) {
    const finish = parseFinish(message);
    const { ceph, seph } = this;
    const [cid, sid] = [this.peerIdBytes, this.ownId];
    await verifyDer(this.peerKey, finish.signature, signedData.finish(ceph, seph, cid, sid));
    const { sidBytes, mk } = await this._masterKey(ceph, seph, cid, sid, ceph);
    check(constantTimeEqual(finish.mac, await handshakeMac(mk, seph, sidBytes)), 'badMAC', 'message 3 MAC mismatch');
    const send = buildContainer('TSPM', await handshakeMac(mk, ceph, sidBytes));
    await this._establish(mk, sidBytes);
    return { send, established: true };
  }

  async _clientConfirm(message) {
    const { mac } = parseConfirm(message);
    const { sidBytes, mk } = this.pending;
    check(constantTimeEqual(mac, await handshakeMac(mk, this.ceph, sidBytes)), 'badMAC', 'message 4 MAC mismatch');
    await this._establish(mk, sidBytes);
    return { established: true };
  }

  /** Derive message keys and switch to established; state changes only after all awaits. */
  async _establish(mk, sidBytes) {
    const keys = await deriveSessionKeys(mk, sidBytes);
    const isClient = this.role === 'client';
    const [sendKey, recvKey] = await Promise.all([
      importGcmKey(isClient ? keys.clientKey : keys.serverKey),
      importGcmKey(isClient ? keys.serverKey : keys.clientKey),
    ]);
    const peerSeq0 = isClient ? keys.serverSeq : keys.clientSeq;
    Object.assign(this, {
      state: 'established', mk, wireSid: sidBytes.slice().reverse(), sendKey, recvKey, peerSeq0,
      outSeq: isClient ? keys.clientSeq : keys.serverSeq, nextInSeq: peerSeq0, receivedAny: false,
      pending: undefined, peerKey: undefined, ownSigningKey: undefined, ephemeral: undefined,
    });
  }

  /**
   * Encrypt a data message (session must be established).
   * @param {Uint8Array} message non-empty
   * @returns {Promise<Uint8Array>}
   */
  wrap(message) {
    return this._serial(async () => {
      check(this.established, 'outOfState', 'session not established');
      requireBytes(message, 'message');
      check(message.length > 0, 'emptyInput', 'message is empty');
      check(message.length <= 0xffffffff - 12, 'invalidArgument', 'message too long');
      const iv = this.random(16);
      check(iv instanceof Uint8Array && iv.length === 16, 'invalidArgument', 'random source returned wrong size');
      const plain = concatBytes(u32BE(message.length + 12), u32BE(this.outSeq), u64BE(this._now()), message);
      const sealed = await gcmEncrypt(this.sendKey, iv.subarray(0, 12), plain); // Themis' nonce rule
      this.outSeq = (this.outSeq + 1) >>> 0;
      return concatBytes(this.wireSid, iv, sealed);
    });
  }

  /** The injected clock, validated: whole non-negative unix seconds. */
  _now() {
    const now = Math.floor(this.clock());
    check(Number.isSafeInteger(now) && now >= 0, 'invalidArgument', 'clock returned an invalid time');
    return now;
  }

  async _unwrap(data) {
    check(data.length > DATA_OVERHEAD, 'truncated', 'data message too short');
    check(constantTimeEqual(data.subarray(0, 4), this.wireSid), 'badSessionId', 'data message for another session');
    const plain = await gcmDecrypt(this.recvKey, data.subarray(4, 16), data.subarray(20));
    check(readU32BE(plain, 0) === plain.length - 4, 'badLength', 'data length field mismatch');
    const seq = readU32BE(plain, 4);
    const ahead = (seq - this.nextInSeq) >>> 0;
    check(ahead < 0x80000000, 'replay', 'sequence number already used or too old');
    check(ahead < SEQ_WINDOW, 'sequenceOutOfWindow', 'sequence number too far ahead');
    const ts = readU64BE(plain, 8);
    const now = BigInt(this._now());
    check(ts >= now - TIME_WINDOW && ts <= now + TIME_WINDOW, 'staleTimestamp', 'timestamp outside +-1 day');
    this.nextInSeq = (seq + 1) >>> 0;
    this.receivedAny = true;
    return plain.slice(16);
  }

  /**
   * Save an established session as a Themis TSSC blob (compatible with secure_session_save).
   * The blob contains the master key: protect it like a private key.
   * @returns {Uint8Array}
   */
  save() {
    check(this.established, 'outOfState', 'only established sessions can be saved');
    const inSeq = this.receivedAny ? (this.nextInSeq - 1) >>> 0 : this.nextInSeq;
    return buildContainer('TSSC', concatBytes(this.wireSid, u32BE(this.role === 'client' ? 1 : 0), this.mk,
      u32BE(this.outSeq), u32BE(inSeq)));
  }
}

/** Fresh ephemeral ECDH key pair via WebCrypto; the public half as a compressed UEC2. */
async function generateEphemeral() {
  const subtle = globalThis.crypto.subtle;
  const pair = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  const raw = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  return { ecdh: pair.privateKey, publicKey: exportPublicKey(decodePoint(raw)) };
}
