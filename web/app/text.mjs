// What the timeline makes of message text and times, pure: links in a text (never HTML: the
// page builds text nodes and <a> elements from these parts) and the day a message belongs to.

// A link starts with http:// or https:// and runs to the next space; trailing punctuation that
// usually ends a sentence is not part of it.
const LINK = /\bhttps?:\/\/[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'")\]}>]+$/;
const MAX_LINK = 2048;

/**
 * A message text → its parts in order: {text} or {text, href}. `href` is set only for a link
 * that parses as an http: or https: URL with a host; everything else stays text.
 */
export function linkParts(message) {
  const text = String(message);
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    let candidate = match[0];
    // A closing bracket stays in the link when the link opened one, e.g. a Wikipedia URL.
    let trail = candidate.match(TRAILING)?.[0] ?? '';
    while (trail.startsWith(')') && count(candidate.slice(0, -trail.length), '(') > count(candidate.slice(0, -trail.length), ')')) {
      trail = trail.slice(1);
    }
    if (trail) candidate = candidate.slice(0, -trail.length);
    const href = safeHref(candidate);
    if (!href) continue;
    if (match.index > last) parts.push({ text: text.slice(last, match.index) });
    parts.push({ text: candidate, href });
    last = match.index + candidate.length;
  }
  if (last < text.length || parts.length === 0) parts.push({ text: text.slice(last) });
  return parts;
}

function count(text, char) {
  let n = 0;
  for (const c of text) if (c === char) n += 1;
  return n;
}

/** The URL to open for a link's text, or null: http(s) with a host, no user:password part. */
export function safeHref(candidate) {
  if (candidate.length > MAX_LINK) return null;
  let url;
  try { url = new URL(candidate); } catch { return null; }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname || url.username || url.password) return null;
  return url.href;
}

/**
 * The safety-number text of two keys of a room: both fingerprints, in an order that does not
 * depend on who computes it, so that the two people read out or paste the very same text.
 */
export function safetyNumber(fingerprintA, fingerprintB) {
  return [fingerprintA, fingerprintB].sort().join(' / ');
}

/** The local calendar day of a time (ms) as 'YYYY-MM-DD': the key of a day separator. */
export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

/**
 * The label of a day separator: 'Today', 'Yesterday', or the date (the year only when it is
 * not the current one). `now` is the clock's time in ms (injected: the label changes at midnight).
 */
export function dayLabel(ms, now, locale = undefined) {
  const key = dayKey(ms);
  if (key === dayKey(now)) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(yesterday.getDate() - 1);
  if (key === dayKey(yesterday.getTime())) return 'Yesterday';
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return new Intl.DateTimeFormat(locale, sameYear
    ? { weekday: 'long', month: 'long', day: 'numeric' }
    : { year: 'numeric', month: 'long', day: 'numeric' }).format(new Date(ms));
}

/**
 * Timeline items with a day separator before the first item of each day:
 * [{kind: 'day', key: 'd<YYYY-MM-DD>', label}, item, …]. An item's time is `ts || at`.
 */
export function withDays(items, now, locale = undefined) {
  const out = [];
  let day = null;
  for (const item of items) {
    const ms = item.ts || item.at;
    if (Number.isFinite(ms)) {
      const key = dayKey(ms);
      if (key !== day) {
        day = key;
        out.push({ kind: 'day', key: `d${key}`, label: dayLabel(ms, now, locale) });
      }
    }
    out.push(item);
  }
  return out;
}
