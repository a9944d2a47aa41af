// A room as this browser lives in it: its connection, its state, its timeline, its outbox, and
// the protocol flows (docs/PROTOCOL.md §4) — hello and history on every (re)connect, the owner's
// automatic join handling and rotations, the joiner's side of a join. Everything a room does
// runs through one queue, so pushes, replies and user actions never interleave. Every tab of
// the browser runs the room; what changes the server (sends, rotations, joins) also holds the
// room's Web Lock, so one tab at a time does it, on the newest stored record.
import { base64ToBytes, bytesToBase64, fingerprint, generateKeyPair } from '../themis/index.mjs';
import { Connection, ConnectionClosed, ServerError } from './connection.mjs';
import { b64, keyBytes, PayloadError } from './formats.mjs';
import {
  FileError, INLINE_TYPES, SEALED_CHUNK_BYTES, MAX_FILE_BYTES, describeFile, sealChunk, openChunk, joinChunks,
} from './files.mjs';
import {
  newRoomState, restoreRoomState, durable, mergeDurable, isOwner, admit, forget, depart, syncMembers, syncFormer,
  compose, composeName, composeFile, canonicalName, nameOf, sharesName, owesName, recordSent, makeRotation, install, receive, parseEnvelope, signRemoval, signLeave,
} from './room.mjs';
import { makeInvite, respondToJoin, confirmJoin, startJoin, acceptGrant, parseInviteList } from './joins.mjs';
import {
  MAX_OUTBOX, newEntry, isNameEntry, isFileEntry, checkOutbox, committedSeq, unsent, nextToSend, needsSeal, failureAction, failureReason, afterStale,
} from './outbox.mjs';

const INVITE_LIFETIME_S = 7 * 24 * 3600;
export const MAX_TEXT_CHARS = 4000;
const HISTORY_PAGE = 100;
const RETRY_MS = 5000;
const STALE_ROUNDS = 3;
const FILE_REQUESTS_IN_FLIGHT = 8; // §4.9: replies stay far below the connection's outgoing queue
const REQUEST_RETRIES = 8; // ≈ 32 s of pauses in all (`retrying`)
/** Images up to this size are fetched as soon as their message is read; larger files on request. */
const AUTO_DOWNLOAD_BYTES = 10 * 1024 * 1024;

/** At most `n` tasks at a time, the others wait in order. */
class Slots {
  constructor(n) { this.free = n; this.waiting = []; }
  async run(task) {
    if (this.free > 0) this.free -= 1;
    else await new Promise((resolve) => this.waiting.push(resolve));
    try { return await task(); } finally {
      const next = this.waiting.shift();
      if (next) next(); else this.free += 1;
    }
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A message from someone (chat or file), as opposed to system lines. */
const isMessage = (item) => item.kind === 'chat' || item.kind === 'file';
/** The Blob type of a file's contents: its own only for the images shown inline, never anything the browser would run. */
const blobType = (file) => (INLINE_TYPES.has(file.type) ? file.type : 'application/octet-stream');

/** The first two groups of a fingerprint, as the timeline shows it beside names. */
const shortFingerprint = (fp) => (fp ? fp.split(' ').slice(0, 2).join(' ') : 'unknown key');

const fingerprints = new Map();
/** The fingerprint of a b64 key, cached ('' when the key is malformed). */
export async function keyFingerprint(keyB64) {
  if (!fingerprints.has(keyB64)) {
    let fp = '';
    try { fp = await fingerprint(keyBytes(keyB64)); } catch { /* shown as unknown */ }
    fingerprints.set(keyB64, fp);
  }
  return fingerprints.get(keyB64);
}
const knownFingerprint = (keyB64) => fingerprints.get(keyB64) ?? '';

/** This room's entry in a `hello` reply, or undefined. */
function roomSummary(hello, id) {
  return (Array.isArray(hello.rooms) ? hello.rooms.slice(0, 256) : []).find((r) => r && r.room === id);
}

const JOIN_ERRORS = {
  // The server deletes an invite once its join completed, was revoked or expired: all read the same.
  unknown_invite: 'This invite is no longer open on the server: it was already used (invites work once), the owner revoked it, or the room was deleted. Ask the owner for a new invite.',
  invite_expired: 'This invite has expired. Ask the owner for a new one.',
  invite_used: 'This invite was already used. Invites work once; ask the owner for a new one.',
  limit_reached: 'The room or the server is full right now. Try again later.',
  already_member: 'This key is already a member of the room.',
  not_found: 'The room does not exist any more.',
};

/**
 * @param {object} app {store, server: {id, key, keyB64, fingerprint, wsUrl, baseUrl, relay, linkRelay},
 *   changed(room), isViewing(room) → bool}
 */
export class RoomClient {
  constructor(app, id, record) {
    this.app = app;
    this.id = id;
    this.record = structuredClone(record);
    this.state = record.state ? restoreRoomState(structuredClone(record.state)) : null;
    this.items = new Map();
    this.localLines = 0;
    this.members = [];
    this.queue = Promise.resolve();
    this.connState = 'offline';
    this.connDetail = '';
    this.wrapRequired = false;
    this.error = '';
    this.errorDismissible = false; // an error the owner may hide (one that needs no action now)
    this.invitesList = null; // the owner's open invites and joins, once asked (listInvites)
    this.marker = null; // the page's "new messages" line goes after this seq (null: none)
    this.heldAt = null; // the epoch at which the server answered rotation_pending
    this.retryTimer = null;
    this.inLock = false;
    this.fileSlots = new Slots(FILE_REQUESTS_IN_FLIGHT); // one budget for every file request of this connection
    this.uploads = new Map(); // local id → {name, size, type, done, total, error, at}: files on their way up
    this.transfers = new Map(); // file id → {done, total, status: 'working'|'ready'|'failed', error, blob}
    const privateKey = base64ToBytes(record.phase === 'joining' ? record.join.privateKey : record.state.privateKey);
    this.connection = new Connection({
      url: app.server.wsUrl,
      server: { id: record.server.id, key: base64ToBytes(record.server.key) },
      privateKey,
      onPush: (push) => this.serial(() => this.push(push)),
      onOpen: () => this.serial(() => this.sync(), { rethrow: true }),
      onState: (state, detail) => { this.connState = state; this.connDetail = detail ?? ''; this.changed(); },
    });
  }

  // ---- creation ----

  /** Owner: makes a key, a connection and a room on the server; resolves with the record. */
  static async create(app, { name, rotateEvery, history = 'rotation' }) {
    const pair = await generateKeyPair();
    const probe = new Connection({
      url: app.server.wsUrl, server: app.server, privateKey: pair.privateKey,
      onPush: () => {}, onOpen: async () => {}, onState: () => {},
    });
    const opened = new Promise((resolve) => { probe.onOpen = async () => resolve(); });
    probe.start();
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('The server cannot be reached.')), 15_000));
    try {
      await Promise.race([opened, timeout]);
      const fields = Number.isSafeInteger(rotateEvery) ? { rotateEvery } : {};
      const reply = await probe.request('create_room', fields);
      if (typeof reply.room !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(reply.room)) throw new Error('bad reply from the server');
      const state = newRoomState({
        room: reply.room, owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0,
        roomKey: crypto.getRandomValues(new Uint8Array(32)),
      });
      return {
        id: reply.room,
        record: {
          name, phase: 'ready', status: 'active', server: { id: app.server.id, key: app.server.keyB64 },
          state: durable(state), invites: {}, outbox: [], lastRead: 0, rotateEvery: reply.rotateEvery, createdAt: Date.now(),
          history: history === 'joined' ? 'joined' : 'rotation',
        },
      };
    } finally {
      probe.stop();
    }
  }

  /** Joiner: the record for a pending join (the `join` request is sent on connect). */
  static async joinRecord(app, invite, name) {
    const { join, joiningKeyBlob } = await startJoin(invite);
    return {
      name, phase: 'joining', status: 'active', server: { id: app.server.id, key: app.server.keyB64 },
      join: { ...join, joiningKeyBlob }, joinSent: false, state: null, invites: {}, outbox: [], lastRead: 0, createdAt: Date.now(),
      history: invite.history,
    };
  }

  // ---- plumbing ----

  start() {
    keyFingerprint(this.myKey).then(() => this.changed());
    if (this.record.status === 'active') this.connection.start();
    else this.connState = this.record.status;
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.connection.stop();
  }

  changed() { this.app.changed(this); }

  serial(fn, { rethrow = false } = {}) {
    const run = this.queue.then(fn);
    this.queue = run.catch((error) => {
      if (!rethrow) this.fail(error);
    });
    return run;
  }

  fail(error) {
    this.errorDismissible = false;
    this.error = error instanceof ServerError ? `The server refused: ${error.message}` : String(error.message ?? error);
    this.changed();
  }

  /**
   * Writes this room's state, merged with what other tabs wrote, and applies `change(record)` to
   * the stored record (the only way this tab changes its record). Resolves false when the room
   * was forgotten in another tab.
   */
  async save(change) {
    const saved = await this.app.store.update(async (data) => {
      const record = data.rooms[this.id];
      if (!record) return null;
      if (this.state) record.state = record.state ? mergeDurable(record.state, durable(this.state)) : structuredClone(durable(this.state));
      if (change) await change(record);
      return record;
    });
    if (saved) this.adopt(saved);
    return Boolean(saved);
  }

  /** Takes the stored record as this room's, keeping what this tab learnt and did not save yet. */
  adopt(record) {
    const lastRead = Math.max(record.lastRead ?? 0, this.record.lastRead ?? 0);
    const wasActive = this.record.status === 'active';
    this.record = { ...structuredClone(record), lastRead };
    if (record.state && this.state) Object.assign(this.state, mergeDurable(record.state, durable(this.state)));
    else if (record.state) this.state = restoreRoomState(structuredClone(record.state));
    if (wasActive && this.record.status !== 'active') {
      this.stop();
      this.connState = this.record.status;
    }
  }

  /** Another tab wrote the store: take this room's newest record, and send what it left unsent. */
  external() {
    return this.serial(async () => {
      const record = this.app.store.data.rooms[this.id];
      if (!record) return;
      const wasJoining = this.record.phase === 'joining';
      this.adopt(record);
      this.changed();
      const online = this.connection.state === 'online';
      if (wasJoining && this.record.phase === 'ready' && this.record.status === 'active' && online) await this.sync();
      else await this.drain();
    });
  }

  /**
   * Runs `fn` holding this room's lock across tabs, on the newest stored record: one tab at a
   * time sends, rotates or answers a join, and sees what the others did before it.
   */
  exclusive(fn) {
    if (this.inLock) return fn();
    return navigator.locks.request(`hush-room:${this.id}`, async () => {
      this.inLock = true;
      try {
        await this.app.store.refresh();
        const record = this.app.store.data.rooms[this.id];
        if (record) this.adopt(record);
        return await fn();
      } finally {
        this.inLock = false;
      }
    });
  }

  get outbox() { return checkOutbox(this.record.outbox); }

  request(type, fields) {
    return this.connection.request(type, { room: this.id, ...fields });
  }

  get isOwner() { return this.state ? isOwner(this.state) : false; }
  /**
   * What this room's new members may read (§6.6): 'rotation', messages since the last key
   * rotation before they joined (also rooms made before this setting), or 'joined', only what
   * comes after.
   */
  get historyForNewMembers() { return this.record.history === 'joined' ? 'joined' : 'rotation'; }
  get myKey() { return this.state ? this.state.me : this.record.join.publicKey; }

  /**
   * The name `key` gave itself in this room (§6.7), or null, and whether another key of the room
   * holds the same name. Shown beside the fingerprint, never instead of it.
   */
  displayName(key) {
    if (!this.state) return { name: null, same: false };
    return { name: nameOf(this.state, key), same: sharesName(this.state, key) };
  }

  /** Timeline items in order, each with a stable `key`: what the server holds, then this room's unsent messages. */
  timeline() {
    const held = this.state && this.heldAt === this.state.epoch;
    const me = { own: true, role: 'you', fp: knownFingerprint(this.myKey) };
    const waiting = (this.state ? unsent(this.outbox, this.state) : []).map((entry) => ({
      key: `o${entry.id}`, kind: isFileEntry(entry) ? 'file' : 'chat', id: entry.id, ...me, text: entry.text, ts: entry.at,
      status: entry.failed !== null ? 'failed' : held ? 'held' : this.connState === 'online' ? 'pending' : 'offline',
      reason: entry.failed, ...(isNameEntry(entry) ? { naming: true } : this.displayName(this.myKey)),
      ...(isFileEntry(entry) ? { file: entry.file, transfer: this.transferOf(entry.file.id) } : {}),
    }));
    const uploading = [...this.uploads].map(([id, u]) => ({
      key: `u${id}`, kind: 'file', id, ...me, ts: u.at, ...this.displayName(this.myKey),
      file: { name: u.name, size: u.size, type: u.type }, status: u.error ? 'failed' : 'uploading', reason: u.error,
      progress: { done: u.done, total: u.total },
    }));
    const stored = [...this.items].map(([key, item]) => ({
      ...item, key, verified: isMessage(item) && !item.own && this.isVerified(item.from),
      ...(isMessage(item) ? this.displayName(item.from) : {}),
      ...(item.kind === 'file' ? { transfer: this.transferOf(item.file.id) } : {}),
    }));
    return [...stored.sort((a, b) => a.seq - b.seq || a.n - b.n), ...waiting, ...uploading];
  }

  /** A file's transfer as the page shows it (no Blob: the page asks `fileBlob`). */
  transferOf(fileId) {
    const t = this.transfers.get(fileId);
    return t ? { done: t.done, total: t.total, status: t.status, error: t.error } : null;
  }

  unread() {
    let count = 0;
    for (const item of this.items.values()) if (isMessage(item) && !item.own && item.seq > this.record.lastRead) count += 1;
    return count;
  }

  markRead() {
    const last = this.state?.lastSeq ?? 0;
    if (last > this.record.lastRead) {
      this.record.lastRead = last; // a local read mark, not a change of the record: shown at once
      this.save((record) => { record.lastRead = Math.max(record.lastRead ?? 0, last); }).catch((error) => this.fail(error));
    }
  }

  /** A system line (joins, removals, …) after what is shown now. */
  line(text, tone = 'info') {
    this.localLines += 1;
    this.items.set(`l${this.localLines}`, { kind: 'system', seq: this.state?.lastSeq ?? 0, n: this.localLines, text, tone, at: Date.now() });
  }

  async addEvent(event) {
    if (event.type === 'duplicate') return;
    const base = { seq: event.seq, n: 0, at: event.at };
    if (event.type === 'chat') {
      this.items.set(`s${event.seq}`, { ...base, kind: 'chat', from: event.from, own: event.own, text: event.text, ts: event.ts,
        role: this.roleOf(event.from), fp: await keyFingerprint(event.from), status: event.own ? 'sent' : null });
    } else if (event.type === 'file') {
      this.items.set(`s${event.seq}`, { ...base, kind: 'file', from: event.from, own: event.own, file: event.file, ts: event.ts,
        role: this.roleOf(event.from), fp: await keyFingerprint(event.from), status: event.own ? 'sent' : null });
      if (INLINE_TYPES.has(event.file.type) && event.file.size <= AUTO_DOWNLOAD_BYTES) {
        this.download(event.file).catch(() => { /* kept in the transfer, shown on the message */ });
      }
    } else if (event.type === 'name') {
      // Only a name now in force that differs from the one before is news.
      if (!event.inForce || event.previous === event.name) return;
      const who = shortFingerprint(await keyFingerprint(event.from));
      const text = event.previous === null
        ? `${event.own ? 'You' : who} set the name “${event.name}”`
        : `${event.own ? 'You' : `“${event.previous}” (${who})`} ${event.own ? 'are' : 'is'} now called “${event.name}”`;
      this.items.set(`s${event.seq}`, { ...base, kind: 'system', tone: 'naming', text, from: event.from });
    } else if (event.type === 'rotation') {
      this.items.set(`s${event.seq}`, { ...base, kind: 'system', tone: 'rotation', text: `Room key rotated (epoch ${event.epoch})` });
      this.serial(() => this.drain()); // a new epoch: what waited for it can go
    } else {
      this.items.set(`s${event.seq}`, { ...base, kind: 'rejected', from: event.from, reason: event.reason,
        fp: event.from ? await keyFingerprint(event.from) : '' });
    }
  }

  roleOf(key) {
    if (key === this.myKey) return 'you';
    if (key === this.state?.owner) return 'owner';
    return 'member';
  }

  async refreshMembers() {
    if (!this.state) return;
    const keys = [this.state.owner, ...Object.keys(this.state.members)];
    this.members = await Promise.all(keys.map(async (key) => ({ key, role: this.roleOf(key), owner: key === this.state.owner, fp: await keyFingerprint(key) })));
  }

  // ---- (re)connect ----

  async sync() {
    if (this.record.phase === 'joining') {
      // In the lock: another tab may be sending this very join, or have completed it.
      const joining = await this.exclusive(async () => {
        if (this.record.phase !== 'joining') return false;
        await this.syncJoin();
        return true;
      });
      if (joining) return;
    }
    const hello = await this.connection.request('hello');
    const summary = roomSummary(hello, this.id);
    if (!summary) return this.ended('deleted', 'This room no longer exists: the owner deleted it.');
    if (summary.owner !== this.state.owner) throw new Error('The server reports another owner for this room; refusing it.');
    await syncFormer(this.state, summary.formerMembers);
    await syncMembers(this.state, summary.members);
    this.wrapRequired = summary.wrapRequired === true;
    await this.refreshMembers();
    await this.history();
    const now = Date.now() / 1000;
    await this.save((record) => {
      for (const [id, invite] of Object.entries(record.invites)) if (invite.expiresAt < now) delete record.invites[id];
    });
    this.error = '';
    this.changed();
    // After this job (the connection is online by then): a rotation owed, then the outbox.
    if (this.wrapRequired) this.serial(() => this.rotateIfOwed());
    this.serial(() => this.drain());
  }

  async history() {
    let after = this.state.lastSeq;
    for (;;) {
      const reply = await this.request('history', { after, limit: HISTORY_PAGE });
      const messages = Array.isArray(reply.messages) ? reply.messages.slice(0, HISTORY_PAGE) : [];
      for (const raw of messages) {
        const env = parseEnvelope(this.state, raw);
        if (!env || env.seq <= after) continue;
        after = env.seq;
        await this.addEvent(await receive(this.state, env));
      }
      if (reply.more !== true || messages.length === 0) break;
    }
  }

  async syncJoin() {
    const hello = await this.connection.request('hello');
    const summary = roomSummary(hello, this.id);
    const join = this.record.join;
    if (summary && this.state) {
      const mine = (Array.isArray(summary.members) ? summary.members : []).find((m) => m && m.key === join.publicKey);
      if (mine) return this.joined(mine.signature);
    }
    const open = (Array.isArray(hello.joins) ? hello.joins : []).find((j) => j && j.room === this.id && j.inviteId === join.inviteId);
    if (open) return this.changed(); // the server pushes the owner's response, if any, after hello
    if (this.record.joinSent) return this.ended('failed', 'The join was not completed: the invite is no longer open.');
    try {
      await this.request('join', { inviteId: join.inviteId, joiningKey: join.joiningKeyBlob });
    } catch (error) {
      if (error instanceof ServerError && JOIN_ERRORS[error.code]) return this.ended('failed', JOIN_ERRORS[error.code]);
      throw error;
    }
    await this.save((record) => { record.joinSent = true; });
    this.changed();
  }

  async joined(signature) {
    if (!await admit(this.state, this.state.me, signature)) throw new Error('The owner’s membership signature does not verify.');
    await this.save((record) => {
      record.phase = 'ready';
      delete record.join;
      delete record.joinSent;
    });
    this.line('You joined the room.', 'join');
    await this.sync();
  }

  async ended(status, text) {
    this.connection.stop();
    this.connState = status;
    this.line(text, 'warning');
    await this.save((record) => {
      record.status = status;
      record.statusText = text;
    });
    this.changed();
  }

  // ---- pushes ----

  async push(push) {
    switch (push.type) {
      case 'message': {
        if (!this.state || this.record.phase !== 'ready') return;
        const env = parseEnvelope(this.state, push);
        if (!env) return;
        const event = await receive(this.state, env);
        // Any rotation the server took ends the one owed after a departure (pushes come in order).
        if (event.type === 'rotation') this.wrapRequired = false;
        await this.addEvent(event);
        if (this.app.isViewing(this)) this.markRead();
        if ((event.type === 'chat' || event.type === 'file') && !event.own) this.app.notify(this, event);
        break;
      }
      case 'member_joined': {
        if (push.room !== this.id || !this.state) return;
        if (this.record.phase === 'joining' && push.key === this.state.me) return this.joined(push.signature);
        if (await admit(this.state, push.key, push.signature)) {
          this.line(`A new member joined: ${await keyFingerprint(push.key)}`, 'join');
          await this.refreshMembers();
          await this.save();
          await this.announceName();
        }
        break;
      }
      case 'member_left':
      case 'member_removed': {
        if (push.room !== this.id || !this.state || typeof push.key !== 'string' || !Object.hasOwn(this.state.members, push.key)) return;
        // The server no longer relays that key either way; the signature tells whether the
        // departure is really the member's own (leave) or the owner's (removal).
        const departure = push.type === 'member_left' ? 'left' : 'removed';
        const verified = await depart(this.state, push.key, { departure, signature: push.signature, until: push.until });
        this.wrapRequired = true;
        const fp = await keyFingerprint(push.key);
        if (!verified) this.line(`A member is gone, but the departure does not verify: ${fp}`, 'warning');
        else this.line(departure === 'left' ? `A member left: ${fp}` : `The owner removed a member: ${fp}`, 'removal');
        await this.refreshMembers();
        await this.save();
        await this.rotateIfOwed();
        break;
      }
      case 'rotation_due':
        if (push.room === this.id && this.isOwner && this.record.status === 'active') await this.rotate();
        break;
      case 'removed':
        await this.ended('removed', 'You were removed from this room. You cannot read new messages.');
        break;
      case 'room_deleted':
        if (push.room === this.id) await this.ended('deleted', 'The owner deleted this room.');
        break;
      case 'join_request':
        if (push.room === this.id && this.isOwner) await this.answerJoin(push);
        break;
      case 'join_confirm':
        if (push.room === this.id && this.isOwner) await this.admitJoin(push);
        break;
      case 'join_response':
        if (push.room === this.id && this.record.phase === 'joining') await this.acceptResponse(push);
        break;
      case 'join_revoked':
        if (push.room === this.id && this.record.phase === 'joining' && push.inviteId === this.record.join.inviteId) {
          // The owner's page also revokes a join it cannot read: one whose link carried another owner key.
          await this.ended('revoked', 'The owner ended this join: they revoked the invite, or their page could not read your request, which happens when the link was altered on the way (its owner key is not the room owner’s). Ask the owner for a new link, through a channel you trust.');
        }
        break;
      default:
        return;
    }
    // The owner looks at the open invites: a join moved on, so the list did too.
    if (this.invitesList && this.isOwner && ['join_request', 'join_confirm', 'member_joined'].includes(push.type)) {
      this.listInvites().catch((error) => this.fail(error));
    }
    this.changed();
  }

  answerJoin({ inviteId, key, joiningKey }) {
    return this.exclusive(async () => {
      const invite = this.record.invites[inviteId];
      if (!invite || typeof key !== 'string') return;
      // Every tab of the owner hears the request; one that answered at this epoch is enough.
      if (invite.answered && invite.joiner === key && invite.epoch === this.state.epoch) return;
      // New members read only what is sent after they are let in (§6.6 `history`): a fresh key
      // before the first answer to this joiner, so it never holds one that sealed earlier messages.
      if (this.historyForNewMembers === 'joined' && invite.joiner !== key) await this.rotateNow(false);
      let answer;
      try {
        answer = await respondToJoin(this.state, invite, { joiner: key, joiningKey });
      } catch (error) {
        if (!(error instanceof PayloadError) || invite.joiningKey) throw error;
        return this.refuseJoin(inviteId, key);
      }
      const { sealed, remember } = answer;
      const kept = (record) => record.invites[inviteId];
      await this.save((record) => { if (kept(record)) Object.assign(kept(record), remember, { answered: false }); });
      await this.retrying('join_response', { inviteId, sealed });
      await this.save((record) => { if (kept(record)) kept(record).answered = true; });
      this.line(`Someone is joining with an invite (${await keyFingerprint(key)})…`, 'join');
    });
  }

  /**
   * Owner: a join request this key cannot read (its joining key was not encrypted to this room's
   * owner key: the link's owner key was altered) can never complete. Its invite is revoked, so
   * the joiner hears `join_revoked` instead of waiting, and the owner is told.
   */
  async refuseJoin(inviteId, key) {
    try {
      await this.request('revoke_invite', { inviteId });
    } catch (error) {
      if (!(error instanceof ServerError && error.code === 'unknown_invite')) throw error;
    }
    await this.save((record) => { delete record.invites[inviteId]; });
    this.error = `A join request (${await keyFingerprint(key)}) could not be read: the invite link it came from was altered (its owner key is not yours). That invite is revoked; make a new one and send it through a channel you trust.`;
    this.errorDismissible = true;
    this.invitesList = null;
  }

  admitJoin({ inviteId, key, sealed }) {
    return this.exclusive(async () => {
      const invite = this.record.invites[inviteId];
      if (!invite || invite.joiner !== key) return; // unknown, or admitted by another tab
      if (invite.epoch !== this.state.epoch) return this.answerJoin({ inviteId, key }); // rotated meanwhile
      const signature = await confirmJoin(this.state, invite, { joiner: key, sealed });
      if (!signature) {
        this.line('A join confirmation did not verify; the joiner was not admitted.', 'warning');
        return;
      }
      try {
        await this.retrying('add_member', { inviteId, key, signature });
      } catch (error) {
        if (error instanceof ServerError && error.code === 'epoch_changed') return this.answerJoin({ inviteId, key });
        throw error;
      }
      await admit(this.state, key, signature);
      await this.save((record) => { delete record.invites[inviteId]; });
      await this.refreshMembers();
      await this.announceName();
    });
  }

  /**
   * A member was admitted: it reads history only from the last rotation before it joined (§4.7),
   * so this key's name goes out again when its message was sealed under an older epoch (§6.7),
   * and the new member sees who is who (the owner who let them in included).
   */
  async announceName() {
    const mine = nameOf(this.state, this.state.me);
    if (mine !== null && owesName(this.state)) await this.enqueue(mine, 'name');
  }

  async acceptResponse({ inviteId, sealed }) {
    if (inviteId !== this.record.join.inviteId) return;
    const { state, confirmation } = await acceptGrant(this.record.join, sealed);
    this.state = state;
    await this.save();
    try {
      await this.request('join_confirm', { inviteId, sealed: confirmation });
    } catch (error) {
      // Another tab of this key confirmed first.
      if (!(error instanceof ServerError && error.code === 'no_pending_join')) throw error;
    }
  }

  // ---- actions ----

  rotate() {
    return this.exclusive(() => this.rotateNow(false));
  }

  /** Owner: after a departure the server refuses every send until a wrapped rotation (§4.4): make it. */
  async rotateIfOwed() {
    if (this.isOwner && this.wrapRequired && this.record.status === 'active' && this.record.phase === 'ready') await this.rotate();
  }

  async rotateNow(retried) {
    const recipients = this.wrapRequired ? Object.keys(this.state.members) : null;
    const rotation = await makeRotation(this.state, recipients);
    // Write-ahead: the new key is in the store before the request that makes it the room's.
    const pending = { epoch: rotation.epoch, key: bytesToBase64(rotation.key) };
    await this.save((record) => { record.state.pendingRotation = pending; });
    let reply;
    try {
      reply = await this.request('rotate', rotation.wraps ? { epoch: rotation.epoch, wraps: rotation.wraps }
        : { epoch: rotation.epoch, payload: rotation.payload });
    } catch (error) {
      if (error instanceof ServerError) { // refused: that key never became the room's
        await this.save((record) => { if (record.state.pendingRotation?.key === pending.key) record.state.pendingRotation = null; });
      }
      if (!retried && error instanceof ServerError && error.code === 'wraps_required') {
        this.wrapRequired = true;
        return this.rotateNow(true);
      }
      if (error instanceof ServerError && error.code === 'epoch_mismatch') {
        // Another window of this owner rotated first: catch up (members, and that rotation
        // through history); rotate again only if the room still needs a wrapped rotation.
        this.line('The room key was rotated elsewhere; catching up.', 'rotation');
        await this.sync();
        if (!retried && this.wrapRequired) return this.rotateNow(true);
        return;
      }
      throw error;
    }
    install(this.state, rotation);
    this.wrapRequired = false;
    if (Number.isSafeInteger(reply.seq) && reply.seq > 0) {
      this.state.lastSeq = Math.max(this.state.lastSeq, reply.seq);
      await this.addEvent({ type: 'rotation', seq: reply.seq, at: Date.now(), epoch: rotation.epoch });
    }
    await this.save(); // the merge drops the pending rotation: its epoch key is installed
  }

  // ---- the outbox ----

  /** Keeps `text` in this room's outbox (in the store) and starts sending it; `kind` 'name' or 'file' (with `file`). */
  async enqueue(text, kind = 'chat', file = undefined) {
    const entry = newEntry(text, Date.now(), kind, file);
    const kept = await this.save((record) => {
      const outbox = checkOutbox(record.outbox);
      if (outbox.length >= MAX_OUTBOX) throw new Error(`${MAX_OUTBOX} messages already wait to be sent in this room`);
      record.outbox = [...outbox, entry];
    });
    if (!kept) throw new Error('this room was closed in another tab');
    this.changed();
    this.serial(() => this.drain());
  }

  /**
   * Sets (or changes) my name in this room (§6.7): the name rule first (throws when it refuses
   * the name), then out through the outbox like a message.
   */
  async setName(input) {
    const name = canonicalName(input);
    if (name === null) throw new Error('a name has 1 to 64 characters, without control or direction-changing characters');
    await this.enqueue(name, 'name');
    return name;
  }

  /** Drops an unsent message that the server refused for good. */
  async discard(id) {
    await this.save((record) => { record.outbox = checkOutbox(record.outbox).filter((e) => e.id !== id || e.failed === null); });
    this.changed();
  }

  /** Sends the outbox in order, one message at a time, while the server takes them. */
  async drain() {
    if (!this.state || this.record.phase !== 'ready' || this.record.status !== 'active') return;
    if (!nextToSend(this.outbox, this.state) || this.connection.state === 'offline') return;
    clearTimeout(this.retryTimer);
    await this.exclusive(async () => {
      await this.dropCommitted();
      let staleRounds = 0;
      let rotated = false;
      for (;;) {
        const entry = nextToSend(this.outbox, this.state);
        if (!entry || this.heldAt === this.state.epoch || this.record.status !== 'active') return;
        const outcome = await this.sendEntry(entry);
        if (outcome.action === 'sent') continue;
        if (outcome.action === 'retry') {
          if (!(outcome.error instanceof ConnectionClosed)) this.retryTimer = setTimeout(() => this.serial(() => this.drain()), RETRY_MS);
          return; // a reconnect drains again
        }
        if (outcome.action === 'reseal' && staleRounds < STALE_ROUNDS) {
          staleRounds += 1;
          let next = afterStale(entry, this.state, outcome.error.epoch, false);
          if (next === 'catch-up') {
            await this.history(); // reads the rotation this tab missed
            next = afterStale(entry, this.state, outcome.error.epoch, true);
          }
          if (next === 'reseal') continue;
        }
        if (outcome.action === 'reseal' || outcome.action === 'hold') {
          // A departure owes the room a wrapped rotation: the owner makes it; members wait for it.
          if (outcome.action === 'hold' && this.isOwner && !rotated) {
            rotated = true;
            this.wrapRequired = true;
            await this.rotateNow(false);
            continue;
          }
          this.heldAt = this.state.epoch;
          this.changed();
          return;
        }
        if (outcome.action === 'failed') {
          const reason = failureReason(outcome.error.code, outcome.error.message);
          await this.save((record) => {
            const stored = checkOutbox(record.outbox);
            for (const e of stored) if (e.id === entry.id) e.failed = reason;
            record.outbox = stored;
          });
          this.changed();
          continue;
        }
        return; // 'ended': the server closes this key's connection and says why
      }
    });
  }

  /** Entries that history shows the server committed (a reply lost to a crash or a cut). */
  async dropCommitted() {
    const done = new Set(this.outbox.filter((e) => committedSeq(e, this.state) !== undefined).map((e) => e.id));
    if (done.size) await this.save((record) => { record.outbox = checkOutbox(record.outbox).filter((e) => !done.has(e.id)); });
  }

  async sendEntry(entry) {
    let sealed = entry.sealed;
    if (needsSeal(entry, this.state)) {
      sealed = await this.seal(entry);
      if (!sealed) return { action: 'sent' }; // gone from the store: sent or discarded in another tab
    }
    let reply;
    try {
      // A file message names its file every time, resends included (§4.9).
      const files = isFileEntry(entry) ? { files: [entry.file.id] } : {};
      reply = await this.request('send', { payload: sealed.payload, epoch: sealed.epoch, messageId: entry.id, ...files });
    } catch (error) {
      return { action: failureAction(error instanceof ServerError ? error.code : undefined), error };
    }
    if (!Number.isSafeInteger(reply.seq) || reply.seq < 1) return { action: 'retry', error: new Error('bad reply from the server') };
    this.heldAt = null;
    if (isNameEntry(entry)) {
      const previous = nameOf(this.state, this.state.me);
      recordSent(this.state, sealed.counter, reply.seq, entry.text, sealed.epoch);
      await this.addEvent({ type: 'name', seq: reply.seq, at: Date.now(), from: this.state.me, own: true, name: entry.text, previous, inForce: true });
    } else if (isFileEntry(entry)) {
      recordSent(this.state, sealed.counter, reply.seq);
      await this.addEvent({ type: 'file', seq: reply.seq, at: Date.now(), from: this.state.me, own: true, file: entry.file, ts: sealed.ts });
    } else {
      recordSent(this.state, sealed.counter, reply.seq);
      await this.addEvent({ type: 'chat', seq: reply.seq, at: Date.now(), from: this.state.me, own: true, text: entry.text, ts: sealed.ts });
    }
    await this.save((record) => { record.outbox = checkOutbox(record.outbox).filter((e) => e.id !== entry.id); });
    this.markRead();
    this.changed();
    return { action: 'sent' };
  }

  /**
   * Seals an entry under the current epoch with the next counter. Both are written to the store
   * in the same change, before the request leaves: the counter never repeats, across tabs too.
   */
  async seal(entry) {
    let sealed = null;
    await this.save(async (record) => {
      const stored = checkOutbox(record.outbox);
      const target = stored.find((e) => e.id === entry.id);
      if (!target) return;
      const now = Date.now();
      const made = isNameEntry(target) ? await composeName(record.state, target.text, now)
        : isFileEntry(target) ? await composeFile(record.state, target.file, now) : await compose(record.state, target.text, now);
      target.sealed = { epoch: made.epoch, counter: made.counter, ts: now, payload: made.payload };
      record.outbox = stored;
      sealed = target.sealed;
    });
    return sealed;
  }

  // ---- files (§4.9, §6.8) ----

  /**
   * A request that may be made again: `file_put` and `file_get`, and the owner's `join_response`
   * and `add_member` (a refused request did nothing). `rate_limited` is waited out with growing
   * pauses and the request made again, so a burst of joins or chunks goes through the
   * connection's budget; so is a cut connection for a file request (a join is answered again
   * from the next `hello`, which lists it).
   */
  async retrying(type, fields) {
    const isFileRequest = type === 'file_put' || type === 'file_get';
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.request(type, fields);
      } catch (error) {
        const transient = (error instanceof ServerError && error.code === 'rate_limited') ||
          (isFileRequest && error instanceof ConnectionClosed);
        if (!transient || attempt >= REQUEST_RETRIES || this.record.status !== 'active') throw error;
        await pause(Math.min(8000, 250 * 2 ** attempt));
      }
    }
  }

  /**
   * Runs `task(i)` for i in 0 … count−1 holding a slot of this connection's file budget (so all
   * transfers of the room together keep at most 8 requests in flight); the first failure stops the rest.
   */
  async eachChunk(count, task) {
    let failed = null;
    await Promise.all(Array.from({ length: count }, (_, i) => this.fileSlots.run(async () => {
      if (failed) return;
      try { await task(i); } catch (error) { failed ??= error; }
    })));
    if (failed) throw failed;
  }

  /**
   * Sends a file: its chunks first (shown with their progress), then its file message through
   * the outbox like any message. `preview`: JPEG bytes or null (main.mjs makes it).
   */
  async sendFile({ bytes, name, type, preview = null }) {
    if (bytes.length > MAX_FILE_BYTES) throw new Error('a file has at most 25 MiB');
    const file = await describeFile(bytes, { name, type, preview });
    const upload = { name: file.name, size: file.size, type: file.type, done: 0, total: file.chunks, error: null, at: Date.now() };
    this.uploads.set(file.id, upload);
    this.changed();
    try {
      await this.eachChunk(file.chunks, async (index) => {
        const data = bytesToBase64(await sealChunk(file, this.id, bytes, index));
        await this.retrying('file_put', { file: file.id, chunks: file.chunks, index, data });
        upload.done += 1;
        this.changed();
      });
    } catch (error) {
      upload.error = error instanceof ServerError ? failureReason(error.code, error.message) : String(error.message ?? error);
      this.changed();
      return;
    }
    // The sender's own copy is shown at once; nobody needs to fetch it back.
    this.transfers.set(file.id, { done: file.chunks, total: file.chunks, status: 'ready', error: null, blob: new Blob([bytes], { type: blobType(file) }) });
    this.uploads.delete(file.id);
    await this.enqueue(file.name, 'file', file);
    // The server holds 4 pending files per key: the next file uploads once this one's message went.
    await this.queue;
  }

  /**
   * Fetches, opens and checks a file (§6.8, "Reading a file") once; resolves when it is ready or
   * failed (the transfer says which, and why). Nothing is kept unless every check passed.
   */
  download(file) {
    const known = this.transfers.get(file.id);
    if (known && known.status !== 'failed') return known.promise ?? Promise.resolve();
    const transfer = { done: 0, total: file.chunks, status: 'working', error: null, blob: null };
    this.transfers.set(file.id, transfer);
    this.changed();
    transfer.promise = (async () => {
      const opened = new Array(file.chunks);
      try {
        await this.eachChunk(file.chunks, async (index) => {
          let reply;
          try {
            reply = await this.retrying('file_get', { file: file.id, index });
          } catch (error) {
            if (error instanceof ServerError && error.code === 'unknown_file') {
              throw new FileError('missing', `part ${index + 1} of ${file.chunks} is not on the server (deleted, or never uploaded)`);
            }
            throw error;
          }
          // The count is the message's, never the server's (§6.8).
          if (reply.file !== file.id || reply.index !== index || reply.chunks !== file.chunks) {
            throw new FileError('malformed', 'the server answered with another file or part');
          }
          let sealed;
          try { sealed = b64(reply.data, SEALED_CHUNK_BYTES); } catch { throw new FileError('length', `part ${index + 1} of ${file.chunks} is not a sealed part`); }
          opened[index] = await openChunk(file, this.id, index, sealed);
          transfer.done += 1;
          this.changed();
        });
        const bytes = await joinChunks(file, opened);
        transfer.blob = new Blob([bytes], { type: blobType(file) });
        transfer.status = 'ready';
      } catch (error) {
        transfer.status = 'failed';
        transfer.error = error instanceof FileError || error instanceof ServerError
          ? error.message : `the file could not be fetched: ${String(error.message ?? error)}`;
      }
      this.changed();
    })();
    return transfer.promise;
  }

  /** The checked contents of a downloaded (or own) file, or null. */
  fileBlob(fileId) {
    const t = this.transfers.get(fileId);
    return t?.status === 'ready' ? t.blob : null;
  }

  /** Forgets an upload that failed (its chunks, if any, are swept by the server after a day). */
  dismissUpload(id) {
    if (this.uploads.get(id)?.error) this.uploads.delete(id);
    this.changed();
  }

  invite() {
    return this.serial(async () => {
      // The invite proposes this room's name and says the owner's (§6.6): the joiner sees who invited them.
      const made = await makeInvite(this.state, {
        baseUrl: this.app.server.baseUrl, relay: this.app.server.linkRelay, serverFingerprint: this.app.server.fingerprint,
        roomName: canonicalName(this.record.name), ownerName: nameOf(this.state, this.state.me), history: this.historyForNewMembers,
      });
      const expiresAt = Math.floor(Date.now() / 1000) + INVITE_LIFETIME_S;
      await this.save((record) => { record.invites[made.inviteId] = { token: made.token, expiresAt }; });
      await this.request('invite', { inviteId: made.inviteId, expiresAt });
      if (this.invitesList) this.listInvites().catch((error) => this.fail(error));
      return made.link;
    }, { rethrow: true });
  }

  /**
   * Owner: the open invites and pending joins the server holds (`invites`, §4.3), with joiners'
   * fingerprints. Outside the room's queue: a read, it need not wait behind a join in progress.
   */
  async listInvites() {
    const list = parseInviteList(await this.request('invites'));
    this.invitesList = await Promise.all(list.map(async (e) => ({ ...e, fp: e.key ? await keyFingerprint(e.key) : '' })));
    this.changed();
    return this.invitesList;
  }

  /**
   * Owner: ends an invite and the join through it, if any (the joiner is told: `join_revoked`).
   * Outside the queue too, so that a join this page is answering can be stopped.
   */
  async revokeInvite(inviteId) {
    try {
      await this.request('revoke_invite', { inviteId });
    } catch (error) {
      if (!(error instanceof ServerError && error.code === 'unknown_invite')) throw error; // gone already
    }
    await this.save((record) => { delete record.invites[inviteId]; });
    this.invitesList = (this.invitesList ?? []).filter((e) => e.inviteId !== inviteId);
    this.changed();
  }

  /**
   * Whether this person marked `key` verified (compared its fingerprint with its holder through
   * another channel). Local to this browser's key store; a key is one room's, so is the mark.
   */
  isVerified(key) {
    const fp = knownFingerprint(key);
    return Boolean(fp) && this.record.verified?.[key] === fp;
  }

  async setVerified(key, verified) {
    const fp = await keyFingerprint(key);
    await this.save((record) => {
      record.verified = { ...record.verified };
      if (verified && fp) record.verified[key] = fp;
      else delete record.verified[key];
    });
    this.changed();
  }

  dismissError() {
    this.error = '';
    this.errorDismissible = false;
    this.changed();
  }

  remove(key) {
    return this.serial(async () => {
      const signature = bytesToBase64(await signRemoval(this.state, key));
      const reply = await this.request('remove_member', { key, signature });
      forget(this.state, key, Number.isSafeInteger(reply.until) ? reply.until : this.state.lastSeq, 'removed');
      this.wrapRequired = true;
      this.line(`You removed a member: ${await keyFingerprint(key)}`, 'removal');
      await this.rotate();
      await this.refreshMembers();
      this.changed();
    }, { rethrow: true });
  }

  /** Member: leave (the key is retired). Owner: delete the room for everyone. */
  leaveOrDelete() {
    return this.serial(async () => {
      if (this.record.status === 'active') {
        if (this.isOwner) await this.request('delete_room');
        else if (this.record.phase === 'ready') await this.request('leave', { signature: bytesToBase64(await signLeave(this.state)) });
      }
      this.connection.stop();
    }, { rethrow: true });
  }
}
