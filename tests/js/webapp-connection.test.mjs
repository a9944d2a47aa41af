// The web client's connection (web/app/connection.mjs): what it makes of a hostile server's replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerError } from '../../web/app/connection.mjs';

test('ServerError.from: bounded strings from any JSON error object', () => {
  // Found by tests/js/fuzz-app.test.mjs: this reply (JSON) made String() throw a TypeError
  // ("Cannot convert object to primitive value") instead of rejecting the request.
  const reply = JSON.parse('{"type":"error","id":"r1","code":"stale_epoch","message":{"toString":0,"valueOf":0},"epoch":3}');
  const e = ServerError.from(reply);
  assert.ok(e instanceof ServerError);
  assert.deepEqual([e.code, e.message, e.epoch], ['stale_epoch', 'stale_epoch', 3]);
  assert.equal(ServerError.from({ code: { toString: 0 }, message: 'm' }).code, '');
  assert.equal(ServerError.from({ code: ['x'], message: 'm', epoch: -1 }).epoch, undefined);
  assert.equal(ServerError.from({ code: 7, message: null }).code, '7');
  assert.equal(ServerError.from({ code: 'c'.repeat(100), message: 'm'.repeat(400) }).code.length, 64);
  assert.equal(ServerError.from({ code: 'c', message: 'm'.repeat(400) }).message.length, 300);
});
