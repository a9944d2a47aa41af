// Files (docs/PROTOCOL.md §6.8) in the web client, format only: web/app/files.mjs seals and
// opens chunks, checks the `file` object, makes names and types valid; file messages go through
// room.mjs like chat (counters, replay, membership). The shared vector is files.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base64ToBytes, bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import {
  CHUNK_BYTES, SEALED_CHUNK_BYTES, MAX_FILE_BYTES, chunkCount, describeFile, sealChunk, openChunk, joinChunks, openFile,
  checkFile, isFileName, fileNameFrom, isMediaType, mediaTypeFrom,
} from '../../web/app/files.mjs';
import { newRoomState, admit, signMembership, composeFile, compose, receive } from '../../web/app/room.mjs';
import { newEntry, checkOutbox, isFileEntry } from '../../web/app/outbox.mjs';

const ROOM = 'BBBBBBBBBBBBBBBBBBBBBB';
const content = (n) => Uint8Array.from({ length: n }, (_, i) => i % 251);
const sealAll = async (file, room, bytes) => {
  const out = [];
  for (let i = 0; i < file.chunks; i++) out.push(await sealChunk(file, room, bytes, i));
  return out;
};

test('chunk counts: one chunk for an empty file, 400 for 25 MiB', () => {
  assert.deepEqual([0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, MAX_FILE_BYTES].map(chunkCount), [1, 1, 1, 2, 400]);
});

test('a file round-trips at every boundary, and every sealed chunk has the same length', async () => {
  for (const size of [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7]) {
    const bytes = content(size);
    const file = await describeFile(bytes, { name: 'a.bin', type: 'application/octet-stream' });
    assert.equal(file.chunks, chunkCount(size));
    const sealed = await sealAll(file, ROOM, bytes);
    assert.ok(sealed.every((c) => c.length === SEALED_CHUNK_BYTES));
    assert.deepEqual(await openFile(file, ROOM, sealed), bytes, `size ${size}`);
  }
});

test('a broken file is refused with its own reason', async () => {
  const bytes = content(2 * CHUNK_BYTES + 10);
  const file = await describeFile(bytes, { name: 'a', type: 'text/plain' });
  const sealed = await sealAll(file, ROOM, bytes);
  const flipped = sealed[1].slice();
  flipped[100] ^= 1;
  await assert.rejects(openFile(file, ROOM, [sealed[0], flipped, sealed[2]]), { reason: 'undecryptable' });
  await assert.rejects(openFile(file, ROOM, [sealed[1], sealed[0], sealed[2]]), { reason: 'undecryptable' }, 'swapped');
  await assert.rejects(openFile(file, 'CCCCCCCCCCCCCCCCCCCCCC', sealed), { reason: 'undecryptable' }, 'another room');
  await assert.rejects(openFile(file, ROOM, sealed.slice(0, 2)), { reason: 'missing' });
  await assert.rejects(openChunk(file, ROOM, 0, sealed[0].subarray(1)), { reason: 'length' });
  // Cut short: the same chunks told as a two-chunk file do not open (the count is in the context).
  const shorter = { ...file, size: 2 * CHUNK_BYTES, chunks: 2 };
  await assert.rejects(openFile(shorter, ROOM, sealed.slice(0, 2)), { reason: 'undecryptable' });
  // Bytes after the end: a size smaller than what the last chunk holds.
  const smaller = { ...file, size: file.size - 1 };
  await assert.rejects(openFile(smaller, ROOM, sealed), { reason: 'padding' });
  // A hash that differs.
  const digest = base64ToBytes(file.sha256);
  digest[0] ^= 1;
  await assert.rejects(openFile({ ...file, sha256: bytesToBase64(digest) }, ROOM, sealed), { reason: 'hash' });
  await assert.rejects(joinChunks(file, [new Uint8Array(CHUNK_BYTES)]), { reason: 'missing' });
});

test('file names: the rule, and what a sender makes of a local name', () => {
  for (const good of ['a', 'photo.jpg', 'é'.repeat(255), '.hidden', 'a..b', '😀']) assert.ok(isFileName(good), good);
  for (const bad of ['', '.', '..', 'a/b', 'a\\b', 'a\u0000', 'a\u007f', 'a\u0085', 'a\u202e', 'a\u200b', 'a\ufeff', 'a\ud800',
    'x'.repeat(256), 42, null]) assert.ok(!isFileName(bad), JSON.stringify(bad));
  assert.equal(fileNameFrom('../etc/passwd'), '.._etc_passwd');
  assert.equal(fileNameFrom('a\u202egpj.exe'), 'a_gpj.exe');
  assert.equal(fileNameFrom(''), 'file');
  assert.equal([...fileNameFrom('😀'.repeat(300))].length, 255);
  assert.equal(fileNameFrom('..'), 'file');
  assert.equal(fileNameFrom('.'), 'file');
});

test('media types: lower case type/subtype, no parameters; unknown → octet-stream', () => {
  for (const good of ['image/png', 'application/vnd.ms-excel', 'a/b', 'text/x-c++']) assert.ok(isMediaType(good), good);
  for (const bad of ['image', 'Image/PNG', 'text/plain; charset=utf-8', 'a/', '/b', 'a/b/c', 'x/' + 'y'.repeat(126), '']) {
    assert.ok(!isMediaType(bad), bad);
  }
  assert.equal(mediaTypeFrom('Text/Plain; charset=UTF-8'), 'text/plain');
  assert.equal(mediaTypeFrom(''), 'application/octet-stream');
  assert.equal(mediaTypeFrom('image/svg+xml'), 'image/svg+xml', 'kept, but never shown inline');
});

test('the file object: every field checked, unknown fields dropped', async () => {
  const file = await describeFile(content(5), { name: 'a', type: 'text/plain', preview: new Uint8Array(10) });
  assert.deepEqual(checkFile({ ...file, extra: 1 }), file);
  const broken = {
    id: bytesToBase64(new Uint8Array(15)), key: bytesToBase64(new Uint8Array(31)), size: MAX_FILE_BYTES + 1,
    chunks: 2, sha256: bytesToBase64(new Uint8Array(33)), name: '..', type: 'TEXT/plain',
    preview: bytesToBase64(new Uint8Array(32769)),
  };
  for (const [field, value] of Object.entries(broken)) {
    assert.throws(() => checkFile({ ...file, [field]: value }), { reason: 'malformed' }, field);
  }
  assert.throws(() => checkFile({ ...file, size: 1.5 }), { reason: 'malformed' });
  assert.throws(() => checkFile({ ...file, id: file.id.replace(/=*$/, '') }), { reason: 'malformed' }, 'unpadded base64');
  assert.throws(() => checkFile(null), { reason: 'malformed' });
  assert.throws(() => checkFile([file]), { reason: 'malformed' });
  assert.ok(checkFile({ ...file, preview: bytesToBase64(new Uint8Array(32768)) }));
});

test('file messages share counters, replay and membership rules with chat', async () => {
  const owner = await generateKeyPair();
  const member = await generateKeyPair();
  const stranger = await generateKeyPair();
  const roomKey = crypto.getRandomValues(new Uint8Array(32));
  const make = (pair) => newRoomState({ room: ROOM, owner: bytesToBase64(owner.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey });
  const [o, m, s] = [make(owner), make(member), make(stranger)];
  const memberKey = bytesToBase64(member.publicKey);
  assert.ok(await admit(o, memberKey, bytesToBase64(await signMembership(o, memberKey))));
  const file = await describeFile(content(70000), { name: 'x.bin', type: 'application/octet-stream' });
  const env = (st, seq, made) => ({ seq, kind: 'message', from: st.me, epoch: made.epoch, at: 1, payload: made.payload });

  const chat = await compose(m, 'hi', 1);
  const sent = await composeFile(m, file, 2);
  assert.equal(sent.counter, chat.counter + 1, 'a file takes the next counter');
  assert.equal((await receive(o, env(m, 1, chat))).type, 'chat');
  const event = await receive(o, env(m, 2, sent));
  assert.equal(event.type, 'file');
  assert.deepEqual(event.file, file);
  assert.equal((await receive(o, env(m, 2, sent))).type, 'duplicate');
  assert.equal((await receive(o, env(m, 3, sent))).code, 'replay');
  assert.equal((await receive(o, env(s, 4, await composeFile(s, file, 3)))).code, 'notMember');
  await assert.rejects(composeFile(m, { ...file, name: 'a/b' }, 4), { reason: 'malformed' });
});

test('file entries of the outbox keep a checked file object', async () => {
  const file = await describeFile(content(3), { name: 'a.txt', type: 'text/plain' });
  const entry = newEntry(file.name, 1, 'file', file);
  assert.ok(isFileEntry(entry));
  const bad = { ...newEntry('b', 1, 'file', file), file: { ...file, key: 'x' } };
  const none = { ...newEntry('c', 1, 'file', file), file: undefined };
  assert.deepEqual(checkOutbox([entry, bad, none]).map((e) => e.id), [entry.id]);
});
