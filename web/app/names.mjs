// The name rule (docs/PROTOCOL.md §6.7), the one place the web client has it: display names in
// a room and the names an invite proposes (§6.6). Swift's is RoomState.canonicalName. No imports,
// so that formats.mjs (invite links) and room.mjs (name messages) can both use it.

export const MAX_NAME_SCALARS = 64;
// White space trimmed from both ends (the characters of `\s`), and the characters no name
// holds: C0 and C1 controls, line and paragraph separators, bidi controls, the zero-width space,
// the BOM, and lone surrogates (Swift strings cannot hold them).
const NAME_EDGES = /^[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+|[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$/gu;
const NAME_REFUSED = /[\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udfff]/u;

/**
 * The name rule: white space trimmed from both ends, NFC, then 1 to 64 Unicode scalars and none
 * refused. Returns the name as it is sent, or null when it is refused. A name read from a
 * message must already be in this form (`isCanonicalName`).
 */
export function canonicalName(input) {
  if (typeof input !== 'string') return null;
  const name = input.replace(NAME_EDGES, '').normalize('NFC');
  const scalars = [...name].length;
  if (scalars < 1 || scalars > MAX_NAME_SCALARS || NAME_REFUSED.test(name)) return null;
  return name;
}

export const isCanonicalName = (name) => typeof name === 'string' && canonicalName(name) === name;
