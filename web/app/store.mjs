// The local key store: every room key, epoch key, pending invite and unsent message, as one
// JSON document sealed with Secure Cell and kept in IndexedDB. A random 32-byte store key seals
// the document (cheap to re-seal on every change); the password seals the store key (Secure Cell
// passphrase mode, PBKDF2), so a wrong password opens nothing and changes nothing. The sealed
// record is also what export writes and import reads.
//
// Several tabs share the one record. Every change is a function applied to the newest document
// (`update`), under a Web Lock, and written only if the record's version is still the one this
// tab read (compare-and-swap in one IndexedDB transaction): a tab that lost the race re-reads,
// re-applies its change and tries again. After each write a BroadcastChannel tells the other
// tabs to reload.
import { SecureCellSeal, base64ToBytes, bytesToBase64, utf8Encode } from '../themis/index.mjs';

const DB_NAME = 'hush';
const STORE = 'keystore';
const RECORD = 'main';
const LOCK = 'hush-keystore';
const CHANNEL = 'hush-keystore';
const CONTEXT = utf8Encode('hush-keystore-v1');
/** PBKDF2-SHA256 rounds sealing a new store key (OWASP's figure, as the Swift store); the cell's header carries the count, so stores sealed with fewer still open. */
export const PASSPHRASE_ITERATIONS = 600000;
const MAX_ATTEMPTS = 8;
export const MAX_FILE_BYTES = 16 * 1024 * 1024;

export class WrongPassword extends Error {}
/** Another tab imported a different key store: this tab's store key no longer opens it. */
export class StoreReplaced extends Error {
  constructor() { super('The key store was replaced in another tab.'); }
}

/** The record's write counter; null when there is no record, 0 for one written before versions. */
export const versionOf = (record) => (record ? (Number.isSafeInteger(record.version) ? record.version : 0) : null);

// ---- IndexedDB, Web Locks and BroadcastChannel: the browser's backend ----

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error('This browser does not allow local storage (IndexedDB).'));
  });
}

async function transaction(mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      // 'strict': the write is on disk when the transaction completes, not just in the OS cache.
      const tx = db.transaction(STORE, mode, mode === 'readwrite' ? { durability: 'strict' } : undefined);
      const result = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result.value);
      tx.onerror = () => reject(tx.error ?? new Error('storage failed'));
      tx.onabort = () => reject(tx.error ?? new Error('storage was aborted (disk full?)'));
    });
  } finally {
    db.close();
  }
}

export const browserBackend = {
  read: () => transaction('readonly', (s) => {
    const result = {};
    s.get(RECORD).onsuccess = (event) => { result.value = event.target.result; };
    return result;
  }),
  /** Writes `record` only if the stored record still has version `expected`; resolves whether it did. */
  writeIf: (expected, record) => transaction('readwrite', (s) => {
    const result = { value: false };
    s.get(RECORD).onsuccess = (event) => {
      if (versionOf(event.target.result) !== expected) return;
      s.put(record, RECORD);
      result.value = true;
    };
    return result;
  }),
  exclusive: (fn) => navigator.locks.request(LOCK, fn),
  channel: () => new BroadcastChannel(CHANNEL),
};

// ---- the sealed record ----

/** Strict shape of a sealed record, from IndexedDB or an imported file. */
function checkRecord(record) {
  const ok = record && typeof record === 'object' && record.format === 'hush-keystore' && record.v === 1 &&
    typeof record.lock === 'string' && record.lock.length < 1024 &&
    typeof record.data === 'string' && record.data.length < MAX_FILE_BYTES &&
    (record.version === undefined || (Number.isSafeInteger(record.version) && record.version >= 0));
  if (!ok) throw new Error('This is not a Hush key store file.');
  try { base64ToBytes(record.lock); base64ToBytes(record.data); } catch { throw new Error('The key store file is damaged.'); }
  return record;
}

async function openLock(record, password) {
  try {
    return await SecureCellSeal.withPassphrase(password).decrypt(base64ToBytes(record.lock), CONTEXT);
  } catch {
    throw new WrongPassword('Wrong password. Nothing was changed; try again.');
  }
}

async function openData(record, storeKey) {
  let data;
  try {
    const plain = await SecureCellSeal.withKey(storeKey).decrypt(base64ToBytes(record.data), CONTEXT);
    data = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plain));
  } catch {
    throw new Error('The password is right but the stored data is damaged. Import an exported copy.');
  }
  if (!data || data.v !== 1 || data.rooms === null || typeof data.rooms !== 'object' || Array.isArray(data.rooms)) {
    throw new Error('The stored data has an unknown format.');
  }
  return data;
}

async function sealData(data, storeKey) {
  const sealed = await SecureCellSeal.withKey(storeKey).encrypt(utf8Encode(JSON.stringify(data)), CONTEXT);
  return bytesToBase64(sealed);
}

const emptyData = () => ({ v: 1, rooms: {} });

export class KeyStore {
  constructor(backend, storeKey, record, data) {
    this.backend = backend;
    this.storeKey = storeKey;
    this.record = record;
    this.data = data;
    this.version = versionOf(record);
    this.onChange = () => {}; // another tab changed the document (this.data is the new one)
    this.onReplaced = () => {}; // another tab imported a different store
    this.channel = null;
  }

  static async exists(backend = browserBackend) {
    return Boolean(await backend.read());
  }

  /** First visit: a new, empty store sealed with `password`. */
  static async create(password, backend = browserBackend) {
    const storeKey = crypto.getRandomValues(new Uint8Array(32));
    const lock = bytesToBase64(await SecureCellSeal.withPassphrase(password, { iterations: PASSPHRASE_ITERATIONS }).encrypt(storeKey, CONTEXT));
    const data = emptyData();
    const record = { format: 'hush-keystore', v: 1, lock, data: await sealData(data, storeKey), version: 1 };
    const written = await backend.exclusive(() => backend.writeIf(null, record));
    if (!written) throw new Error('A key store already exists in this browser.');
    return new KeyStore(backend, storeKey, record, data);
  }

  /** Opens the store; throws WrongPassword and leaves everything as it was. */
  static async unlock(password, backend = browserBackend) {
    const record = checkRecord(await backend.read());
    const storeKey = await openLock(record, password);
    return new KeyStore(backend, storeKey, record, await openData(record, storeKey));
  }

  /** Starts hearing other tabs' writes (onChange, onReplaced). */
  listen() {
    this.channel = this.backend.channel();
    this.channel.onmessage = (event) => {
      if (event.data?.replaced) this.onReplaced();
      else this.refresh().catch(() => {}); // a replaced store was reported by load()
    };
  }

  /** Re-reads the record when another tab wrote it; resolves whether the document changed. */
  async refresh() {
    const record = await this.backend.read();
    if (versionOf(record) === this.version) return false;
    await this.load(record);
    this.onChange();
    return true;
  }

  async load(record) {
    if (!record || record.lock !== this.record.lock) {
      this.onReplaced();
      throw new StoreReplaced();
    }
    this.data = await openData(checkRecord(record), this.storeKey);
    this.record = record;
    this.version = versionOf(record);
  }

  /**
   * Applies `change(data)` (it may be async) to the newest document and writes it; resolves with
   * what `change` returned. `change` must be a change, not a snapshot: when another tab wrote
   * first it runs again on that tab's document.
   */
  update(change) {
    return this.backend.exclusive(async () => {
      let external = false;
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
        const stored = await this.backend.read();
        if (versionOf(stored) !== this.version) {
          await this.load(stored);
          external = true;
        }
        const draft = structuredClone(this.data);
        const result = await change(draft);
        const record = { ...this.record, data: await sealData(draft, this.storeKey), version: this.version + 1 };
        if (await this.backend.writeIf(this.version, record)) {
          this.data = draft;
          this.record = record;
          this.version = record.version;
          if (external) this.onChange();
          this.channel?.postMessage({ version: this.version });
          return result;
        }
      }
      throw new Error('The key store keeps changing under this tab; try again.');
    });
  }

  /** The sealed record as a file body (still protected by the password). */
  async exportText() {
    await this.refresh();
    const { format, v, lock, data } = this.record;
    return JSON.stringify({ format, v, lock, data });
  }

  /**
   * Replaces this browser's store with an exported one, once `password` opens it (its store key
   * and its document); a wrong password or a damaged file changes nothing. Returns the new store.
   */
  static async importText(text, password, backend = browserBackend) {
    if (typeof text !== 'string' || text.length > MAX_FILE_BYTES) throw new Error('The file is too large to be a key store.');
    let parsed;
    try { parsed = JSON.parse(text); } catch { throw new Error('This is not a Hush key store file.'); }
    const { format, v, lock, data } = checkRecord(parsed);
    const storeKey = await openLock({ lock }, password);
    const document = await openData({ data }, storeKey);
    const record = await backend.exclusive(async () => {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
        const expected = versionOf(await backend.read());
        const next = { format, v, lock, data, version: (expected ?? 0) + 1 };
        if (await backend.writeIf(expected, next)) return next;
      }
      throw new Error('The key store keeps changing; try again.');
    });
    const channel = backend.channel();
    channel.postMessage({ replaced: true });
    channel.close();
    return new KeyStore(backend, storeKey, record, document);
  }
}

/** Whether this origin's storage is persistent now: 'granted', 'not-granted' or 'unavailable'. */
export async function persistenceState() {
  if (!navigator.storage?.persisted || !navigator.storage?.persist) return 'unavailable';
  try {
    return (await navigator.storage.persisted()) ? 'granted' : 'not-granted';
  } catch {
    return 'unavailable';
  }
}

/** Asks for persistent storage: 'granted', 'denied' or 'unavailable' (a browser may never answer). */
export async function requestPersistence() {
  try {
    return (await navigator.storage.persist()) ? 'granted' : 'denied';
  } catch {
    return 'unavailable';
  }
}
