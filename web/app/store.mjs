// The local key store: every room key, epoch key and pending invite, as one JSON document
// sealed with Secure Cell and kept in IndexedDB. A random 32-byte store key seals the
// document (cheap to re-seal on every change); the password seals the store key (Secure Cell
// passphrase mode, PBKDF2), so a wrong password opens nothing and changes nothing. The
// sealed record is also what export writes and import reads.
import { SecureCellSeal, base64ToBytes, bytesToBase64, utf8Encode } from '../themis/index.mjs';

const DB_NAME = 'hush';
const STORE = 'keystore';
const RECORD = 'main';
const CONTEXT = utf8Encode('hush-keystore-v1');
export const MAX_FILE_BYTES = 16 * 1024 * 1024;

export class WrongPassword extends Error {}

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error('This browser does not allow local storage (IndexedDB).'));
  });
}

async function dbCall(mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error ?? new Error('storage failed'));
      tx.onabort = () => reject(tx.error ?? new Error('storage was aborted (disk full?)'));
    });
  } finally {
    db.close();
  }
}

const readRecord = () => dbCall('readonly', (s) => s.get(RECORD));
const writeRecord = (record) => dbCall('readwrite', (s) => s.put(record, RECORD));

/** Strict shape of a sealed record, from IndexedDB or an imported file. */
function checkRecord(record) {
  const ok = record && typeof record === 'object' && record.format === 'hush-keystore' && record.v === 1 &&
    typeof record.lock === 'string' && record.lock.length < 1024 &&
    typeof record.data === 'string' && record.data.length < MAX_FILE_BYTES;
  if (!ok) throw new Error('This is not a Hush key store file.');
  try { base64ToBytes(record.lock); base64ToBytes(record.data); } catch { throw new Error('The key store file is damaged.'); }
  return record;
}

const emptyData = () => ({ v: 1, rooms: {} });

export class KeyStore {
  constructor(storeKey, record, data) {
    this.storeKey = storeKey;
    this.record = record;
    this.data = data;
    this.saving = Promise.resolve();
  }

  static async exists() {
    return Boolean(await readRecord());
  }

  /** First visit: a new, empty store sealed with `password`. */
  static async create(password) {
    if (await readRecord()) throw new Error('A key store already exists in this browser.');
    const storeKey = crypto.getRandomValues(new Uint8Array(32));
    const lock = await SecureCellSeal.withPassphrase(password).encrypt(storeKey, CONTEXT);
    const store = new KeyStore(storeKey, { format: 'hush-keystore', v: 1, lock: bytesToBase64(lock), data: '' }, emptyData());
    await store.save();
    return store;
  }

  /** Opens the store; throws WrongPassword and leaves everything as it was. */
  static async unlock(password) {
    const record = checkRecord(await readRecord());
    let storeKey;
    try {
      storeKey = await SecureCellSeal.withPassphrase(password).decrypt(base64ToBytes(record.lock), CONTEXT);
    } catch {
      throw new WrongPassword('Wrong password. Nothing was changed; try again.');
    }
    let data;
    try {
      const plain = await SecureCellSeal.withKey(storeKey).decrypt(base64ToBytes(record.data), CONTEXT);
      data = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plain));
    } catch {
      throw new Error('The password is right but the stored data is damaged. Import an exported copy.');
    }
    if (!data || data.v !== 1 || data.rooms === null || typeof data.rooms !== 'object') {
      throw new Error('The stored data has an unknown format.');
    }
    return new KeyStore(storeKey, record, data);
  }

  /** Re-seals and writes the whole document; calls are serialized and the last one wins. */
  save() {
    this.saving = this.saving.catch(() => {}).then(async () => {
      const plain = utf8Encode(JSON.stringify(this.data));
      const sealed = await SecureCellSeal.withKey(this.storeKey).encrypt(plain, CONTEXT);
      this.record = { ...this.record, data: bytesToBase64(sealed) };
      await writeRecord(this.record);
    });
    return this.saving;
  }

  /** The sealed record as a file body (still protected by the password). */
  async exportText() {
    await this.saving;
    return JSON.stringify(this.record);
  }

  /** Replaces this browser's store with an exported one; unlock it afterwards with its password. */
  static async importText(text) {
    if (typeof text !== 'string' || text.length > MAX_FILE_BYTES) throw new Error('The file is too large to be a key store.');
    let record;
    try { record = JSON.parse(text); } catch { throw new Error('This is not a Hush key store file.'); }
    const { format, v, lock, data } = checkRecord(record);
    await writeRecord({ format, v, lock, data });
  }
}

/** Asks the browser to keep our storage under pressure; returns 'granted', 'denied' or 'unavailable'. */
export async function requestPersistence() {
  if (!navigator.storage?.persist) return 'unavailable';
  try {
    if (await navigator.storage.persisted()) return 'granted';
    return (await navigator.storage.persist()) ? 'granted' : 'denied';
  } catch {
    return 'unavailable';
  }
}
