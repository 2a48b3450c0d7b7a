// The room's per-person bookkeeping (web/js/peer-state.js): which peer messages are taken over which path, what
// a tile shows of someone's media and connection, the failure diagnosis (once per interval, cleared on connect),
// the first-frame watch and the safety code's input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerState, parsePeerData, connectionText, DIAGNOSE_EVERY_MS } from '../../web/js/peer-state.js';

test('peer messages: id and recording only over the data channel, the rest over either path', () => {
  for (const via of ['datachannel', 'signaling']) {
    assert.deepEqual(parsePeerData({ t: 'state', audio: true, video: false, screen: true }, via),
      { kind: 'state', remote: { audio: true, video: false, screen: true, known: true } });
    assert.deepEqual(parsePeerData({ t: 'chat', text: 'hi' }, via), { kind: 'chat', text: 'hi' });
    assert.deepEqual(parsePeerData({ t: 'bye' }, via), { kind: 'bye' });
  }
  assert.deepEqual(parsePeerData({ t: 'id', id: 'abc' }, 'datachannel'), { kind: 'id', id: 'abc' });
  assert.equal(parsePeerData({ t: 'id', id: 'abc' }, 'signaling'), null, 'the server cannot move a connection');
  assert.deepEqual(parsePeerData({ t: 'recording', on: true }, 'datachannel'), { kind: 'recording', on: true });
  assert.equal(parsePeerData({ t: 'recording', on: false }, 'signaling'), null, 'the server cannot hide a recording');
});

test('peer messages: only exact booleans count, and malformed messages are ignored', () => {
  assert.deepEqual(parsePeerData({ t: 'state', audio: 'yes', video: 1, screen: null }, 'datachannel').remote,
    { audio: false, video: false, screen: false, known: true });
  assert.deepEqual(parsePeerData({ t: 'recording', on: 'true' }, 'datachannel'), { kind: 'recording', on: false });
  for (const bad of [null, undefined, 'state', 42, [], {}, { t: 7 }, { t: 'chat', text: 5 }, { t: 'nope' }]) {
    assert.equal(parsePeerData(bad, 'datachannel'), null, JSON.stringify(bad));
  }
});

test('a tile shows audio and video until they say otherwise, then what they said and what arrives', () => {
  const s = new PeerState();
  assert.deepEqual(s.media(false), { cam: false, mic: true, screen: false }, 'no video arrives yet');
  assert.deepEqual(s.media(true), { cam: true, mic: true, screen: false });
  assert.equal(s.speaking(0.5), true);
  s.said(parsePeerData({ t: 'state', audio: false, video: true, screen: true }, 'signaling').remote);
  assert.deepEqual(s.media(true), { cam: true, mic: false, screen: true });
  assert.deepEqual(s.media(false), { cam: false, mic: false, screen: true }, 'a camera said on but not arriving is off');
  assert.equal(s.speaking(0.5), false, 'a muted microphone never lights the tile');
  s.said({ audio: true, video: false, screen: false, known: true });
  assert.deepEqual(s.media(true), { cam: false, mic: true, screen: false }, 'a camera said off is off');
  assert.equal(s.speaking(0.05), false);
  assert.equal(s.speaking(0.07), true);
});

test('connection words on the tile', () => {
  assert.equal(connectionText('connected', 'no relay'), null);
  assert.equal(connectionText('new', null), 'Connecting…');
  assert.equal(connectionText('connecting', null), 'Connecting…');
  assert.equal(connectionText('disconnected', null), 'Reconnecting…');
  assert.equal(connectionText('failed', null), 'Connection lost — retrying');
  assert.equal(connectionText('failed', 'the relay refused'), "Can't connect: the relay refused (still trying)");
});

test('a failed or stuck connection is diagnosed at most once per interval, and connecting clears the words', () => {
  const s = new PeerState();
  assert.deepEqual(s.connection('connecting', false, 0), { diagnose: false, text: 'Connecting…' });
  assert.equal(s.connection('failed', false, 100).diagnose, true, 'every pair failed');
  s.diagnoseStarted(100);
  assert.equal(s.connection('failed', false, 150).diagnose, false, 'not while one runs');
  s.diagnoseDone('the relay refused');
  assert.deepEqual(s.connection('failed', false, 200), { diagnose: false, text: "Can't connect: the relay refused (still trying)" });
  assert.equal(s.connection('connecting', true, 100 + DIAGNOSE_EVERY_MS).diagnose, false, 'not within the interval');
  assert.equal(s.connection('connecting', true, 101 + DIAGNOSE_EVERY_MS).diagnose, true, 'stuck: the watchdog fired');
  assert.equal(s.connection('connecting', false, 101 + DIAGNOSE_EVERY_MS).diagnose, false, 'merely connecting is not a failure');
  s.diagnoseStarted(101 + DIAGNOSE_EVERY_MS);
  s.diagnoseDone(undefined); // the candidates could not be read: the old words stay
  assert.equal(s.connection('failed', false, 0).text, "Can't connect: the relay refused (still trying)");
  assert.deepEqual(s.connection('connected', true, 10 * DIAGNOSE_EVERY_MS), { diagnose: false, text: null });
  assert.equal(s.failure, null, 'connected: the failure is forgotten');
  assert.equal(s.connection('disconnected', false, 10 * DIAGNOSE_EVERY_MS).text, 'Reconnecting…');
});

test('the first frame is watched once, and only once there is video', () => {
  const s = new PeerState();
  assert.equal(s.watchFrame(false), false, 'audio only: nothing to watch yet');
  assert.equal(s.watchFrame(true), true);
  assert.equal(s.watchFrame(true), false);
});

test('a safety code is computed once per certificate pair, and again when it was not', () => {
  const s = new PeerState();
  const a = { fingerprint: 'AA' };
  const b = { fingerprint: 'BB' };
  assert.equal(s.safetyFor(a, null), null, 'no remote certificate yet');
  assert.equal(s.safetyFor(undefined, b), null);
  assert.equal(s.safetyFor(a, b), 'AA|BB');
  assert.equal(s.safetyFor(a, b), 'AA|BB', 'not computed yet (fingerprints unreadable): tried again');
  s.safetyDone('AA|BB');
  assert.equal(s.safetyFor(a, b), null, 'same pair: nothing to do');
  assert.equal(s.safetyFor(a, { fingerprint: 'CC' }), 'AA|CC', 'new certificates: a new code');
});
