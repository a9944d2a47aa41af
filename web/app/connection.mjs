// One WebSocket + Secure Session to the Hush server for one key (docs/PROTOCOL.md §3, §4):
// the pinned server key, requests with replies matched by id, pushes in order, and
// reconnection with exponential backoff. It knows nothing about rooms.
import { SecureSession, clientIdFromPublicKey, publicKeyFromPrivate, constantTimeEqual } from '../themis/index.mjs';

const MAX_FRAME_BYTES = 4 * 1024 * 1024; // PROTOCOL.md §7: the largest history page is about 1.4 MiB
const HANDSHAKE_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];

/**
 * An `error` reply: `code` is the protocol's error code (§5); `epoch`, the room's current epoch,
 * comes with `stale_epoch` and `rotation_pending` (§4.4).
 */
/** The protocol this client speaks (`protocol` of `/.well-known/hush`, docs/PROTOCOL.md §2). */
export const PROTOCOL_VERSION = 2;

/**
 * A JSON value as text; objects and arrays become '' (String() of `{"toString": 0}` would throw
 * a TypeError, and no code or message is an object).
 */
const text = (value) => (value !== null && typeof value === 'object' ? '' : String(value));

export class ServerError extends Error {
  constructor(code, message, epoch) {
    super(message || code);
    this.code = code;
    this.epoch = epoch;
  }

  /** From the server's (hostile) error object: bounded strings, a valid epoch or none. */
  static from(reply) {
    const epoch = Number.isSafeInteger(reply.epoch) && reply.epoch >= 0 ? reply.epoch : undefined;
    return new ServerError(text(reply.code).slice(0, 64), text(reply.message ?? '').slice(0, 300), epoch);
  }
}

export class ConnectionClosed extends Error {
  constructor() { super('not connected to the server'); }
}

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.url ws(s) URL of /ws
   * @param {{id: string, key: Uint8Array}} o.server the pinned server id and key
   * @param {Uint8Array} o.privateKey this connection's room key
   * @param {(push: object) => void} o.onPush pushes, in order
   * @param {() => Promise<void>} o.onOpen runs after each handshake (hello, history)
   * @param {(state: string, detail?: string) => void} o.onState connecting|online|offline|removed
   */
  constructor({ url, server, privateKey, onPush, onOpen, onState }) {
    Object.assign(this, { url, server, privateKey, onPush, onOpen, onState });
    this.clientId = clientIdFromPublicKey(publicKeyFromPrivate(privateKey));
    this.serverId = new TextEncoder().encode(server.id);
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
    this.session = null;
    this.state = 'offline';
    this.retryTimer = null;
  }

  start() {
    this.stopped = false;
    if (!this.ws) this.connect();
  }

  /** Stops for good: no reconnect; pending requests fail. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.ws?.close();
    this.ws = null;
  }

  /** Tries at once when waiting for a retry (e.g. the browser came back online). */
  retryNow() {
    if (this.state === 'offline' && !this.stopped && !this.ws) {
      clearTimeout(this.retryTimer);
      this.connect();
    }
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  async connect() {
    this.setState('connecting');
    let session;
    try {
      session = await SecureSession.client({
        id: this.clientId,
        privateKey: this.privateKey,
        getPublicKey: (id) => (constantTimeEqual(id, this.serverId) ? this.server.key : null),
      });
    } catch {
      this.setState('failed', 'this browser cannot run the key exchange');
      return;
    }
    if (this.stopped) return;
    this.session = session;
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let inbound = Promise.resolve();
    const timer = setTimeout(() => { if (!session.established) ws.close(); }, HANDSHAKE_TIMEOUT_MS);
    ws.onopen = async () => { ws.send(await session.connectRequest()); };
    ws.onmessage = (event) => {
      // Frames are handled strictly one after another: the session and replies keep their order.
      inbound = inbound.then(() => this.frame(ws, session, event.data)).catch(() => ws.close());
    };
    ws.onclose = () => {
      clearTimeout(timer);
      if (this.ws === ws) this.ws = null;
      this.failPending();
      if (this.stopped || this.state === 'removed') return;
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] * (0.8 + Math.random() * 0.4);
      this.attempt += 1;
      this.setState('offline', `retrying in ${Math.round(delay / 1000)} s`);
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  async frame(ws, session, data) {
    if (!(data instanceof ArrayBuffer) || data.byteLength > MAX_FRAME_BYTES) throw new Error('bad frame');
    const wasEstablished = session.established;
    const result = await session.receive(new Uint8Array(data));
    if (result.send) ws.send(result.send);
    if (!wasEstablished) {
      // Not awaited: hello and history need the replies that the next frames carry.
      if (result.established) this.opened();
      return;
    }
    if (!result.plaintext) throw new Error('not a data message');
    let message;
    try { message = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(result.plaintext)); } catch {
      throw new Error('reply is not JSON');
    }
    if (message === null || typeof message !== 'object' || typeof message.type !== 'string') throw new Error('bad reply');
    const waiter = typeof message.id === 'string' ? this.pending.get(message.id) : undefined;
    if (waiter) {
      this.pending.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.type === 'error') waiter.reject(ServerError.from(message));
      else waiter.resolve(message);
    } else if (message.type === 'error' && message.code === 'removed') {
      this.setState('removed');
      this.onPush({ type: 'removed' });
    } else if (message.type !== 'error' && message.id === undefined) {
      this.onPush(message);
    }
  }

  async opened() {
    this.setState('connecting', 'loading');
    try {
      await this.onOpen();
      this.attempt = 0;
      // A room that ended while it loaded (a failed join, say) stopped its connection: not online.
      if (this.state !== 'removed' && !this.stopped) this.setState('online');
    } catch (error) {
      if (error instanceof ServerError && error.code === 'removed') {
        this.setState('removed');
        this.onPush({ type: 'removed' });
      }
      this.ws?.close();
    }
  }

  /** Sends `{type, ...fields}` with a fresh id; resolves with the reply or rejects (ServerError). */
  request(type, fields = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.session?.established) return Promise.reject(new ConnectionClosed());
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('the server did not answer in time'));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      const body = new TextEncoder().encode(JSON.stringify({ ...fields, type, id }));
      this.session.wrap(body).then((frame) => ws.send(frame), (error) => {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  failPending() {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ConnectionClosed());
    }
    this.pending.clear();
  }
}
