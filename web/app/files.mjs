// Files (docs/PROTOCOL.md §6.8), pure: a file sealed into fixed-size chunks under its own key,
// the `file` object of a file message, and the checks a reader makes before it shows or saves
// anything. No I/O: rooms.mjs moves the chunks, formats.mjs seals the message around `file`.
import { SecureCellSeal, base64ToBytes, bytesToBase64, utf8Encode, constantTimeEqual } from '../themis/index.mjs';

export const CHUNK_BYTES = 65536;
export const SEALED_CHUNK_BYTES = CHUNK_BYTES + 44;
export const MAX_FILE_BYTES = 26_214_400;
export const MAX_PREVIEW_BYTES = 32_768;
export const MAX_NAME_SCALARS = 255;
/** The only types a reader shows inline (never SVG: it is markup). */
export const INLINE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/** Why a file or a file message was refused; `message` is shown to the person. */
export class FileError extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason; // 'malformed' | 'missing' | 'undecryptable' | 'length' | 'padding' | 'hash' | 'tooLarge'
  }
}

export const chunkCount = (size) => Math.max(1, Math.ceil(size / CHUNK_BYTES));

/** The Secure Cell context of chunk `index` of `count`: binds room, file, position and count. */
export const chunkContext = (room, idB64, index, count) => utf8Encode(`hush-file:${room}:${idB64}:${index}:${count}`);

// Characters no file name holds: C0 and C1 controls, path separators, and the bidi and
// invisible characters refused in display names (§6.7), plus lone surrogates (no scalar values).
const NAME_REFUSED = /[\u0000-\u001f\u007f-\u009f/\\\u061c\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]|[\ud800-\udfff]/u;
const NAME_REFUSED_ALL = new RegExp(NAME_REFUSED.source, 'gu');

export function isFileName(name) {
  if (typeof name !== 'string' || name === '.' || name === '..' || NAME_REFUSED.test(name)) return false;
  const scalars = [...name].length;
  return scalars >= 1 && scalars <= MAX_NAME_SCALARS;
}

/** A sender's file name from a local one: refused characters → `_`, cut to 255 scalars; empty, `.` or `..` → `file`. */
export function fileNameFrom(local) {
  const cleaned = [...String(local ?? '').replace(NAME_REFUSED_ALL, '_')].slice(0, MAX_NAME_SCALARS).join('');
  return cleaned === '' || cleaned === '.' || cleaned === '..' ? 'file' : cleaned;
}

const MEDIA_TYPE = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/;
export const isMediaType = (t) => typeof t === 'string' && t.length >= 3 && t.length <= 127 && MEDIA_TYPE.test(t);
/** A sender's media type from the browser's: lower case without parameters, else octet-stream. */
export function mediaTypeFrom(local) {
  const t = String(local ?? '').split(';')[0].trim().toLowerCase();
  return isMediaType(t) ? t : 'application/octet-stream';
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function bytesOf(text, length, max = length) {
  if (typeof text !== 'string' || text.length > Math.ceil(max / 3) * 4) return null;
  try {
    const bytes = base64ToBytes(text);
    return length === null ? (bytes.length <= max ? bytes : null) : (bytes.length === length ? bytes : null);
  } catch { return null; }
}

/**
 * The `file` object of a file message, checked by the rule of §6.8 → a plain copy holding only
 * the known fields (b64 strings, as on the wire); throws FileError('malformed').
 */
export function checkFile(f) {
  const fail = (why) => { throw new FileError('malformed', `bad file description: ${why}`); };
  if (!isObject(f)) fail('not an object');
  if (!bytesOf(f.id, 16)) fail('id');
  if (!bytesOf(f.key, 32)) fail('key');
  if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > MAX_FILE_BYTES) fail('size');
  if (f.chunks !== chunkCount(f.size)) fail('chunk count');
  if (!bytesOf(f.sha256, 32)) fail('sha256');
  if (!isFileName(f.name)) fail('name');
  if (!isMediaType(f.type)) fail('type');
  if (f.preview !== undefined && !bytesOf(f.preview, null, MAX_PREVIEW_BYTES)) fail('preview');
  const out = { id: f.id, key: f.key, chunks: f.chunks, size: f.size, sha256: f.sha256, name: f.name, type: f.type };
  if (f.preview !== undefined) out.preview = f.preview;
  return out;
}

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));

/**
 * A new file to send: fresh id and key, its hash → the `file` object (checked). `name` and
 * `type` are the local ones, made valid here; `preview`: JPEG bytes or null.
 */
export async function describeFile(bytes, { name, type, preview = null }) {
  if (!(bytes instanceof Uint8Array)) throw new FileError('malformed', 'not bytes');
  if (bytes.length > MAX_FILE_BYTES) throw new FileError('tooLarge', 'a file has at most 25 MiB');
  const file = {
    id: bytesToBase64(crypto.getRandomValues(new Uint8Array(16))),
    key: bytesToBase64(crypto.getRandomValues(new Uint8Array(32))),
    chunks: chunkCount(bytes.length), size: bytes.length, sha256: bytesToBase64(await sha256(bytes)),
    name: fileNameFrom(name), type: mediaTypeFrom(type),
  };
  if (preview && preview.length > 0 && preview.length <= MAX_PREVIEW_BYTES) file.preview = bytesToBase64(preview);
  return checkFile(file);
}

/** Seals chunk `index` of `bytes` (the whole file) for `room`: exactly CHUNK_BYTES, zero-padded. */
export function sealChunk(file, room, bytes, index) {
  const chunk = new Uint8Array(CHUNK_BYTES);
  chunk.set(bytes.subarray(index * CHUNK_BYTES, Math.min((index + 1) * CHUNK_BYTES, bytes.length)));
  return SecureCellSeal.withKey(base64ToBytes(file.key)).encrypt(chunk, chunkContext(room, file.id, index, file.chunks));
}

/**
 * Opens sealed chunk `index` of a checked `file`: it must open under the file key and the
 * context of its position, be exactly CHUNK_BYTES, and be zero after the file's end → the
 * file's bytes it holds. Throws FileError.
 */
export async function openChunk(file, room, index, sealed) {
  if (!(sealed instanceof Uint8Array) || sealed.length !== SEALED_CHUNK_BYTES) {
    throw new FileError('length', `part ${index + 1} of ${file.chunks} has the wrong length`);
  }
  let chunk;
  try {
    chunk = await SecureCellSeal.withKey(base64ToBytes(file.key)).decrypt(sealed, chunkContext(room, file.id, index, file.chunks));
  } catch {
    throw new FileError('undecryptable', `part ${index + 1} of ${file.chunks} does not open: altered, or not this file's`);
  }
  if (chunk.length !== CHUNK_BYTES) throw new FileError('length', `part ${index + 1} of ${file.chunks} has the wrong length`);
  const used = Math.max(0, Math.min(CHUNK_BYTES, file.size - index * CHUNK_BYTES));
  let padding = 0;
  for (let i = used; i < CHUNK_BYTES; i++) padding |= chunk[i];
  if (padding !== 0) throw new FileError('padding', `part ${index + 1} of ${file.chunks} has bytes after the file's end`);
  return chunk.subarray(0, used);
}

/** Joins the opened chunks (in order, all `file.chunks` of them) and checks the hash → the file's bytes. */
export async function joinChunks(file, opened) {
  if (!Array.isArray(opened) || opened.length !== file.chunks || opened.some((c) => !(c instanceof Uint8Array))) {
    throw new FileError('missing', 'parts of the file are missing');
  }
  const bytes = new Uint8Array(file.size);
  let offset = 0;
  for (const part of opened) {
    if (offset + part.length > file.size) throw new FileError('length', 'the file is longer than described');
    bytes.set(part, offset);
    offset += part.length;
  }
  if (offset !== file.size) throw new FileError('length', 'the file is shorter than described');
  if (!constantTimeEqual(await sha256(bytes), base64ToBytes(file.sha256))) {
    throw new FileError('hash', 'the file does not match its fingerprint (SHA-256): altered');
  }
  return bytes;
}

/** All sealed chunks of a file at once → its bytes (tests, and small files). Throws FileError. */
export async function openFile(file, room, sealedChunks) {
  if (!Array.isArray(sealedChunks) || sealedChunks.length !== file.chunks) throw new FileError('missing', 'parts of the file are missing');
  const opened = [];
  for (let i = 0; i < file.chunks; i++) opened.push(await openChunk(file, room, i, sealedChunks[i]));
  return joinChunks(file, opened);
}
