// A room's outbox, pure: messages the user wrote that the server has not committed yet. They
// live in the sealed key store (so they survive a reload), go out one at a time in order, and
// each keeps one `messageId` for all its retries (the server answers a repeat with the
// original seq). rooms.mjs does the I/O; these functions decide.
import { bytesToBase64 } from '../themis/index.mjs';
import { randomBytes } from './formats.mjs';
import { isCanonicalName } from './room.mjs';
import { checkFile } from './files.mjs';

export const MAX_OUTBOX = 100;
const MAX_TEXT = 16 * 1024;
const MESSAGE_ID = /^[A-Za-z0-9+/]{22}==$/;

/**
 * A message the user just wrote; sealed later, under the epoch current when it goes out. `kind`
 * 'name': a name message (§6.7) whose `text` is the canonical name; 'file': a file message (§6.8)
 * whose chunks are stored, `file` its file object and `text` its name; entries stored before
 * names have no kind and are chat.
 */
export function newEntry(text, now, kind = 'chat', file = undefined) {
  return { id: bytesToBase64(randomBytes(16)), kind, text, at: now, sealed: null, failed: null, ...(kind === 'file' ? { file } : {}) };
}

/** Whether an entry is a name message rather than a chat line. */
export const isNameEntry = (entry) => entry.kind === 'name';
/** Whether an entry is a file message: sent with `files: [its id]` (§4.9). */
export const isFileEntry = (entry) => entry.kind === 'file';

function validFile(file) {
  try { checkFile(file); return true; } catch { return false; }
}

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

function validEntry(e) {
  if (e === null || typeof e !== 'object' || typeof e.id !== 'string' || !MESSAGE_ID.test(e.id)) return false;
  if (typeof e.text !== 'string' || e.text.length === 0 || e.text.length > MAX_TEXT || !isCount(e.at)) return false;
  if (e.kind !== undefined && e.kind !== 'chat' && !(e.kind === 'name' && isCanonicalName(e.text)) &&
      !(e.kind === 'file' && validFile(e.file))) return false;
  if (e.failed !== null && typeof e.failed !== 'string') return false;
  const s = e.sealed;
  return s === null || (s !== null && typeof s === 'object' && isCount(s.epoch) && isCount(s.counter) && s.counter >= 1 &&
    isCount(s.ts) && typeof s.payload === 'string');
}

/** The outbox as stored, keeping only well-formed entries (at most MAX_OUTBOX). */
export const checkOutbox = (list) => (Array.isArray(list) ? list.filter(validEntry).slice(0, MAX_OUTBOX) : []);

/** The seq at which the server committed this entry, as learnt from history or a push. */
export function committedSeq(entry, state) {
  return entry.sealed ? state.accepted[state.me]?.[entry.sealed.counter] : undefined;
}

/** Entries still to show as unsent: not committed, in the order written. */
export const unsent = (outbox, state) => outbox.filter((e) => committedSeq(e, state) === undefined);

/** The next entry to send: the oldest one neither committed nor failed for good. */
export const nextToSend = (outbox, state) => unsent(outbox, state).find((e) => e.failed === null);

/** An entry needs (re)sealing when it never was, or was sealed under another epoch than the current. */
export const needsSeal = (entry, state) => entry.sealed === null || entry.sealed.epoch !== state.epoch;

/**
 * What to do when a `send` failed (`code`: the server's error code, undefined when the request
 * never got an answer):
 *   'retry'  keep it; try again on reconnect or after a pause (nothing was committed)
 *   'reseal' the room moved to another epoch: catch up, seal again, send with the same id
 *   'hold'   a rotation is owed (a member left or was removed): wait for the new epoch
 *   'ended'  this key is out of the room; nothing can be sent any more
 *   'failed' refused for good (e.g. too large, or the room or the server is full: space comes back
 *            only as old messages expire, so retrying at once would only be refused again);
 *            shown as not sent, the rest goes on
 */
export function failureAction(code) {
  if (code === undefined || code === 'rate_limited' || code === 'internal') return 'retry';
  if (code === 'stale_epoch') return 'reseal';
  if (code === 'rotation_pending') return 'hold';
  if (code === 'removed' || code === 'not_member' || code === 'not_found') return 'ended';
  return 'failed';
}

/** Why a message was not sent, as shown to the person: our words for the codes we know. */
export function failureReason(code, serverMessage) {
  if (code === 'room_full') return 'the room is full: the server stores nothing more here until old messages expire';
  if (code === 'server_full') return 'the server is out of storage; try again later';
  return String(serverMessage ?? '').slice(0, 200);
}

/**
 * After `stale_epoch` (`serverEpoch`: the room's current epoch as the server reports it, if it
 * does): 'reseal' when this state now holds that epoch and its key, 'catch-up' when it must
 * first read the rotation (history), 'hold' when it still cannot (wait until a rotation
 * reaches it). `caughtUp`: history was read since the refusal.
 */
export function afterStale(entry, state, serverEpoch, caughtUp) {
  const target = isCount(serverEpoch) ? serverEpoch : null;
  if ((target === null || state.epoch === target) && state.keys[state.epoch] && entry.sealed?.epoch !== state.epoch) return 'reseal';
  if (!caughtUp && (target === null || target > state.epoch)) return 'catch-up';
  return 'hold';
}
