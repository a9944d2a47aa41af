// The file transfer of web/app/rooms.mjs against a fake server connection: chunks go up and
// come down with at most 8 file requests in flight, `rate_limited` is waited out, the file
// message is queued only after every chunk is stored, and a download checks everything before
// a Blob exists (a tampered or missing chunk, or a server that changes the count, refuses it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, base64ToBytes } from '../../web/themis/index.mjs';
import { ServerError } from '../../web/app/connection.mjs';
import { makeRotation } from '../../web/app/room.mjs';
import { ROOM, client, clientWithOutbox } from './fake-room.mjs';
import { checkOutbox } from '../../web/app/outbox.mjs';

/** A server that stores chunks; `limited` refuses that many first requests with rate_limited. */
function fakeServer({ limited = 0 } = {}) {
  const chunks = new Map();
  let refused = 0;
  return {
    chunks,
    count: 0,
    serve(type, fields) {
      if (refused < limited) { refused += 1; throw new ServerError('rate_limited', 'slow down'); }
      if (type === 'file_put') {
        this.count = fields.chunks;
        chunks.set(fields.index, fields.data);
        return { room: ROOM, file: fields.file, index: fields.index, complete: chunks.size === fields.chunks };
      }
      if (type === 'file_get') {
        if (!chunks.has(fields.index)) throw new ServerError('unknown_file', 'no such file');
        return { room: ROOM, file: fields.file, chunks: this.count, index: fields.index, data: chunks.get(fields.index) };
      }
      throw new Error(`unexpected ${type}`);
    },
  };
}

const content = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 7) % 256);

test('a file goes up and comes down byte for byte, 8 requests in flight at most', { timeout: 120_000 }, async () => {
  const server = fakeServer({ limited: 2 });
  const { room: sender, flight } = await client((t, f) => server.serve(t, f), { gate: 8 });
  const bytes = content(40 * 65536 + 123);
  await sender.sendFile({ bytes, name: 'big.bin', type: 'application/x-thing', preview: null });
  assert.equal(server.chunks.size, 41);
  assert.equal(flight.max, 8, 'the file budget is full but never exceeded');
  assert.equal(sender.queued.length, 1, 'the file message waits in the outbox only after every chunk is stored');
  const { file } = sender.queued[0];
  assert.equal(sender.queued[0].kind, 'file');
  assert.equal(sender.uploads.size, 0);
  assert.ok(sender.fileBlob(file.id), 'the sender shows its own copy without fetching it');

  const { room: reader, flight: readFlight } = await client((t, f) => server.serve(t, f));
  await reader.download(file);
  const blob = reader.fileBlob(file.id);
  assert.ok(blob);
  assert.equal(blob.type, 'application/octet-stream', 'only inline images keep their type');
  assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
  assert.ok(readFlight.max <= 8);
});

test('a tampered, missing or recounted chunk refuses the whole file: no Blob, a clear error', async () => {
  const server = fakeServer();
  const { room: sender } = await client((t, f) => server.serve(t, f));
  await sender.sendFile({ bytes: content(3 * 65536), name: 'a.png', type: 'image/png', preview: null });
  const { file } = sender.queued[0];
  const good = new Map(server.chunks);

  const tampered = base64ToBytes(good.get(1));
  tampered[200] ^= 1;
  server.chunks.set(1, bytesToBase64(tampered));
  let { room: reader } = await client((t, f) => server.serve(t, f));
  await reader.download(file);
  assert.equal(reader.fileBlob(file.id), null);
  assert.deepEqual([reader.transferOf(file.id).status, reader.transferOf(file.id).error],
    ['failed', 'part 2 of 3 does not open: altered, or not this file\'s']);

  server.chunks.set(1, good.get(2)); // another position's chunk
  ({ room: reader } = await client((t, f) => server.serve(t, f)));
  await reader.download(file);
  assert.match(reader.transferOf(file.id).error, /does not open/);

  server.chunks.set(1, good.get(1));
  server.chunks.delete(2);
  ({ room: reader } = await client((t, f) => server.serve(t, f)));
  await reader.download(file);
  assert.match(reader.transferOf(file.id).error, /part 3 of 3 is not on the server/);
  assert.equal(reader.fileBlob(file.id), null);

  // A retry after a failure fetches again, and succeeds once the server holds the file.
  server.chunks.set(2, good.get(2));
  await reader.download(file);
  assert.equal(reader.transferOf(file.id).status, 'ready');

  server.count = 4; // the server now claims 4 chunks: the message's count rules
  ({ room: reader } = await client((t, f) => server.serve(t, f)));
  await reader.download(file);
  assert.match(reader.transferOf(file.id).error, /another file or part/);
});

test('an upload the server refuses is shown as failed with the reason, and no message is queued', async () => {
  const { room } = await client(() => { throw new ServerError('room_full', 'full'); });
  await room.sendFile({ bytes: content(10), name: 'x', type: '', preview: null });
  assert.equal(room.queued.length, 0);
  const [upload] = room.uploads.values();
  assert.match(upload.error, /room is full/);
  const item = room.timeline().find((i) => i.kind === 'file');
  assert.deepEqual([item.status, item.file.name], ['failed', 'x']);
  room.dismissUpload(item.id);
  assert.equal(room.uploads.size, 0);
});

test('a file message goes through the outbox: after stale_epoch it is sealed again and resent with the same messageId and files', async () => {
  const server = fakeServer();
  const sends = [];
  let rotation = null;
  const { room } = await clientWithOutbox(async (type, fields) => {
    if (type === 'send') {
      sends.push(fields);
      if (sends.length === 1) {
        rotation = await makeRotation(room.state); // another tab of the owner rotated meanwhile
        throw new ServerError('stale_epoch', 'stale', 1);
      }
      return { room: ROOM, seq: 2 };
    }
    if (type === 'history') {
      return { messages: [{ room: ROOM, seq: 1, kind: 'rotation', from: room.state.owner, epoch: 1, at: 1, payload: rotation.payload }], more: false };
    }
    return server.serve(type, fields);
  });
  await room.sendFile({ bytes: content(65536 + 1), name: 'a.bin', type: 'application/octet-stream', preview: null });
  await room.queue; // the drain queued by the outbox
  assert.equal(sends.length, 2);
  const [first, second] = sends;
  assert.equal(first.messageId, second.messageId, 'one messageId for every try');
  assert.deepEqual(first.files, second.files);
  assert.equal(first.files.length, 1);
  assert.deepEqual([first.epoch, second.epoch], [0, 1], 'sealed again under the new epoch');
  assert.notEqual(first.payload, second.payload);
  assert.deepEqual(checkOutbox(room.record.outbox), [], 'sent: gone from the outbox');
  const shown = room.timeline().find((i) => i.kind === 'file');
  assert.deepEqual([shown.seq, shown.status, shown.file.name, shown.transfer.status], [2, 'sent', 'a.bin', 'ready']);
});
