// The QR encoder (web/app/qr.mjs) against known answers from the standard and worked examples,
// and module for module against another encoder's symbols (Tests/Fixtures/qr/qr-matrices.json,
// made by Tests/Fixtures/qr/make_vectors.py with Python's `qrcode`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  encodeQr, reedSolomon, formatBits, versionBits, alignmentPositions, dataCodewords, dataCodewordsFor,
} from '../../web/app/qr.mjs';

test('Reed–Solomon: the worked example of "HELLO WORLD" at 1-M', () => {
  const data = [32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17];
  assert.deepEqual(reedSolomon(data, 10), [196, 35, 39, 119, 235, 215, 231, 226, 93, 23]);
});

test('format information: the standard\'s table for levels L and M', () => {
  const L = ['111011111000100', '111001011110011', '111110110101010', '111100010011101',
    '110011000101111', '110001100011000', '110110001000001', '110100101110110'];
  const M = ['101010000010010', '101000100100101', '101111001111100', '101101101001011',
    '100010111111001', '100000011001110', '100111110010111', '100101010100000'];
  for (let mask = 0; mask < 8; mask += 1) {
    assert.equal(formatBits('L', mask).toString(2).padStart(15, '0'), L[mask]);
    assert.equal(formatBits('M', mask).toString(2).padStart(15, '0'), M[mask]);
  }
});

test('version information: versions 7, 8 and 40', () => {
  assert.equal(versionBits(7).toString(2).padStart(18, '0'), '000111110010010100');
  assert.equal(versionBits(8).toString(2).padStart(18, '0'), '001000010110111100');
  assert.equal(versionBits(40).toString(2).padStart(18, '0'), '101000110001101001');
});

test('alignment pattern positions and byte capacities from the standard\'s tables', () => {
  assert.deepEqual(alignmentPositions(1), []);
  assert.deepEqual(alignmentPositions(2), [6, 18]);
  assert.deepEqual(alignmentPositions(7), [6, 22, 38]);
  assert.deepEqual(alignmentPositions(32), [6, 34, 60, 86, 112, 138]);
  assert.deepEqual(alignmentPositions(40), [6, 30, 58, 86, 114, 142, 170]);
  // Byte-mode capacity = data codewords less the mode and count fields.
  const bytes = (v, l) => Math.floor((dataCodewords(v, l) * 8 - 4 - (v <= 9 ? 8 : 16)) / 8);
  assert.deepEqual([bytes(1, 'L'), bytes(1, 'M'), bytes(1, 'Q'), bytes(1, 'H')], [17, 14, 11, 7]);
  assert.equal(bytes(10, 'M'), 213);
  assert.equal(bytes(40, 'L'), 2953);
  assert.equal(bytes(40, 'H'), 1273);
});

test('data codewords: mode, count, data, terminator and padding', () => {
  assert.deepEqual(dataCodewordsFor(new TextEncoder().encode('hi'), 1, 'H'), [0x40, 0x26, 0x86, 0x90, 0xec, 0x11, 0xec, 0x11, 0xec]);
});

const { cases } = JSON.parse(readFileSync(new URL('../../Tests/Fixtures/qr/qr-matrices.json', import.meta.url), 'utf8'));
for (const c of cases) {
  test(`the same symbol as another encoder: version ${c.version}-${c.level}, mask ${c.mask}`, () => {
    const qr = encodeQr(c.text, { level: c.level, version: c.version, mask: c.mask });
    assert.equal(qr.size, c.rows.length);
    const rows = [];
    for (let y = 0; y < qr.size; y += 1) {
      let row = '';
      for (let x = 0; x < qr.size; x += 1) row += qr.dark(x, y) ? '1' : '0';
      rows.push(row);
    }
    const differ = rows.findIndex((row, y) => row !== c.rows[y]);
    assert.equal(differ, -1, `row ${differ} differs:\n${rows[differ]}\n${c.rows[differ]}`);
  });
}

test('the smallest version that holds the text, and a mask of the eight', () => {
  assert.equal(encodeQr('x'.repeat(14)).version, 1);
  assert.equal(encodeQr('x'.repeat(15)).version, 2);
  const link = `http://127.0.0.1:8080/#${'e'.repeat(250)}`;
  const qr = encodeQr(link);
  assert.ok(qr.version >= 10 && qr.version <= 14, String(qr.version));
  assert.ok(qr.mask >= 0 && qr.mask < 8);
  assert.throws(() => encodeQr('x'.repeat(3000), { level: 'L' }), RangeError);
});
