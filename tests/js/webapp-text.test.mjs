// The timeline's text rules (web/app/text.mjs): links in hostile message text, and day
// separators with an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkParts, safeHref, dayKey, dayLabel, withDays, safetyNumber } from '../../web/app/text.mjs';

test('http and https links become link parts; the rest stays text, in order', () => {
  assert.deepEqual(linkParts('see https://example.com/a?b=1 and http://x.org.'), [
    { text: 'see ' }, { text: 'https://example.com/a?b=1', href: 'https://example.com/a?b=1' },
    { text: ' and ' }, { text: 'http://x.org', href: 'http://x.org/' }, { text: '.' },
  ]);
  assert.deepEqual(linkParts('no link here'), [{ text: 'no link here' }]);
  assert.deepEqual(linkParts(''), [{ text: '' }]);
});

test('other schemes and look-alikes stay text', () => {
  for (const text of ['javascript:alert(1)', 'data:text/html,<b>x</b>', 'ftp://example.com/', 'xhttps://example.com',
    'file:///etc/passwd', 'https://', 'https://user:pw@example.com/']) {
    assert.ok(linkParts(text).every((p) => !p.href), text);
  }
  assert.equal(safeHref('https://' + 'a'.repeat(2050) + '.com'), null);
});

test('markup in a link or around it is text: a link ends before < > and quotes', () => {
  const parts = linkParts('<a href="https://evil.example/">x</a>');
  assert.deepEqual(parts.filter((p) => p.href).map((p) => p.href), ['https://evil.example/']);
  assert.equal(parts.map((p) => p.text).join(''), '<a href="https://evil.example/">x</a>');
});

test('closing punctuation ends a link, unless the link opened the bracket', () => {
  assert.deepEqual(linkParts('(https://example.com/x)').map((p) => p.text), ['(', 'https://example.com/x', ')']);
  assert.equal(linkParts('https://en.wikipedia.org/wiki/Hush_(film)')[0].text, 'https://en.wikipedia.org/wiki/Hush_(film)');
});

test('day keys and labels follow the injected clock', () => {
  const now = new Date(2026, 11, 2, 9, 30).getTime();
  assert.equal(dayKey(now), '2026-12-02');
  assert.equal(dayLabel(new Date(2026, 11, 2, 0, 1).getTime(), now), 'Today');
  assert.equal(dayLabel(new Date(2026, 11, 1, 23, 59).getTime(), now), 'Yesterday');
  assert.equal(dayLabel(new Date(2026, 10, 20, 12).getTime(), now, 'en-US'), 'Friday, November 20');
  assert.equal(dayLabel(new Date(2025, 10, 20, 12).getTime(), now, 'en-US'), 'November 20, 2025');
  // The next day, the same message is yesterday's.
  assert.equal(dayLabel(now, now + 24 * 3600e3), 'Yesterday');
});

test('a separator goes before the first item of each day', () => {
  const day1 = new Date(2026, 11, 1, 10).getTime();
  const day2 = new Date(2026, 11, 2, 10).getTime();
  const items = [{ n: 1, at: day1 }, { n: 2, ts: day1 + 1000, at: day2 }, { n: 3, at: day2 }, { n: 4, at: day2 + 60e3 }];
  const out = withDays(items, day2);
  assert.deepEqual(out.map((i) => i.kind === 'day' ? i.label : i.n), ['Yesterday', 1, 2, 'Today', 3, 4]);
  assert.deepEqual(out.filter((i) => i.kind === 'day').map((i) => i.key), ['d2026-12-01', 'd2026-12-02']);
});

test('a safety number reads the same for both people', () => {
  const a = '1a2b 3c4d 5e6f 7a8b 9c0d';
  const b = '0f0f 1e1e 2d2d 3c3c 4b4b';
  assert.equal(safetyNumber(a, b), safetyNumber(b, a));
  assert.equal(safetyNumber(a, b), `${b} / ${a}`);
});
