// Roster transitions (web/js/roster.js) with fake connections and a fake clock: join, leave, resume, a new
// server session (orphans, deferred ids, re-keying), offers from held-back ids, stray candidates, and leaving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Roster, ORPHAN_WAIT_MS } from '../../web/js/roster.js';

/** Timers that only fire when the test advances time. */
function fakeClock() {
  let now = 0;
  let nextId = 1;
  const pending = new Map();
  return {
    set(fn, ms) {
      const id = nextId++;
      pending.set(id, { at: now + ms, fn });
      return id;
    },
    clear(id) {
      pending.delete(id);
    },
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...pending].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        pending.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
    get pending() {
      return pending.size;
    },
  };
}

/** A roster whose effects are recorded in `log`; each link is a plain {state, channelOpen} the test sets. */
function setup() {
  const log = [];
  const clock = fakeClock();
  const roster = new Roster({
    open(entry, { offer }) {
      entry.link = { state: 'new', channelOpen: false };
      log.push(['open', entry.id, entry.name, offer]);
    },
    close(entry, { announce }) {
      log.push(['close', entry.id, announce]);
    },
    renamed(entry) {
      log.push(['renamed', entry.id, entry.name]);
    },
    rekeyed(entry, oldId) {
      log.push(['rekeyed', oldId, entry.id]);
    },
    sendId(entry, id) {
      log.push(['sendId', entry.id, id]);
    },
    link: (entry) => entry.link,
  }, { timers: clock });
  const connect = (id, state = 'connected', channelOpen = true) => Object.assign(roster.get(id).link, { state, channelOpen });
  const ids = () => [...roster.entries.keys()];
  const take = () => log.splice(0);
  return { roster, clock, connect, ids, take };
}

/** Ada and Bob in the room, both connected with their data channels open; Cyd connecting. Log emptied. */
function inCall() {
  const t = setup();
  t.roster.welcome({ id: 'me', peers: [{ id: 'a', name: 'Ada' }, { id: 'b', name: 'Bob' }, { id: 'c', name: 'Cyd' }] });
  t.connect('a');
  t.connect('b');
  t.connect('c', 'connecting', false);
  t.take();
  return t;
}

test('first welcome: everyone listed gets a connection that waits for their offer (they heard we joined), with cleaned names; malformed entries are skipped', () => {
  const { roster, take } = setup();
  const result = roster.welcome({ id: 'me', peers: [{ id: 'a', name: 'Ada' }, null, { id: 7, name: 'Seven' }, { id: 'b', name: ' Bob\u0000\n' }, { id: 'c', name: '\u0007' }] });
  assert.equal(result.kind, 'first');
  assert.deepEqual(result.listed.map((p) => p.id), ['a', 'b', 'c']);
  assert.equal(roster.myId, 'me');
  assert.deepEqual(take(), [['open', 'a', 'Ada', false], ['open', 'b', 'Bob', false], ['open', 'c', 'Guest', false]]);
  assert.equal(roster.size, 3);
});

test('welcome without a peer list: nobody is added', () => {
  const { roster, take } = setup();
  assert.deepEqual(roster.welcome({ id: 'me', peers: 'nonsense' }), { kind: 'first', listed: [] });
  assert.deepEqual(take(), []);
});

test('peer-joined: someone new is admitted (we offer) and announced; ourselves and garbage are not', () => {
  const { roster, take, ids } = inCall();
  assert.equal(roster.peerJoined({ id: 'd', name: 'Dee' }), true);
  assert.deepEqual(take(), [['open', 'd', 'Dee', true]]);
  assert.equal(roster.peerJoined({ id: 'me', name: 'Me again' }), false);
  assert.equal(roster.peerJoined(null), false);
  assert.equal(roster.peerJoined({ id: 42 }), false);
  assert.deepEqual(take(), []);
  // Joining again under a known id renames, never opens a second connection.
  roster.peerJoined({ id: 'd', name: 'Dee D' });
  assert.deepEqual(take(), [['renamed', 'd', 'Dee D']]);
  assert.deepEqual(ids(), ['a', 'b', 'c', 'd']);
});

test('peer-left: the entry goes and is announced; unknown or malformed ids change nothing', () => {
  const { roster, take, ids } = inCall();
  roster.peerLeft('b');
  assert.deepEqual(take(), [['close', 'b', true]]);
  roster.peerLeft('b');
  roster.peerLeft('zz');
  roster.peerLeft({ id: 'a' });
  assert.deepEqual(take(), []);
  assert.deepEqual(ids(), ['a', 'c']);
});

test('rename: names are cleaned; empty or unchanged names are ignored', () => {
  const { roster, take } = inCall();
  roster.rename('a', '  Ada Lovelace\u001b ');
  roster.rename('a', 'Ada Lovelace');
  roster.rename('a', '\u0000\u0001 ');
  roster.rename('nobody', 'X');
  assert.deepEqual(take(), [['renamed', 'a', 'Ada Lovelace']]);
  assert.equal(roster.get('a').name, 'Ada Lovelace');
});

test('resumed session: whoever left meanwhile is announced gone, newcomers are offered to, names follow', () => {
  const { roster, take, ids } = inCall();
  const result = roster.welcome({ id: 'ignored', resumed: true, peers: [{ id: 'a', name: 'Ada L' }, { id: 'c', name: 'Cyd' }, { id: 'e', name: 'Eve' }] });
  assert.equal(result.kind, 'resumed');
  assert.equal(roster.myId, 'me', 'a resumed session keeps our id');
  assert.deepEqual(take(), [['close', 'b', true], ['renamed', 'a', 'Ada L'], ['open', 'e', 'Eve', true]]);
  assert.deepEqual(ids(), ['a', 'c', 'e']);
});

test('new session: live connections learn our new id; those not listed become orphans; dead ones go quietly', () => {
  const { roster, take, ids } = inCall();
  // Ada's session resumed (still listed as "a"); Bob's did not (he will be "b2"); Cyd never connected.
  const result = roster.welcome({ id: 'me2', peers: [{ id: 'a', name: 'Ada' }, { id: 'b2', name: 'Bob' }] });
  assert.equal(result.kind, 'new');
  assert.equal(roster.myId, 'me2');
  assert.deepEqual(take(), [['sendId', 'a', 'me2'], ['sendId', 'b', 'me2'], ['close', 'c', false]]);
  assert.equal(roster.get('a').orphan, false);
  assert.equal(roster.get('b').orphan, true);
  // "b2" might be Bob under his new id: held back while he may claim it.
  assert.equal(roster.isDeferred('b2'), true);
  assert.deepEqual(ids(), ['a', 'b']);
});

test('re-key: the orphan claims its new id, keeps its connection, and the held-back id is never opened', () => {
  const { roster, take, ids, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'a', name: 'Ada' }, { id: 'b2', name: 'Bob' }] });
  take();
  const bob = roster.get('b');
  assert.equal(roster.claimId(bob, 'b2'), 'rekeyed');
  assert.deepEqual(take(), [['rekeyed', 'b', 'b2']]);
  assert.equal(roster.get('b2'), bob, 'the same entry, now under the new id');
  assert.equal(bob.orphan, false);
  assert.equal(roster.isDeferred('b2'), false);
  clock.advance(ORPHAN_WAIT_MS * 2);
  assert.deepEqual(take(), [], 'no second connection for Bob');
  assert.deepEqual(ids(), ['a', 'b2']);
});

test('deferred id unclaimed: after the wait it is admitted; a stale orphan of the same name whose link is down gives way', () => {
  const { roster, take, ids, clock, connect } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] }); // Ada and Bob both orphans now
  take();
  connect('a', 'disconnected', false);
  connect('b', 'disconnected', false);
  clock.advance(ORPHAN_WAIT_MS - 1);
  assert.deepEqual(take(), [], 'still waiting for a claim');
  clock.advance(1);
  assert.deepEqual(take(), [['close', 'b', false], ['open', 'b2', 'Bob', false]]);
  assert.deepEqual(ids(), ['a', 'b2'], 'Ada (another name) stays, down or not');
  assert.equal(roster.isDeferred('b2'), false);
});

test('deferred id unclaimed while the same-named orphan is still connected: both stay', () => {
  const { roster, take, ids, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] });
  take();
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), [['open', 'b2', 'Bob', false]], 'our new id reached Bob as peer-joined: he offers');
  assert.deepEqual(ids(), ['a', 'b', 'b2']);
});

test('peer-joined while orphans may claim the id: held back and not announced, then admitted', () => {
  const { roster, take, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [] }); // everyone is an orphan
  take();
  assert.equal(roster.peerJoined({ id: 'x', name: 'Xavier' }), false);
  assert.equal(roster.isDeferred('x'), true);
  assert.equal(roster.peerJoined({ id: 'x', name: 'Xavier' }), false, 'still held back: not announced twice');
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), [['open', 'x', 'Xavier', true]]);
  assert.equal(clock.pending, 0, 'the repeated join did not leave a second timer');
});

test('a held-back id admitted by a repeated peer-joined once the orphans are settled is not announced', () => {
  const { roster, take } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'a2', name: 'Ada' }, { id: 'b2', name: 'Bob' }] });
  assert.equal(roster.peerJoined({ id: 'x', name: 'Xavier' }), false);
  roster.claimId(roster.get('a'), 'a2');
  roster.claimId(roster.get('b'), 'b2');
  take();
  assert.equal(roster.peerJoined({ id: 'x', name: 'Xavier' }), false);
  assert.deepEqual(take(), [['open', 'x', 'Xavier', true]]);
});

test('a resumed session never drops orphans: they are not listed because they are still waiting for their new id', () => {
  const { roster, take, ids } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'a', name: 'Ada' }] }); // Bob is an orphan
  take();
  roster.welcome({ id: 'me2', resumed: true, peers: [{ id: 'a', name: 'Ada' }] });
  assert.deepEqual(take(), []);
  assert.deepEqual(ids(), ['a', 'b']);
  assert.equal(roster.get('b').orphan, true);
});

test('new session: a connection whose data channel is closed cannot learn our id, so it goes', () => {
  const { roster, take, ids, connect } = inCall();
  connect('b', 'connected', false);
  roster.welcome({ id: 'me2', peers: [{ id: 'a', name: 'Ada' }, { id: 'b', name: 'Bob' }] });
  assert.deepEqual(take(), [['sendId', 'a', 'me2'], ['close', 'b', false], ['close', 'c', false], ['open', 'b', 'Bob', false]]);
  assert.deepEqual(ids(), ['a', 'b']);
});

test('an orphan announced again under its old id is someone we know: no longer an orphan', () => {
  const { roster, take } = inCall();
  roster.welcome({ id: 'me2', peers: [] });
  take();
  roster.peerJoined({ id: 'b', name: 'Bob' });
  assert.equal(roster.get('b').orphan, false);
  assert.equal(roster.get('a').orphan, true);
  assert.deepEqual(take(), []);
});

test('peer-left for a held-back id cancels its admission', () => {
  const { roster, take, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'x', name: 'Xavier' }] });
  take();
  roster.peerLeft('x');
  assert.equal(roster.isDeferred('x'), false);
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), []);
});

test('an offer from a held-back id admits it at once, with its listed name, and cancels the wait', () => {
  const { roster, take, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] });
  take();
  const entry = roster.signalFrom('b2', 'offer');
  assert.equal(entry, roster.get('b2'));
  assert.deepEqual(take(), [['open', 'b2', 'Bob', false]]);
  assert.equal(roster.isDeferred('b2'), false);
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), []);
});

test('signals: known ids get their entry; an offer from a stranger opens a Guest; stray answers and candidates are dropped', () => {
  const { roster, take, ids } = inCall();
  assert.equal(roster.signalFrom('a', 'candidate'), roster.get('a'));
  assert.equal(roster.signalFrom('zz', 'candidate'), null);
  assert.equal(roster.signalFrom('zz', 'answer'), null);
  assert.equal(roster.signalFrom(undefined, 'offer'), null);
  assert.deepEqual(take(), []);
  const guest = roster.signalFrom('zz', 'offer');
  assert.equal(guest.name, 'Guest');
  assert.deepEqual(take(), [['open', 'zz', 'Guest', false]]);
  assert.deepEqual(ids(), ['a', 'b', 'c', 'zz']);
});

test('candidates from a held-back id do not admit it (only its offer does)', () => {
  const { roster, take } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] });
  take();
  assert.equal(roster.signalFrom('b2', 'candidate'), null);
  assert.equal(roster.isDeferred('b2'), true);
  assert.deepEqual(take(), []);
});

test('claims: invalid ids, the same id, a removed entry', () => {
  const { roster, take } = inCall();
  const ada = roster.get('a');
  assert.equal(roster.claimId(ada, 42), 'invalid');
  assert.equal(roster.claimId(ada, 'x'.repeat(129)), 'invalid');
  assert.equal(roster.claimId(ada, 'a'), 'same');
  roster.remove('a', { announce: false });
  take();
  assert.equal(roster.claimId(ada, 'a2'), 'gone');
  assert.equal(roster.has('a2'), false);
  assert.deepEqual(take(), []);
});

test('claims: nobody takes over a live connection; a stale orphan claiming it is dropped instead', () => {
  const { roster, take, ids } = inCall();
  // Bob (not an orphan) claims Ada's id: refused, nothing changes.
  assert.equal(roster.claimId(roster.get('b'), 'a'), 'refused');
  assert.deepEqual(take(), []);
  assert.deepEqual(ids(), ['a', 'b', 'c']);
  // After a new session Bob is an orphan; Ada is listed (live, not an orphan). Bob's claim of "a" drops Bob.
  roster.welcome({ id: 'me2', peers: [{ id: 'a', name: 'Ada' }] });
  take();
  assert.equal(roster.claimId(roster.get('b'), 'a'), 'dropped');
  assert.deepEqual(take(), [['close', 'b', false]]);
  assert.deepEqual(ids(), ['a']);
});

test('claims: a fresh entry opened for the new id gives way to the established connection', () => {
  const { roster, take, ids } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] });
  roster.signalFrom('b2', 'offer'); // Bob's new session offered before his claim arrived
  take();
  const bob = roster.get('b');
  assert.equal(roster.claimId(bob, 'b2'), 'rekeyed');
  assert.deepEqual(take(), [['close', 'b2', false], ['rekeyed', 'b', 'b2']]);
  assert.equal(roster.get('b2'), bob);
  assert.deepEqual(ids(), ['a', 'b2']);
});

test('orphans whose connection fails go at once; disconnected ones after the wait unless they recover', () => {
  const { roster, take, ids, clock, connect } = inCall();
  roster.welcome({ id: 'me2', peers: [] }); // Ada and Bob orphans
  take();
  connect('a', 'failed', false);
  roster.linkChanged(roster.get('a'));
  assert.deepEqual(take(), [['close', 'a', false]]);
  connect('b', 'disconnected', false);
  roster.linkChanged(roster.get('b'));
  connect('b', 'connected', true); // recovered by itself
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), []);
  connect('b', 'disconnected', false);
  roster.linkChanged(roster.get('b'));
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), [['close', 'b', false]]);
  assert.deepEqual(ids(), []);
});

test('a connection failing is not the roster\'s business unless the entry is an orphan (ICE restarts handle it)', () => {
  const { roster, take, clock, connect } = inCall();
  connect('a', 'failed', false);
  roster.linkChanged(roster.get('a'));
  connect('b', 'disconnected', false);
  roster.linkChanged(roster.get('b'));
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), []);
  assert.equal(roster.size, 3);
});

test('clear: everyone goes quietly, pending ids are dropped, and the next welcome is a first join', () => {
  const { roster, take, clock } = inCall();
  roster.welcome({ id: 'me2', peers: [{ id: 'b2', name: 'Bob' }] });
  take();
  roster.clear();
  assert.deepEqual(take(), [['close', 'a', false], ['close', 'b', false]]);
  assert.equal(roster.myId, null);
  assert.equal(clock.pending, 0);
  clock.advance(ORPHAN_WAIT_MS);
  assert.deepEqual(take(), [], 'the held-back id was not admitted after leaving');
  assert.equal(roster.welcome({ id: 'me3', peers: [{ id: 'b2', name: 'Bob' }] }).kind, 'first');
  assert.deepEqual(take(), [['open', 'b2', 'Bob', false]]);
});

test('links() lists what open attached, in join order', () => {
  const { roster } = inCall();
  assert.deepEqual(roster.links(), ['a', 'b', 'c'].map((id) => roster.get(id).link));
});
