// The JS Secure Session client against the real Swift server: starts `hush serve` on a free
// port, pins its key from /.well-known/hush, completes the handshake over a WebSocket
// (docs/PROTOCOL.md §2-§4) and exchanges requests through the session.
//
// The binary comes from `swift build --product hush`; its path is $HUSH_BIN, or
// .build/debug/hush under the repository root. A missing binary FAILS the tests.
// Needs Node's WebSocket: Node 20 with --experimental-websocket (scripts/test-js passes it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  SecureSession, generateKeyPair, fingerprint, clientIdFromPublicKey, base64ToBytes, bytesToBase64,
  base64UrlToBytes, parsePublicKey, ThemisError,
} from '../../web/themis/index.mjs';
import { REPO_ROOT } from './helpers.mjs';

const BIN = process.env.HUSH_BIN ? resolve(process.env.HUSH_BIN) : join(REPO_ROOT, '.build', 'debug', 'hush');
const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);

let server; // {child, base, output(), dataDir}

function requirePrerequisites() {
  assert.ok(existsSync(BIN),
    `hush binary not found at ${BIN}: run \`swift build --product hush\` first (or point HUSH_BIN at a built binary)`);
  assert.equal(typeof globalThis.WebSocket, 'function',
    'no global WebSocket: run node with --experimental-websocket (scripts/test-js does)');
}

/** Starts `hush serve --port 0` and waits for the banner with the bound port. */
async function startServer() {
  requirePrerequisites();
  const dataDir = mkdtempSync(join(tmpdir(), 'hush-js-test-'));
  const child = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', '0', '--data', dataDir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const base = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`hush serve printed no port within 30 s:\n${output}`)), 30_000);
    const onData = () => {
      const match = /Hush is listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(output);
      if (match && Number(match[2]) > 0) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        resolvePromise(match[1]);
      }
    };
    child.stdout.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hush serve exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  return { child, base, dataDir, output: () => output };
}

before(async () => {
  server = await startServer();
});

after(async () => {
  if (!server) return;
  const { child, dataDir } = server;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(dataDir, { recursive: true, force: true });
});

/**
 * GET /.well-known/hush on a connection of its own. (Not fetch(): Node's fetch and WebSocket
 * share undici's keep-alive pool, and the WebSocket upgrade would then be sent as the second
 * request of a kept-alive connection, which the server does not upgrade. Browsers always
 * open a fresh connection for a WebSocket.)
 */
function discover() {
  return new Promise((resolvePromise, reject) => {
    get(`${server.base}/.well-known/hush`, { agent: false }, (response) => {
      const chunks = [];
      response.on('data', (c) => chunks.push(c));
      response.on('end', () => {
        try {
          assert.equal(response.statusCode, 200);
          assert.match(response.headers['content-type'] ?? '', /application\/json/);
          resolvePromise(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (e) {
          reject(e);
        }
      });
    }).on('error', reject);
  });
}

/**
 * A WebSocket whose binary frames are queued; next() waits for the next frame, or rejects
 * when the socket closes first. `closed` resolves with the close event.
 */
function openSocket(url) {
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const queue = [];
  const waiters = [];
  let closeEvent = null;
  const closed = new Promise((r) => ws.addEventListener('close', (event) => {
    closeEvent = event;
    for (const w of waiters.splice(0)) w.reject(new Error(`socket closed (${event.code}) while waiting for a frame`));
    r(event);
  }));
  ws.addEventListener('message', (event) => {
    assert.ok(event.data instanceof ArrayBuffer, 'server sent a text frame; the protocol uses binary frames only');
    const frame = new Uint8Array(event.data);
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(frame); else queue.push(frame);
  });
  const opened = new Promise((r, reject) => {
    ws.addEventListener('open', r, { once: true });
    ws.addEventListener('error', (e) => reject(new Error(`cannot connect to ${url}: ${e.message ?? e.error ?? 'error'}`)), { once: true });
  });
  return {
    ws,
    opened,
    closed,
    send: (bytes) => ws.send(bytes),
    next(timeoutMs = 10_000) {
      if (queue.length) return Promise.resolve(queue.shift());
      if (closeEvent) return Promise.reject(new Error(`socket closed (${closeEvent.code})`));
      return new Promise((resolvePromise, reject) => {
        const timer = setTimeout(() => reject(new Error('no frame within timeout')), timeoutMs);
        waiters.push({
          resolve: (f) => { clearTimeout(timer); resolvePromise(f); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        });
      });
    },
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]);
}

/** Discovery + pinning + handshake. Returns the socket, the session and the client key pair. */
async function connect() {
  const info = await discover();
  const serverKey = base64ToBytes(info.publicKey);
  const serverId = enc(info.serverId);
  const keys = await generateKeyPair();
  const session = await SecureSession.client({
    id: clientIdFromPublicKey(keys.publicKey),
    privateKey: keys.privateKey,
    // The pinned server key, for exactly the server's id and nothing else.
    getPublicKey: (id) => (dec(id) === info.serverId ? serverKey : null),
  });
  const socket = openSocket(`${server.base.replace(/^http/, 'ws')}${info.ws}`);
  await socket.opened;
  socket.send(await session.connectRequest());
  let steps = 0;
  while (!session.established) {
    const result = await session.receive(await socket.next());
    if (result.send) socket.send(result.send);
    steps += 1;
    assert.ok(steps <= 2, 'the handshake takes two server messages');
  }
  assert.deepEqual(session.peerId, serverId);
  return { socket, session, keys, info };
}

/** Sends one JSON request through the session and returns the decrypted reply with its id. */
async function request(conn, body) {
  conn.socket.send(await conn.session.wrap(enc(JSON.stringify(body))));
  for (;;) {
    const { plaintext } = await conn.session.receive(await conn.socket.next());
    assert.ok(plaintext, 'after the handshake every server frame is a data message');
    const message = JSON.parse(dec(plaintext));
    if (message.id === body.id) return message;
    assert.equal(message.id, undefined, `a reply to another request: ${JSON.stringify(message)}`);
  }
}

test('discovery: the well-known document names a valid key whose fingerprint JS computes identically', async () => {
  const info = await discover();
  assert.equal(info.protocol, 2);
  assert.equal(info.ws, '/ws');
  const key = base64ToBytes(info.publicKey);
  assert.equal(key.length, 45);
  parsePublicKey(key);
  assert.deepEqual(base64UrlToBytes(info.serverId), key, 'serverId is the b64url of the same container');
  assert.equal(await fingerprint(key), info.fingerprint);
  // The banner on stdout carries the same fingerprint.
  assert.match(server.output(), new RegExp(`Server key fingerprint: ${info.fingerprint}`));
});

test('a JS Secure Session client completes the handshake with hush serve and talks through it', async () => {
  const conn = await connect();
  const keyB64 = bytesToBase64(conn.keys.publicKey);

  const hello = await request(conn, { type: 'hello', id: 'h1' });
  assert.equal(hello.type, 'hello', JSON.stringify(hello));
  assert.equal(hello.key, keyB64, 'the server knows us by the key the handshake proved');
  assert.deepEqual(hello.rooms, []);
  assert.deepEqual(hello.joins, []);

  const created = await request(conn, { type: 'create_room', id: 'c1', rotateEvery: 7 });
  assert.equal(created.type, 'room_created', JSON.stringify(created));
  assert.equal(created.epoch, 0);
  assert.equal(created.rotateEvery, 7);
  assert.match(created.room, /^[A-Za-z0-9_-]{22}$/);

  const again = await request(conn, { type: 'hello', id: 'h2' });
  assert.equal(again.rooms.length, 1);
  assert.equal(again.rooms[0].room, created.room);
  assert.equal(again.rooms[0].role, 'owner');
  assert.equal(again.rooms[0].owner, keyB64);

  // A protocol error travels back through the session too.
  const bad = await request(conn, { type: 'history', id: 'x1', room: 'AAAAAAAAAAAAAAAAAAAAAA', after: 0 });
  assert.equal(bad.type, 'error');
  assert.ok(['not_found', 'not_member'].includes(bad.code), JSON.stringify(bad));

  conn.socket.ws.close();
  await withTimeout(conn.socket.closed, 5000, 'close');
});

test('a garbage frame after the handshake closes the connection', async () => {
  const conn = await connect();
  assert.equal((await request(conn, { type: 'hello', id: 'h' })).type, 'hello');
  conn.socket.send(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]));
  const event = await withTimeout(conn.socket.closed, 10_000, 'server close after garbage');
  assert.ok(event.code >= 1000, `close code ${event.code}`);
});

test('a replayed data frame closes the connection', async () => {
  const conn = await connect();
  const frame = await conn.session.wrap(enc(JSON.stringify({ type: 'hello', id: 'r' })));
  conn.socket.send(frame);
  const { plaintext } = await conn.session.receive(await conn.socket.next());
  assert.equal(JSON.parse(dec(plaintext)).type, 'hello');
  conn.socket.send(frame);
  await withTimeout(conn.socket.closed, 10_000, 'server close after replay');
});

test('a garbage first frame fails the handshake and closes the connection', async () => {
  const info = await discover();
  const socket = openSocket(`${server.base.replace(/^http/, 'ws')}${info.ws}`);
  await socket.opened;
  socket.send(enc('not a Secure Session message'));
  const event = await withTimeout(socket.closed, 10_000, 'server close after garbage hello');
  assert.equal(event.code, 1008, 'policy violation');
  await assert.rejects(socket.next(), /closed/);
});

test('a client presenting another key id than its own fails the handshake', async () => {
  const info = await discover();
  const serverKey = base64ToBytes(info.publicKey);
  const mine = await generateKeyPair();
  const someoneElse = await generateKeyPair();
  const session = await SecureSession.client({
    id: clientIdFromPublicKey(someoneElse.publicKey), // signs with `mine`, claims `someoneElse`
    privateKey: mine.privateKey,
    getPublicKey: (id) => (dec(id) === info.serverId ? serverKey : null),
  });
  const socket = openSocket(`${server.base.replace(/^http/, 'ws')}${info.ws}`);
  await socket.opened;
  socket.send(await session.connectRequest());
  const event = await withTimeout(socket.closed, 10_000, 'server close after a forged id');
  assert.equal(event.code, 1008);
  assert.equal(session.established, false);
});

test('the client refuses a server that is not the pinned key', async () => {
  const info = await discover();
  const impostor = await generateKeyPair();
  const keys = await generateKeyPair();
  const session = await SecureSession.client({
    id: clientIdFromPublicKey(keys.publicKey),
    privateKey: keys.privateKey,
    getPublicKey: (id) => (dec(id) === info.serverId ? impostor.publicKey : null),
  });
  const socket = openSocket(`${server.base.replace(/^http/, 'ws')}${info.ws}`);
  await socket.opened;
  socket.send(await session.connectRequest());
  const reply = await socket.next();
  await assert.rejects(session.receive(reply), (e) => e instanceof ThemisError && e.code === 'badSignature');
  assert.equal(session.established, false);
  socket.ws.close();
  await withTimeout(socket.closed, 5000, 'close');
});
