// Safety codes (web/js/safety.js): the derivation on fixed fingerprints, and the verified/changed bookkeeping.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { safetyCode, normalizeFingerprint, SafetyBook, memoryStorage, SAFETY_CONTEXT } from '../../web/js/safety.js';

const ADA = {
  algorithm: 'sha-256',
  fingerprint: '3A:9F:10:C4:5B:77:E2:08:D1:6C:AA:34:90:FE:12:5D:8B:03:47:C9:E6:21:7A:B5:0F:D8:64:39:C2:1E:85:F0',
};
const BOB = {
  algorithm: 'sha-256',
  fingerprint: 'E1:04:7C:92:3D:B8:56:AF:20:C7:19:64:FB:8E:05:D3:4A:71:BC:28:96:EF:13:5A:C0:87:3B:D4:62:09:FA:1C',
};
const MALLORY = { algorithm: 'sha-256', fingerprint: ADA.fingerprint.replace(/^3A/, '3B') };

test('normalizeFingerprint: case, separators, malformed input', () => {
  assert.equal(normalizeFingerprint({ algorithm: 'SHA-256', fingerprint: 'ab:cd:0F' }), 'sha-256 ABCD0F');
  assert.equal(normalizeFingerprint({ algorithm: 'sha-256', fingerprint: 'ABCD0F' }), 'sha-256 ABCD0F');
  assert.equal(normalizeFingerprint(null), null);
  assert.equal(normalizeFingerprint({ algorithm: 'sha-256' }), null);
  assert.equal(normalizeFingerprint({ algorithm: '', fingerprint: 'AB' }), null);
  assert.equal(normalizeFingerprint({ algorithm: 'sha-256', fingerprint: 'XY:ZZ' }), null);
  assert.equal(normalizeFingerprint({ algorithm: 'sha-256', fingerprint: 'ABC' }), null, 'odd number of hex digits');
});

test('safetyCode: fixed inputs give a fixed code, the same from both ends', async () => {
  const fromAda = await safetyCode(ADA, BOB);
  const fromBob = await safetyCode(BOB, ADA);
  assert.deepEqual(fromAda, fromBob, 'each end calls its own certificate "local": the order does not matter');
  assert.equal(fromAda.groups.length, 6);
  for (const g of fromAda.groups) assert.match(g, /^\d{5}$/);
  assert.equal(fromAda.code, fromAda.groups.join(' '));
  assert.equal(fromAda.code, '32722 71966 39484 46042 05589 26860');
});

test('safetyCode: the documented derivation (SHA-256 of context, lower, higher; 5 bytes per group mod 100000)', async () => {
  const a = normalizeFingerprint(ADA);
  const b = normalizeFingerprint(BOB);
  const [lower, higher] = [a, b].sort();
  const hash = createHash('sha256').update(`${SAFETY_CONTEXT}\n${lower}\n${higher}`).digest();
  const groups = [0, 1, 2, 3, 4, 5].map((g) => String(Number(hash.readUIntBE(g * 5, 5) % 100000)).padStart(5, '0'));
  assert.equal((await safetyCode(ADA, BOB)).code, groups.join(' '));
  // Notation does not matter: lower-case hex without colons is the same certificate.
  const plain = { algorithm: 'SHA-256', fingerprint: BOB.fingerprint.replace(/:/g, '').toLowerCase() };
  assert.equal((await safetyCode(ADA, plain)).code, groups.join(' '));
});

test('safetyCode: a man in the middle (another certificate on one side) changes the code; unknown → null', async () => {
  const real = await safetyCode(ADA, BOB);
  const adaSeesMallory = await safetyCode(ADA, MALLORY);
  const bobSeesMallory = await safetyCode(MALLORY, BOB);
  assert.notEqual(adaSeesMallory.code, real.code);
  assert.notEqual(bobSeesMallory.code, real.code);
  assert.notEqual(adaSeesMallory.code, bobSeesMallory.code, 'the two ends of an intercepted call disagree');
  assert.notEqual((await safetyCode(ADA, { ...BOB, algorithm: 'sha-384' })).code, real.code, 'the algorithm is hashed too');
  assert.equal(await safetyCode(ADA, null), null);
  assert.equal(await safetyCode(null, BOB), null);
  assert.equal(await safetyCode(ADA, { algorithm: 'sha-256', fingerprint: '' }), null);
});

test('SafetyBook: new, same, changed; verified per code; a change while verified is flagged', async () => {
  const storage = memoryStorage();
  const book = new SafetyBook(storage);
  const bob = {};
  assert.equal(book.update(bob, null), 'none');
  assert.equal(book.status(bob), null);
  assert.equal(book.update(bob, '11111 22222'), 'new');
  assert.equal(book.update(bob, '11111 22222'), 'same');
  assert.deepEqual(book.status(bob), { code: '11111 22222', verified: false, changed: false, changedWhileVerified: false, previous: null });
  assert.equal(book.verify(bob), true);
  assert.equal(book.status(bob).verified, true);
  assert.deepEqual(storage.get(), ['11111 22222']);

  // New certificates mid-call (an ICE restart that re-keyed, or someone in between): a new code, unverified.
  assert.equal(book.update(bob, '33333 44444'), 'changed');
  assert.deepEqual(book.status(bob), { code: '33333 44444', verified: false, changed: true, changedWhileVerified: true, previous: '11111 22222' });
  book.verify(bob);
  assert.deepEqual(book.status(bob), { code: '33333 44444', verified: true, changed: false, changedWhileVerified: false, previous: '11111 22222' });
  book.unverify(bob);
  assert.equal(book.status(bob).verified, false);

  // Verification outlives the participant entry (a reload within the session gets the same answer for the same
  // code), and a second book on the same storage (the page reloaded) sees it.
  book.verify(bob);
  book.forget(bob);
  assert.equal(book.status(bob), null);
  const again = new SafetyBook(storage);
  again.update(bob, '33333 44444');
  assert.equal(again.status(bob).verified, true);
  assert.equal(again.verify({}), false, 'nothing to verify before a code is known');
});
