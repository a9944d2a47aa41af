// Signs a test release's manifest with a test release key, as `hush web sign` does with the
// real one (which is offline, and which `hush web sign` alone accepts).
// Usage: node sign_release.mjs KEY.priv manifest.json manifest.sig
import { readFileSync, writeFileSync } from 'node:fs';
import { secureMessageSign } from '../../web/themis/message.mjs';
import { base64ToBytes } from '../../web/themis/bytes.mjs';

const [keyFile, manifest, out] = process.argv.slice(2);
const key = base64ToBytes(readFileSync(keyFile, 'utf8').trim());
writeFileSync(out, await secureMessageSign(key, new Uint8Array(readFileSync(manifest))));
