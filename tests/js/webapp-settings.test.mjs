// The browser's display preferences (web/app/settings.mjs): strict reading and the idle rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSettings, idleExpired, DEFAULTS } from '../../web/app/settings.mjs';

test('stored settings are read strictly, defaults for the rest', () => {
  assert.deepEqual(parseSettings(null), DEFAULTS);
  assert.deepEqual(parseSettings('not json'), DEFAULTS);
  assert.deepEqual(parseSettings('[1]'), { ...DEFAULTS });
  assert.deepEqual(parseSettings('{"theme":"dark","notify":true,"notifyText":true,"autolockMinutes":5}'),
    { theme: 'dark', notify: true, notifyText: true, autolockMinutes: 5 });
  assert.deepEqual(parseSettings('{"theme":"pink","notify":"yes","autolockMinutes":7}'), DEFAULTS);
});

test('the page locks once idle for the chosen minutes, never with 0', () => {
  const five = { ...DEFAULTS, autolockMinutes: 5 };
  assert.equal(idleExpired(five, 0, 5 * 60_000 - 1), false);
  assert.equal(idleExpired(five, 0, 5 * 60_000), true);
  assert.equal(idleExpired(DEFAULTS, 0, 1e12), false);
});
