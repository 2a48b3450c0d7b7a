// Calls across real NATs and firewalls (issue 10): a simulated internet in network namespaces (netns.sh), the
// real peercall server on a public address, Chromium behind endpoint-independent ("cone"), symmetric,
// UDP-blocking and TCP-443-only routers. One topology and one server for the whole file; every NAT kind is
// verified before use; each call asserts decoded video both ways and the selected candidate pair.
//
// Run: sudo PEERCALL_BIN=target/debug/peercall node --test --test-concurrency=1 tests/nat/
// Figures (time to first frame, recovery after a NAT renumbering) are printed as test diagnostics and written to
// tests/artifacts/nat-results.json.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, describe as describeParticipant, ensureArtifacts, join, sleep, statsOf, uniqueRoom, waitConnected, waitFor, waitMediaFlowing } from '../browser/harness.mjs';
import {
  down, host, inNs, launchIn, mappingKind, ns, pairOf, publicIp, renumber, SERVER, startPeercall, startPublicServer, stunProbe, tcpOpens, unavailable, up,
} from './nat.mjs';

const skip = unavailable() ?? false;
const TURN_USER = ['nat', 'nat-password'];
const RENUMBER_RUNS = Number(process.env.PCNAT_RENUMBER_RUNS ?? 5); // scenario 6: the median is over these
const results = { scenarios: {} };
let tls = null;
let server = null;
const browsers = new Map(); // client namespace → Chromium running in it (closed after each scenario)

before(async () => {
  if (skip) return;
  tls = await up();
  server = await startPublicServer(tls, { user: TURN_USER });
}, { timeout: 90_000 });

after(async () => {
  for (const browser of browsers.values()) await browser.close().catch(() => {});
  await server?.stop().catch(() => {});
  await down();
  if (!skip) {
    writeFileSync(path.join(ensureArtifacts(), 'nat-results.json'), `${JSON.stringify(results, null, 2)}\n`);
  }
});

async function browserIn(router) {
  const name = host(router);
  if (!browsers.has(name)) browsers.set(name, await launchIn(name, tls.tmp));
  return browsers.get(name);
}

/** Frames decoded by `viewer` from `peerId` (0 when there is no stats yet). */
async function frames(viewer, peerId) {
  return (await statsOf(viewer, peerId).catch(() => null))?.videoIn?.framesDecoded ?? 0;
}

/**
 * Joins one participant per router (named after it) into a fresh room on `base`, waits until every pair is
 * connected and decodes media both ways. Returns the participants, the time from the last join to the first
 * decoded frame in every direction, and each participant's selected pair per peer.
 */
async function call(t, routers, { base = SERVER, relay = false, timeout = 40_000 } = {}) {
  const room = uniqueRoom('nat');
  const people = [];
  t.after(async () => {
    for (const p of people) await p.context.close().catch(() => {});
    // Fresh browsers for every scenario: idle ones from earlier scenarios would only take the CPU (2 cores in CI).
    for (const browser of browsers.values()) await browser.close().catch(() => {});
    browsers.clear();
  });
  let joinedAt = 0;
  try {
    for (const router of routers) {
      const browser = await browserIn(router);
      people.push(await join(browser, base, room, router, { relay, timeout: 30_000 }));
      joinedAt = Date.now();
    }
    for (const viewer of people) for (const other of people) if (viewer !== other) await waitConnected(viewer, other.name, { timeout });
    // Time to first frame: from the last participant's join until every direction has decoded a frame.
    await waitFor(async () => {
      for (const viewer of people) for (const other of people) if (viewer !== other && (await frames(viewer, other.id)) === 0) return false;
      return true;
    }, { timeout, interval: 100, what: 'a first decoded frame in every direction' });
    const firstFrameMs = Date.now() - joinedAt;
    const pairs = {};
    for (const viewer of people) {
      for (const other of people) {
        if (viewer === other) continue;
        await waitMediaFlowing(viewer, other.id, { timeout, what: `${viewer.name} to decode ${other.name}` });
        pairs[`${viewer.name}→${other.name}`] = pairOf(await statsOf(viewer, other.id));
      }
    }
    return { people, firstFrameMs, pairs };
  } catch (e) {
    for (const p of people) e.message += `\n${await describeParticipant(p)}`;
    e.message += `\n--- server (tail) ---\n${server?.logs().slice(-3000)}`;
    throw e;
  }
}

function record(t, scenario, figures) {
  results.scenarios[scenario] = figures;
  t.diagnostic(`${scenario}: ${JSON.stringify(figures)}`);
}

/** Each direction's pair types and the connection panel's words for it. */
const summary = (pairs) => Object.fromEntries(Object.entries(pairs).map(([k, v]) => [k, `${v.text}: "${v.route.split(' · ')[0]}"`]));
const relayed = (pair) => pair.local === 'relay' || pair.remote === 'relay';
const direct = new Set(['srflx', 'prflx']);

// ------------------------------------------------------------------------------------------------------------
// The network itself, and coturn's clients through each NAT (scenario 8): when a browser scenario fails, these
// tell whether the network, the server or the browser is at fault.

test('every NAT kind is what it claims to be (STUN from one socket to two server addresses)', { skip, timeout: 60_000 }, async (t) => {
  const expected = { cone1: 'eim', cone2: 'eim', sym1: 'symmetric', sym2: 'symmetric', udpblock: 'blocked', tcp443: 'blocked' };
  const seen = {};
  for (const [router, kind] of Object.entries(expected)) {
    const { kind: got, probe } = await mappingKind(router);
    seen[router] = { kind: got, mapped: probe.mapped, local: probe.local };
    assert.equal(got, kind, `${router}: mapping ${JSON.stringify(probe)}`);
    if (got === 'eim') assert.equal(probe.mapped[0], `${publicIp(router)}:${probe.local}`, `${router} keeps the port on its public address`);
  }
  // TCP: the UDP-blocked router lets TCP out, the office firewall only 443.
  assert.ok(await tcpOpens(host('udpblock'), SERVER.turn, 3478), 'udpblock: TCP to 3478 opens');
  assert.ok(await tcpOpens(host('tcp443'), SERVER.turn, 443), 'tcp443: TCP to 443 opens');
  assert.ok(!(await tcpOpens(host('tcp443'), SERVER.turn, 3478)), 'tcp443: TCP to 3478 is blocked');
  assert.ok(await tcpOpens(host('tcp443'), SERVER.web, 443), 'tcp443: the web client on 443 opens');
  // Nothing leaves the simulated internet: the internet router has no route beyond it.
  assert.ok(!(await tcpOpens(host('cone1'), '192.0.2.1', 80)), 'no route out of the simulated internet');
  record(t, 'nat-kinds', seen);
});

test('scenario 8: coturn\'s turnutils_stunclient and turnutils_uclient through each NAT kind', { skip, timeout: 120_000 }, async (t) => {
  const [user, password] = TURN_USER;
  // The reflexive address coturn's STUN client learns.
  const stun = {};
  for (const router of ['cone1', 'sym1', 'udpblock']) {
    const r = await inNs(host(router), ['turnutils_stunclient', '-p', '3478', SERVER.turn], { timeout: 20_000 });
    const m = /UDP reflexive addr: ([\d.]+):(\d+)/.exec(r.stdout);
    stun[router] = m ? `${m[1]}:${m[2]}` : null;
  }
  assert.equal(stun.cone1?.split(':')[0], publicIp('cone1'), `cone1's reflexive address is its router's: ${stun.cone1}`);
  assert.equal(stun.sym1?.split(':')[0], publicIp('sym1'), `sym1's reflexive address is its router's: ${stun.sym1}`);
  assert.equal(stun.udpblock, null, 'udpblock gets no UDP reflexive address');

  // Client-to-client relaying (-y): two allocations send to each other through the server.
  const uclient = async (router, flags, port, expect) => {
    const argv = ['turnutils_uclient', ...flags, '-y', '-n', '20', '-m', '1', '-l', '200', '-z', '5', '-u', user, '-w', password, '-p', String(port), SERVER.turn];
    // A blocked transport never gets an answer: give it 5 s, a working one 20 s.
    const r = await inNs(host(router), ['timeout', expect ? '20' : '5', ...argv], { timeout: 40_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    const lost = /Total lost packets (\d+) \(([\d.]+)%\)/.exec(out);
    return { ok: r.code === 0 && Boolean(lost) && Number(lost[2]) < 50, code: r.code, lost: lost ? `${lost[1]} (${lost[2]}%)` : null, tail: out.slice(-600) };
  };
  const cases = [
    ['cone1', 'UDP', [], 3478, true],
    ['sym1', 'UDP', [], 3478, true],
    ['udpblock', 'UDP', [], 3478, false],
    ['udpblock', 'TCP', ['-t'], 3478, true],
    ['tcp443', 'TCP', ['-t'], 3478, false],
    ['tcp443', 'TLS', ['-t', '-S'], 443, true],
  ];
  const seen = { stun };
  for (const [router, transport, flags, port, expect] of cases) {
    const started = Date.now();
    const got = await uclient(router, flags, port, expect);
    t.diagnostic(`${router} ${transport}:${port}: ${got.ok ? 'relayed' : 'no relay'} in ${Date.now() - started} ms`);
    seen[`${router} ${transport}:${port}`] = got.ok ? `relayed, lost ${got.lost}` : `no relay (exit ${got.code})`;
    assert.equal(got.ok, expect, `${router} over ${transport} to ${port}: expected ${expect ? 'relaying' : 'no relaying'}; exit ${got.code}\n${got.tail}`);
  }
  record(t, 'scenario 8 (coturn clients)', seen);
});

// ------------------------------------------------------------------------------------------------------------
// Browser calls.

test('scenario 1: cone ↔ cone connects directly through both routers (srflx/prflx, no relay)', { skip, timeout: 120_000 }, async (t) => {
  const { firstFrameMs, pairs } = await call(t, ['cone1', 'cone2']);
  for (const [direction, pair] of Object.entries(pairs)) {
    assert.ok(pair && direct.has(pair.local) && direct.has(pair.remote), `${direction}: a hole-punched pair, got ${JSON.stringify(pair)}`);
    assert.match(pair.remoteAddress, /^198\.51\.100\./, `${direction}: the other side's public address`);
    assert.match(pair.route, /^Direct through your router · /, `${direction}: the panel's words`);
  }
  record(t, 'scenario 1 (cone ↔ cone)', { firstFrameMs, pairs: summary(pairs) });
});

test('scenario 2: symmetric ↔ symmetric is relayed by peercall\'s TURN over UDP', { skip, timeout: 120_000 }, async (t) => {
  const { firstFrameMs, pairs } = await call(t, ['sym1', 'sym2']);
  for (const [direction, pair] of Object.entries(pairs)) {
    assert.ok(pair && relayed(pair), `${direction}: relayed, got ${JSON.stringify(pair)}`);
    assert.equal(pair.protocol, 'udp', `${direction}: UDP all the way`);
    if (pair.local === 'relay') {
      assert.equal(pair.relayProtocol, 'udp', `${direction}: to the TURN server over UDP`);
      assert.match(pair.localAddress, new RegExp(`^${SERVER.turn.replaceAll('.', '\\.')}:`), `${direction}: relayed by our server`);
    }
  }
  record(t, 'scenario 2 (symmetric ↔ symmetric)', { firstFrameMs, pairs: summary(pairs) });
});

test('scenario 3: UDP blocked on one side is relayed over TURN/TCP', { skip, timeout: 120_000 }, async (t) => {
  const { firstFrameMs, pairs } = await call(t, ['udpblock', 'cone1']);
  const mine = pairs['udpblock→cone1'];
  assert.equal(mine?.local, 'relay', `udpblock's side is a relay candidate: ${JSON.stringify(mine)}`);
  assert.equal(mine.relayProtocol, 'tcp', `udpblock reaches the relay over TCP: ${JSON.stringify(mine)}`);
  assert.match(mine.route, /^Relayed by the server \(TCP\) · relay ↔ /, 'the panel says how');
  assert.ok(relayed(pairs['cone1→udpblock']), `cone1 talks to udpblock's relay: ${JSON.stringify(pairs['cone1→udpblock'])}`);
  record(t, 'scenario 3 (UDP blocked ↔ cone)', { firstFrameMs, pairs: summary(pairs) });
});

test('scenario 4: only TCP 443 open on one side is relayed over TURNS on 443', { skip, timeout: 120_000 }, async (t) => {
  const { firstFrameMs, pairs } = await call(t, ['tcp443', 'cone1']);
  const mine = pairs['tcp443→cone1'];
  assert.equal(mine?.local, 'relay', `tcp443's side is a relay candidate: ${JSON.stringify(mine)}`);
  assert.equal(mine.relayProtocol, 'tls', `tcp443 reaches the relay over TLS: ${JSON.stringify(mine)}`);
  assert.match(mine.url ?? '', /^turns:.*:443/, `through the TURNS URL on port 443: ${mine.url}`);
  assert.match(mine.route, /^Relayed by the server \(TLS\) · relay ↔ /, 'the panel says how');
  record(t, 'scenario 4 (TCP 443 only ↔ cone)', { firstFrameMs, pairs: summary(pairs) });
});

test('scenario 5: the server behind a 1:1 NAT: --external-ip makes srflx answers and relays reachable', { skip, timeout: 150_000 }, async (t) => {
  const PUBLIC = '203.0.113.20';
  const PRIVATE = '10.200.0.10';
  // A cloud VM: the host has only its private address; the router maps PUBLIC to it one to one.
  // --allow-peer 198.51.100.0/24: as for the public server, the browsers' routers are in a documentation range.
  const vmArgs = ['--http', `${PRIVATE}:443`, '--tls-self-signed', '--listen', `${PRIVATE}:3478`, '--relay-ip', PRIVATE,
    '--allow-peer', '198.51.100.0/24', '--relay-threads', '1'];

  await t.test('without --external-ip the banner says the relay address is private', async () => {
    const bare = await startPeercall(ns('vm'), vmArgs);
    try {
      const banner = bare.logs();
      assert.match(banner, new RegExp(`relay +from ${PRIVATE.replaceAll('.', '\\.')}`), 'the banner names the relay address');
      assert.match(banner, /external-ip/, `the banner says what is wrong:\n${banner}`);
    } finally {
      await bare.stop();
    }
  });

  const vm = await startPeercall(ns('vm'), [...vmArgs, '--external-ip', `${PUBLIC}/${PRIVATE}`]);
  t.after(() => vm.stop());
  try {
    // STUN through the 1:1 NAT answers with the client's own router address.
    const { mapped } = await stunProbe(host('cone1'), [`${PUBLIC}:3478`]);
    assert.equal(mapped[0]?.split(':')[0], publicIp('cone1'), `srflx answer through the VM's NAT: ${mapped}`);
    // Two symmetric NATs need the relay; its address must be the public one.
    const { firstFrameMs, pairs } = await call(t, ['sym1', 'sym2'], { base: { url: `https://${PUBLIC}` } });
    for (const [direction, pair] of Object.entries(pairs)) {
      assert.ok(pair && relayed(pair), `${direction}: relayed, got ${JSON.stringify(pair)}`);
      const relayAddress = pair.local === 'relay' ? pair.localAddress : pair.remoteAddress;
      assert.match(relayAddress, new RegExp(`^${PUBLIC.replaceAll('.', '\\.')}:`), `${direction}: the relay is advertised at the public address`);
    }
    record(t, 'scenario 5 (server behind 1:1 NAT, symmetric ↔ symmetric)', { firstFrameMs, pairs: Object.fromEntries(Object.entries(pairs).map(([k, v]) => [k, `${v.text} ${v.local === 'relay' ? v.localAddress : v.remoteAddress}`])) });
  } catch (e) {
    e.message += `\n--- VM server (tail) ---\n${vm.logs().slice(-3000)}`;
    throw e;
  }
});

test('scenario 7: three participants behind three NAT kinds all decode each other', { skip, timeout: 150_000 }, async (t) => {
  const { firstFrameMs, pairs } = await call(t, ['cone1', 'sym1', 'udpblock']);
  for (const [direction, pair] of Object.entries(pairs)) assert.ok(pair, `${direction}: a selected pair`);
  // The UDP-blocked one can only be reached through its TCP relay.
  for (const other of ['cone1', 'sym1']) {
    const mine = pairs[`udpblock→${other}`];
    assert.equal(mine.local, 'relay', `udpblock→${other}: relay, ${JSON.stringify(mine)}`);
    assert.equal(mine.relayProtocol, 'tcp', `udpblock→${other}: relay over TCP`);
  }
  record(t, 'scenario 7 (cone + symmetric + UDP blocked)', { firstFrameMs, pairs: summary(pairs) });
});

/** Waits until every [viewer, peerId] direction has stalled (no new frame for 400 ms) and decodes again; returns
 *  the time from `t0` until the last direction decodes again (0 when it never stalled). */
// ------------------------------------------------------------------------------------------------------------
// The native peer (`peercall join`, issue 12) behind each NAT kind, calling a browser behind a cone NAT: exit
// status 0 means it connected and media flowed both ways; the browser must decode its video; behind a cone NAT it
// must connect directly (its server-reflexive candidate); where UDP is blocked
// it must relay over TURN/TCP, where only 443 is open over TURNS on 443 (rustls, trusting the server's
// self-signed certificate through --ca-file).

/** Runs `peercall join` in `router`'s client namespace for `seconds`; resolves its exit code and JSON events. */
async function nativeJoin(router, room, seconds) {
  const argv = [BIN, 'join', `${SERVER.url}/r/${room}`, '--name', `native-${router}`, '--duration', String(seconds),
    '--expect-peers', '1', '--json', '--ca-file', tls.cert];
  const r = await inNs(host(router), argv, { timeout: (seconds + 30) * 1000 });
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return null;
    }
  }).filter(Boolean);
  return { ...r, events };
}

test('scenario 9: the native peer behind each NAT kind calls a browser (relayed over TCP / TURNS where it must be)', { skip, timeout: 240_000 }, async (t) => {
  // [router, the route the native peer must take (null: any), how it reaches the relay]
  const cases = [
    ['cone2', 'srflx', null], // two cone NATs: hole-punched, as two browsers
    ['sym1', null, null],
    // UDP blocked: TCP or TURNS over TCP both reach the relay (the native peer allocates over each, and ICE keeps
    // whichever pair it nominates first); what must not happen is a relay over UDP.
    ['udpblock', 'relay', ['tcp', 'tls']],
    ['tcp443', 'relay', 'tls'],
  ];
  const seen = {};
  const browser = await browserIn('cone1');
  t.after(async () => {
    for (const b of browsers.values()) await b.close().catch(() => {});
    browsers.clear();
  });
  for (const [router, route, relayOver] of cases) {
    const room = uniqueRoom('native');
    const person = await join(browser, SERVER, room, 'cone1', { timeout: 30_000 });
    try {
      const running = nativeJoin(router, room, 12);
      // The browser sees the native peer and decodes its clip while the native peer runs.
      const nativeId = await waitFor(async () => (await person.page.evaluate(() => window.peercall.peers?.() ?? []))
        .find((p) => p.name === `native-${router}`)?.id, { timeout: 20_000, what: `native-${router} in the browser's roster` }).catch(() => null);
      let decoded = 0;
      if (nativeId) {
        await waitFor(async () => (decoded = await frames(person, nativeId)) > 10, { timeout: 20_000, interval: 250, what: `the browser to decode native-${router}` }).catch(() => {});
      }
      const r = await running;
      const stats = r.events.filter((e) => e.event === 'stats' && e.connected).at(-1);
      const summaryLine = r.events.find((e) => e.event === 'summary');
      seen[router] = { exit: r.code, route: stats?.route ?? null, relayOver: stats?.relay_transport ?? null, browserDecoded: decoded };
      const about = `native-${router}: ${JSON.stringify(seen[router])}\n${r.stderr.slice(-1500)}\n${r.stdout.slice(-1500)}`;
      assert.equal(r.code, 0, `exits 0 (connected, media both ways): ${about}`);
      assert.equal(summaryLine?.ok, true, `its summary says so: ${about}`);
      assert.ok(decoded > 10, `the browser decodes the native peer's video: ${about}`);
      if (route) assert.equal(stats?.route, route, `route ${route}: ${about}`);
      const over = [relayOver].flat().filter(Boolean);
      if (over.length) assert.ok(over.includes(stats?.relay_transport), `to the TURN server over ${over.join(' or ').toUpperCase()}: ${about}`);
    } finally {
      await person.context.close().catch(() => {});
    }
  }
  record(t, 'scenario 9 (native peer behind each NAT kind ↔ browser behind cone1)', seen);
});

async function recovery(directions, t0, { timeout = 30_000 } = {}) {
  const state = directions.map(() => ({ last: -1, since: Date.now(), stalled: false, back: null }));
  const deadline = t0 + timeout;
  while (Date.now() < deadline) {
    const now = Date.now();
    const counts = await Promise.all(directions.map(([viewer, id]) => frames(viewer, id)));
    counts.forEach((n, i) => {
      const s = state[i];
      if (n !== s.last) {
        if (s.stalled && s.back === null) s.back = now - t0;
        s.last = n;
        s.since = now;
      } else if (now - s.since >= 400) {
        s.stalled = true;
      }
    });
    // A direction that has decoded for 3 s after the change without a stall was never interrupted.
    if (state.every((s) => s.back !== null || (!s.stalled && now - t0 > 3000 && now - s.since < 400))) {
      return Math.max(...state.map((s) => s.back ?? 0));
    }
    await sleep(100);
  }
  throw new Error(`video did not decode again within ${timeout} ms of the change: ${JSON.stringify(state)}`);
}

test('scenario 6: a NAT renumbered mid-call: media resumes by ICE restart (median of 5)', { skip, timeout: 60_000 + RENUMBER_RUNS * 45_000 }, async (t) => {
  const { people } = await call(t, ['cone1', 'cone2']);
  const [a, b] = people;
  const runs = [];
  // What each side logs during a run, timed from the change: printed for slow runs, to see what held them up.
  let events = [];
  let t0 = 0;
  for (const p of people) {
    p.page.on('console', (m) => {
      if (t0 && /peercall:/.test(m.text())) events.push(`${Date.now() - t0} ms ${p.name}: ${m.text()}`);
    });
  }
  try {
    for (let i = 0; i < RENUMBER_RUNS; i++) {
      await waitMediaFlowing(a, b.id, { timeout: 30_000 });
      await waitMediaFlowing(b, a.id, { timeout: 30_000 });
      const ip = publicIp('cone1', 3 + (i % 11)); // .19 ... .29 of its /28, each different from the one before
      events = [];
      t0 = Date.now();
      await renumber('cone1', ip);
      const ms = await recovery([[a, b.id], [b, a.id]], t0);
      const pair = pairOf(await statsOf(b, a.id));
      t.diagnostic(`run ${i + 1}: cone1 now ${ip}; video decodes again after ${ms} ms both ways; cone2 → cone1 ${pair?.text} ${pair?.remoteAddress}`);
      if (ms > 5000) t.diagnostic(`  slow run ${i + 1}: ${events.join(' | ')}`);
      t0 = 0;
      runs.push(ms);
    }
  } catch (e) {
    for (const p of people) e.message += `\n${await describeParticipant(p)}\n  console: ${p.console.filter((l) => /ICE|signal/i.test(l)).slice(-10).join(' | ')}`;
    throw e;
  }
  const sorted = [...runs].sort((x, y) => x - y);
  const median = sorted[Math.floor(sorted.length / 2)];
  record(t, 'scenario 6 (NAT renumbered mid-call)', { runsMs: runs, medianMs: median, restarts: a.console.filter((l) => /ICE restart/.test(l)).length });
  t.diagnostic(`scenario 6: video decodes again ${median} ms after the NAT's address changed (median of ${runs.length}: ${runs.join(', ')} ms)`);
  await t.test('target: decoding again ≤ 6 s after the change (median of 5)', () => {
    assert.ok(median <= 6000, `median ${median} ms`);
  });
});
