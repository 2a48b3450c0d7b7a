import assert from 'node:assert/strict';
import { test } from 'node:test';
import { explainFailure, hasRelay } from '../../web/js/diagnose.js';

const turn = [{ urls: ['stun:h:3478'] }, { urls: ['turn:h:3478?transport=udp'], username: 'u', credential: 'c' }];
const c = (...types) => types.map((candidateType) => ({ candidateType }));

test('a relay counts only with a turn: URL and credentials', () => {
  assert.equal(hasRelay(turn), true);
  assert.equal(hasRelay([{ urls: 'turns:h:443?transport=tcp', username: 'u', credential: 'c' }]), true);
  assert.equal(hasRelay([{ urls: ['stun:h:3478'] }]), false);
  assert.equal(hasRelay([{ urls: ['turn:h:3478'] }]), false, 'no credentials');
  assert.equal(hasRelay(undefined), false);
});

test('each failure is explained by what is missing', () => {
  assert.match(explainFailure({ iceServers: [{ urls: ['stun:h'] }], local: c('host', 'srflx') }), /no relay/);
  assert.match(explainFailure({ iceServers: turn, local: c('host') }), /block UDP/);
  assert.match(explainFailure({ iceServers: turn, local: c('host', 'srflx') }), /refused or did not answer/);
  assert.match(explainFailure({ iceServers: turn, local: [], relayOnly: true }), /refused or did not answer/);
  assert.match(explainFailure({ iceServers: turn, local: c('host', 'relay'), remote: [] }), /no network addresses/);
  assert.match(explainFailure({ iceServers: turn, local: c('relay'), remote: c('host', 'srflx') }), /other side could not reach/);
  assert.match(explainFailure({ iceServers: turn, local: c('relay'), remote: c('relay') }), /even the path/);
});
