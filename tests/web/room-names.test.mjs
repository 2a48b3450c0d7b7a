// The web client's generated room names: readable, valid for the protocol, and not guessable (issue 9 item 12:
// the old 368,640 adjective-animal-number names were swept in about 4 minutes).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ROOM_NAME_BITS, randomInt, randomRoomName } from '../../web/js/names.js';

test('generated room names carry at least 64 random bits and stay readable', () => {
  assert.ok(ROOM_NAME_BITS >= 64, `${ROOM_NAME_BITS} bits`);
  const seen = new Set();
  for (let i = 0; i < 20_000; i++) {
    const name = randomRoomName();
    assert.match(name, /^[a-z]+-[a-z]+-\d{4}-\d{4}-\d{4}-\d{4}$/, name);
    assert.ok(name.length <= 64, name); // the protocol's limit
    seen.add(name);
  }
  assert.equal(seen.size, 20_000, 'no repeats in 20,000 names');
});

test('randomInt is uniform (no modulo bias) and in range', () => {
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 100_000; i++) {
    const v = randomInt(10);
    assert.ok(Number.isInteger(v) && v >= 0 && v < 10);
    counts[v]++;
  }
  for (const c of counts) assert.ok(Math.abs(c - 10_000) < 600, `${counts}`);
  assert.equal(randomInt(1), 0);
});
