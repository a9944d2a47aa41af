// The service worker that pins the web client (docs/CODE_TRUST.md). Installed on the first
// visit, it keeps the signed release it was installed with and serves the app's files from
// that copy. On every page load the page asks it to `check` what the server serves now: the
// same release, file for file; or a newer release signed with the release key, which it
// downloads, checks and pins. Anything else is refused, and the page stays locked.
import { secureMessageVerify } from './themis/message.mjs';
import { base64ToBytes } from './themis/bytes.mjs';
import { RELEASE_PUBLIC_KEY } from './app/release-key.mjs';

const STATE = 'hush-pinned'; // the pinned manifest and its signature
const RELEASE_CACHE = 'hush-release-';
const MAX_MANIFEST_BYTES = 256 * 1024;
const MAX_FILES = 1024;
const PATH = /^(\/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+$/;
const DIGEST = /^[0-9a-f]{64}$/;

/** What the server sent is not the pinned release nor a newer signed one. */
class Refusal extends Error {}

async function fetchBytes(path) {
  const response = await fetch(path, { cache: 'no-store', credentials: 'omit', redirect: 'error' });
  if (!response.ok) throw new Refusal(`${path} answered HTTP ${response.status}`);
  return { response, bytes: new Uint8Array(await response.arrayBuffer()) };
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The manifest, checked field by field (as WebManifest.parse in Swift). */
function parseManifest(bytes) {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new Refusal('the manifest is too large');
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new Refusal('the manifest is not JSON');
  }
  const files = manifest?.files;
  const valid = manifest?.app === 'hush-web' && Number.isSafeInteger(manifest.release) && manifest.release >= 1
    && files && typeof files === 'object' && !Array.isArray(files) && typeof files['/index.html'] === 'string'
    && Object.keys(files).length <= MAX_FILES
    && Object.entries(files).every(([path, digest]) => path.length <= 256 && PATH.test(path) && DIGEST.test(digest));
  if (!valid) throw new Refusal('the manifest is not a Hush web release');
  return manifest;
}

/** A manifest whose signature verifies with the release key, and the manifest it signs. */
async function openRelease(manifestBytes, signedBytes) {
  let signed;
  try {
    signed = await secureMessageVerify(base64ToBytes(RELEASE_PUBLIC_KEY), signedBytes);
  } catch {
    throw new Refusal('the manifest is not signed with the Hush release key');
  }
  if (!sameBytes(signed, manifestBytes)) throw new Refusal('the manifest is not the one its signature signs');
  return parseManifest(manifestBytes);
}

/** Every file of `manifest` from the server, each checked against its digest. */
async function download(manifest) {
  const entries = [];
  for (const [path, digest] of Object.entries(manifest.files)) {
    const { response, bytes } = await fetchBytes(path);
    if ((await sha256Hex(bytes)) !== digest) throw new Refusal(`${path} is not the file the signed release lists`);
    entries.push([path, new Response(bytes, { status: 200, headers: response.headers })]);
  }
  return entries;
}

let pinnedCache = null; // the pinned release, read once per worker start

async function pinned() {
  if (pinnedCache) return pinnedCache;
  const state = await caches.open(STATE);
  const [manifest, signature] = await Promise.all([state.match('/manifest.json'), state.match('/manifest.sig')]);
  if (!manifest || !signature) return null;
  const manifestBytes = new Uint8Array(await manifest.arrayBuffer());
  const signedBytes = new Uint8Array(await signature.arrayBuffer());
  pinnedCache = { manifestBytes, signedBytes, manifest: parseManifest(manifestBytes) };
  return pinnedCache;
}

/** Stores a checked release and makes it the pinned one; the state moves last. */
async function pin(manifestBytes, signedBytes, manifest, entries) {
  const name = RELEASE_CACHE + manifest.release;
  await caches.delete(name);
  const files = await caches.open(name);
  for (const [path, response] of entries) await files.put(path, response);
  const state = await caches.open(STATE);
  await state.put('/manifest.sig', new Response(signedBytes));
  await state.put('/manifest.json', new Response(manifestBytes));
  pinnedCache = { manifestBytes, signedBytes, manifest };
  for (const old of await caches.keys()) {
    if (old.startsWith(RELEASE_CACHE) && old !== name) await caches.delete(old);
  }
}

async function pinFromServer() {
  const { bytes: manifestBytes } = await fetchBytes('/manifest.json');
  const { bytes: signedBytes } = await fetchBytes('/manifest.sig');
  const manifest = await openRelease(manifestBytes, signedBytes);
  const current = await pinned();
  if (current && manifest.release <= current.manifest.release) {
    throw new Refusal(`release ${manifest.release} is not newer than the pinned release ${current.manifest.release}`);
  }
  await pin(manifestBytes, signedBytes, manifest, await download(manifest));
  return manifest.release;
}

/** The verdict on what the server serves now. */
async function check() {
  const current = await pinned();
  if (!current) return { state: 'refused', reason: 'no release is pinned' };
  let manifestBytes;
  let signedBytes;
  try {
    ({ bytes: manifestBytes } = await fetchBytes('/manifest.json'));
    ({ bytes: signedBytes } = await fetchBytes('/manifest.sig'));
  } catch (error) {
    if (error instanceof Refusal) throw error;
    return { state: 'pinned', release: current.manifest.release, offline: true }; // the pinned code runs offline
  }
  if (!sameBytes(manifestBytes, current.manifestBytes) || !sameBytes(signedBytes, current.signedBytes)) {
    return { state: 'updated', release: await pinFromServer() };
  }
  const changed = [];
  for (const [path, digest] of Object.entries(current.manifest.files)) {
    const { bytes } = await fetchBytes(path);
    if ((await sha256Hex(bytes)) !== digest) changed.push(path);
  }
  const { bytes: page } = await fetchBytes('/');
  if ((await sha256Hex(page)) !== current.manifest.files['/index.html']) changed.push('/');
  if (changed.length > 0) throw new Refusal(`changed: ${changed.join(', ')}`);
  return { state: 'pinned', release: current.manifest.release };
}

self.addEventListener('install', (event) => {
  // The first worker pins the release the server serves now (the first visit is trusted); a
  // later worker script finds a release pinned and leaves it to `check`.
  event.waitUntil(pinned().then((current) => current ?? pinFromServer()).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

// One check at a time: two pages (or a page and its worker update) must not both pin a release.
let checks = Promise.resolve();

self.addEventListener('message', (event) => {
  if (event.data?.type !== 'check' || !event.ports[0]) return;
  const reply = event.ports[0];
  const run = checks.then(check);
  checks = run.catch(() => {});
  event.waitUntil(run.then(
    (verdict) => reply.postMessage(verdict),
    (error) => reply.postMessage({ state: 'refused', reason: error instanceof Refusal ? error.message : 'the check failed' })));
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  const path = url.pathname === '/' ? '/index.html' : url.pathname;
  event.respondWith((async () => {
    const current = await pinned();
    if (current && Object.hasOwn(current.manifest.files, path)) {
      const copy = await (await caches.open(RELEASE_CACHE + current.manifest.release)).match(path);
      if (copy) return copy;
    }
    return fetch(event.request);
  })());
});
