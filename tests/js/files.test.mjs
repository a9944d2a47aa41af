// The shared file vector Tests/Fixtures/files.json (docs/PROTOCOL.md §6.8; Swift runs it in
// FileVectorTests and writes it): every sealed-file case opens or is refused as it says, every
// file message object is accepted or refused as it says, and every local file name becomes the
// name it lists. web/app/files.mjs is the web client's one place of the rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './helpers.mjs';
import { base64ToBytes } from '../../web/themis/index.mjs';
import { FileError, chunkCount, checkFile, fileNameFrom, isFileName, openFile } from '../../web/app/files.mjs';

const vector = JSON.parse(readFileSync(join(REPO_ROOT, 'Tests', 'Fixtures', 'files.json'), 'utf8'));
const content = (size) => Uint8Array.from({ length: size }, (_, i) => i % 251);

function chunkOf(entry) {
  if (typeof entry === 'string') return base64ToBytes(vector.sealed[entry]);
  const bytes = base64ToBytes(vector.sealed[entry.of]).slice();
  bytes[entry.flip] ^= 1;
  return bytes;
}

test('files.json: every sealed-file case opens or is refused as listed', async () => {
  assert.ok(vector.cases.length >= 6);
  for (const c of vector.cases) {
    const size = c.size ?? vector.file.size;
    const file = { ...vector.file, size, chunks: chunkCount(size), sha256: c.sha256 ?? vector.file.sha256 };
    const opening = openFile(file, vector.room, c.chunks.map(chunkOf));
    if (c.expect === 'ok') {
      assert.deepEqual(await opening, content(size), c.name);
    } else {
      assert.equal(c.expect, 'refused', c.name);
      await assert.rejects(opening, (error) => error instanceof FileError, c.name);
    }
  }
  console.log(`file cases checked: ${vector.cases.length}`);
});

test('files.json: file message objects are accepted or refused as listed', () => {
  assert.ok(vector.messages.length >= 5);
  for (const m of vector.messages) {
    if (m.valid) assert.doesNotThrow(() => checkFile(m.file), m.name);
    else assert.throws(() => checkFile(m.file), { reason: 'malformed' }, m.name);
  }
});

test('files.json: local file names become the listed file names, each valid', () => {
  assert.ok(vector.fileNames.length >= 5);
  for (const { input, output } of vector.fileNames) {
    assert.equal(fileNameFrom(input), output, JSON.stringify(input));
    assert.ok(isFileName(output), JSON.stringify(output));
  }
});
