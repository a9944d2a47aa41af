// The web client's key store across tabs (web/app/store.mjs): changes re-applied on the newest
// document (compare-and-swap on a version), and import only after the password opens the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import { KeyStore, WrongPassword, StoreReplaced, versionOf, PASSPHRASE_ITERATIONS } from '../../web/app/store.mjs';
import { newRoomState, durable, compose } from '../../web/app/room.mjs';

const PASSWORD = 'correct horse battery';

/** IndexedDB + Web Locks + BroadcastChannel in memory; `unlocked` skips the lock (an old tab). */
function memoryBackend({ unlocked = false } = {}) {
  const shared = { record: undefined, chain: Promise.resolve(), writes: 0 };
  const make = (skipLock) => ({
    shared,
    read: async () => structuredClone(shared.record),
    writeIf: async (expected, record) => {
      if (versionOf(shared.record) !== expected) return false;
      shared.record = structuredClone(record);
      shared.writes += 1;
      return true;
    },
    exclusive: (fn) => {
      if (skipLock) return fn();
      const run = shared.chain.then(fn);
      shared.chain = run.catch(() => {});
      return run;
    },
    channel: () => ({ postMessage() {}, close() {} }),
    withoutLock: () => make(true),
  });
  return make(unlocked);
}

test('two tabs: a change made on a stale copy is re-applied on the newest document', async () => {
  const backend = memoryBackend();
  const tabA = await KeyStore.create(PASSWORD, backend);
  const tabB = await KeyStore.unlock(PASSWORD, backend);
  let changedElsewhere = 0;
  tabB.onChange = () => { changedElsewhere += 1; };
  await tabA.update((data) => { data.rooms.first = { name: 'joined in tab A' }; });
  let runs = 0;
  await tabB.update((data) => { runs += 1; data.rooms.second = { name: 'created in tab B' }; });
  assert.equal(runs, 1, 'B read the newer record before applying its change');
  assert.equal(changedElsewhere, 1, 'B heard of the rooms A added');
  assert.deepEqual(Object.keys(tabB.data.rooms).sort(), ['first', 'second']);
  assert.equal(await tabA.refresh(), true);
  assert.deepEqual(Object.keys(tabA.data.rooms).sort(), ['first', 'second']);
  assert.equal(await tabA.refresh(), false, 'nothing new');
  const reopened = await KeyStore.unlock(PASSWORD, backend);
  assert.deepEqual(Object.keys(reopened.data.rooms).sort(), ['first', 'second']);
  assert.equal(versionOf(backend.shared.record), 3);
});

test('compare-and-swap: a write that slips in between read and write is kept, the change runs again', async () => {
  const backend = memoryBackend();
  const tab = await KeyStore.create(PASSWORD, backend);
  const old = await KeyStore.unlock(PASSWORD, backend.withoutLock()); // a writer that takes no lock
  let runs = 0;
  await tab.update(async (data) => {
    runs += 1;
    if (runs === 1) await old.update((d) => { d.rooms.sneaky = { keys: 'from the other tab' }; });
    data.rooms.mine = { keys: 'from this tab' };
  });
  assert.equal(runs, 2, 'the first write was refused and the change re-applied');
  const stored = await KeyStore.unlock(PASSWORD, backend);
  assert.deepEqual(Object.keys(stored.data.rooms).sort(), ['mine', 'sneaky']);
});

test('two tabs sealing messages at once never take the same counter', async () => {
  const backend = memoryBackend();
  const tabA = await KeyStore.create(PASSWORD, backend);
  const tabB = await KeyStore.unlock(PASSWORD, backend);
  const pair = await generateKeyPair();
  const state = newRoomState({ room: 'CCCCCCCCCCCCCCCCCCCCCC', owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey: new Uint8Array(32) });
  await tabA.update((data) => { data.rooms.r = { state: durable(state) }; });
  const seal = (tab, text) => tab.update(async (data) => (await compose(data.rooms.r.state, text, 1)).counter);
  const counters = await Promise.all([seal(tabA, 'a1'), seal(tabB, 'b1'), seal(tabA, 'a2'), seal(tabB, 'b2')]);
  assert.deepEqual([...counters].sort(), [1, 2, 3, 4]);
  assert.equal((await KeyStore.unlock(PASSWORD, backend)).data.rooms.r.state.counter, 4);
});

test('import: a wrong password or a damaged file changes nothing; the right one replaces the store', async () => {
  const source = await KeyStore.create('the file password', memoryBackend());
  await source.update((data) => { data.rooms.imported = { name: 'from the file' }; });
  const file = await source.exportText();
  assert.equal(JSON.parse(file).version, undefined, 'the file carries no local version');

  const backend = memoryBackend();
  const here = await KeyStore.create(PASSWORD, backend);
  await here.update((data) => { data.rooms.local = { name: 'here' }; });
  let replaced = 0;
  here.onReplaced = () => { replaced += 1; };
  const before = structuredClone(backend.shared.record);
  await assert.rejects(KeyStore.importText(file, 'not the password', backend), WrongPassword);
  const damaged = JSON.parse(file);
  damaged.data = damaged.data.slice(0, -8) + 'AAAAAAA=';
  await assert.rejects(KeyStore.importText(JSON.stringify(damaged), 'the file password', backend), /damaged/);
  await assert.rejects(KeyStore.importText('{"format":"other"}', 'the file password', backend), /not a Hush key store/);
  assert.deepEqual(backend.shared.record, before, 'nothing was written');

  const imported = await KeyStore.importText(file, 'the file password', backend);
  assert.deepEqual(Object.keys(imported.data.rooms), ['imported']);
  assert.equal(versionOf(backend.shared.record), versionOf(before) + 1, 'a newer version: other tabs notice');
  await assert.rejects(here.update((data) => { data.rooms.late = {}; }), StoreReplaced);
  assert.equal(replaced, 1);
  assert.deepEqual(Object.keys((await KeyStore.unlock('the file password', backend)).data.rooms), ['imported']);
});

test('a record from before versions opens and takes version 1 on its first write', async () => {
  const backend = memoryBackend();
  await KeyStore.create(PASSWORD, backend);
  delete backend.shared.record.version;
  const tab = await KeyStore.unlock(PASSWORD, backend);
  assert.equal(tab.version, 0);
  await tab.update((data) => { data.rooms.x = {}; });
  assert.equal(versionOf(backend.shared.record), 1);
  await assert.rejects(KeyStore.create(PASSWORD, backend), /already exists/);
});

test('a new store key is sealed with 600,000 PBKDF2 rounds, written in the cell header', async () => {
  const backend = memoryBackend();
  await KeyStore.create(PASSWORD, backend);
  const lock = Uint8Array.from(Buffer.from((await backend.read()).lock, 'base64'));
  // Passphrase Seal: the KDF context (LE32 rounds, LE16 salt length) follows the 44-byte token head.
  const rounds = lock[48] | (lock[49] << 8) | (lock[50] << 16) | (lock[51] << 24);
  assert.equal(PASSPHRASE_ITERATIONS, 600000);
  assert.equal(rounds, PASSPHRASE_ITERATIONS);
  await KeyStore.unlock(PASSWORD, backend);
  await assert.rejects(KeyStore.unlock('not the password', backend), WrongPassword);
});
