// Length hiding (docs/PROTOCOL.md §6.1): the shared vector Tests/Fixtures/padding.json (shape in
// padding.md) through web/app/padding.mjs and formats.mjs `openMessage`; the length of real sealed
// chat payloads; and padded messages sealed by the Swift client (Tests/Fixtures/padding-sealed-by-swift.json).
// With HUSH_WRITE_PADDING_VECTORS=1 it writes padding-sealed-by-js.json, which the Swift client opens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  SecureCellSeal, secureMessageSign, generateKeyPair, base64ToBytes, bytesToBase64,
} from '../../web/themis/index.mjs';
import { PAD_BUCKETS, MAX_SEAL_OVERHEAD, MessageTooLarge, padInnerJSON } from '../../web/app/padding.mjs';
import { PayloadError, openMessage, roomContext, randomBytes, sealChat, sealName } from '../../web/app/formats.mjs';
import { MAX_TEXT_CHARS } from '../../web/app/rooms.mjs';
import { REPO_ROOT, utf8 } from './helpers.mjs';

const fixture = (name) => join(REPO_ROOT, 'Tests', 'Fixtures', name);
const vector = JSON.parse(readFileSync(fixture('padding.json'), 'utf8'));
const decoder = new TextDecoder();

const expand = (input) => (typeof input === 'string' ? input : input.prefix + input.repeat.repeat(input.count) + input.suffix);
const littleEndian32 = (bytes, at) => bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] * 2 ** 24);

/** The inner JSON inside a sealed room payload: unsealed, then read out of Secure Message's signed layout (12-byte header). */
async function innerOf(payload, roomKey, room, epoch) {
  const signed = await SecureCellSeal.withKey(roomKey).decrypt(payload, roomContext(room, epoch));
  return signed.subarray(12, 12 + littleEndian32(signed, 4));
}

test('the buckets are the vector\'s; the top one keeps the longest signature within 64 KiB', () => {
  assert.deepEqual([...PAD_BUCKETS], vector.buckets);
  assert.equal(PAD_BUCKETS.at(-1) + MAX_SEAL_OVERHEAD, 64 * 1024);
});

test('the longest text the composer sends is the vector\'s, as in the Swift client', () => {
  assert.equal(MAX_TEXT_CHARS, vector.maxTextLength);
});

test('padding.json: the sender pads each inner JSON to its bucket, or refuses it', () => {
  for (const entry of vector.pad) {
    const input = utf8(expand(entry.input));
    if (entry.tooLarge) {
      assert.throws(() => padInnerJSON(input), MessageTooLarge, entry.name);
      continue;
    }
    const padded = padInnerJSON(input);
    assert.equal(padded.length, entry.length, entry.name);
    const text = decoder.decode(padded);
    if (entry.padded !== undefined) assert.equal(text, entry.padded, entry.name);
    assert.match(text, /,?"pad":" *"}$/, entry.name);
    const { pad, ...rest } = JSON.parse(text);
    assert.match(pad, /^ *$/, entry.name);
    assert.deepEqual(rest, JSON.parse(expand(entry.input)), `${entry.name}: the members are unchanged`);
  }
  console.log(`padding cases checked: ${vector.pad.length}`);
});

test('padding.json: the reader takes `pad` of spaces or none, and refuses any other', async () => {
  const sender = await generateKeyPair();
  for (const entry of vector.read) {
    const roomKey = randomBytes(32);
    const signed = await secureMessageSign(sender.privateKey, utf8(entry.inner));
    const payload = await SecureCellSeal.withKey(roomKey).encrypt(signed, roomContext(vector.room, vector.epoch));
    const opening = openMessage(payload, roomKey, { room: vector.room, epoch: vector.epoch, sender: sender.publicKey });
    if (entry.valid) await opening;
    else await assert.rejects(opening, (e) => e instanceof PayloadError && e.reason === 'malformed', entry.name);
  }
  console.log(`padding reader cases checked: ${vector.read.length}`);
});

test('a sealed chat payload holds exactly its bucket, whatever the text', async () => {
  const sender = await generateKeyPair();
  const room = vector.room;
  const texts = ['', 'hi', 'x'.repeat(150), 'x'.repeat(160), 'é'.repeat(400), '€'.repeat(4000), 'y'.repeat(40_000)];
  for (const text of texts) {
    const roomKey = randomBytes(32);
    const message = { room, epoch: 2, counter: 7, ts: 1_700_000_000_000, text };
    const unpadded = utf8(JSON.stringify({ counter: 7, epoch: 2, room, text, ts: message.ts, v: 1 })).length;
    const bucket = vector.buckets.find((size) => size >= unpadded + 9);
    const payload = await sealChat(message, roomKey, sender.privateKey);
    assert.equal((await innerOf(payload, roomKey, room, 2)).length, bucket, `${text.length} characters`);
    // The rest is constant but for the signature's length (8 … 72 bytes, at random).
    assert.ok(payload.length <= bucket + MAX_SEAL_OVERHEAD && payload.length >= bucket + 44 + 12 + 8, `${payload.length}`);
    const opened = await openMessage(payload, roomKey, { room, epoch: 2, sender: sender.publicKey });
    assert.equal(opened.text, text);
  }
  const roomKey = randomBytes(32);
  await assert.rejects(sealChat({ room, epoch: 2, counter: 7, ts: 1, text: 'z'.repeat(70_000) }, roomKey, sender.privateKey), MessageTooLarge);
  const name = await sealName({ room, epoch: 2, counter: 8, ts: 1, name: 'Alice' }, roomKey, sender.privateKey);
  assert.equal((await innerOf(name, roomKey, room, 2)).length, 256, 'a name message is padded too');
});

test('padded messages sealed by the Swift client open here, in their bucket', async () => {
  const sealed = JSON.parse(readFileSync(fixture('padding-sealed-by-swift.json'), 'utf8'));
  assert.ok(sealed.messages.length >= 4);
  for (const entry of sealed.messages) {
    const roomKey = base64ToBytes(entry.roomKey);
    const payload = base64ToBytes(entry.payload);
    const opened = await openMessage(payload, roomKey, { room: sealed.room, epoch: sealed.epoch, sender: base64ToBytes(entry.sender) });
    assert.equal(opened.text, entry.text);
    const inner = await innerOf(payload, roomKey, sealed.room, sealed.epoch);
    assert.ok(vector.buckets.includes(inner.length) && inner.length === entry.bucket, `${entry.text.slice(0, 20)}: ${inner.length}`);
    assert.match(decoder.decode(inner), /,"pad":" *"}$/);
  }
  console.log(`Swift-sealed padded messages opened: ${sealed.messages.length}`);
});

// Writes padding-sealed-by-js.json (every byte anew: fresh keys and IVs), for the Swift client to open.
// Only defined when asked for: scripts/test-js counts a skipped test as not passed.
if (process.env.HUSH_WRITE_PADDING_VECTORS === '1') test('writes the web client\'s sealed messages', async () => {
  const sealed = { room: vector.room, epoch: vector.epoch, messages: [] };
  const sender = await generateKeyPair();
  for (const text of ['hello from the web', 'x'.repeat(1000), '€'.repeat(4000), 'ünïcødé 😀'.repeat(200)]) {
    const roomKey = randomBytes(32);
    const payload = await sealChat({ room: sealed.room, epoch: sealed.epoch, counter: sealed.messages.length + 1, ts: 1_700_000_000_000, text },
      roomKey, sender.privateKey);
    const bucket = (await innerOf(payload, roomKey, sealed.room, sealed.epoch)).length;
    sealed.messages.push({ text, bucket, roomKey: bytesToBase64(roomKey), sender: bytesToBase64(sender.publicKey), payload: bytesToBase64(payload) });
  }
  writeFileSync(fixture('padding-sealed-by-js.json'), JSON.stringify(sealed, null, 1) + '\n');
});
