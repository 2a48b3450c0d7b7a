// A real call between real browsers: two participants, the same through TURN only, three participants.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Cleanup, describe, join, launchBrowser, mediaFlowing, sleep, startServer, statsOf, tilesOf, uniqueRoom, waitConnected, waitFor,
  waitMediaFlowing,
} from './harness.mjs';

test('two participants in one room see and hear each other', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('duo');

  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    const bobSeenByAda = await waitConnected(ada, 'Bob');
    const adaSeenByBob = await waitConnected(bob, 'Ada');
    assert.equal(bobSeenByAda.id, bob.id, 'Ada knows Bob by the id the server gave him');
    assert.equal(adaSeenByBob.id, ada.id);

    const atAda = await waitMediaFlowing(ada, bob.id);
    const atBob = await waitMediaFlowing(bob, ada.id);
    t.diagnostic(`Ada decodes ${atAda.frames} frames and ${atAda.samples} audio samples per 1.5 s from Bob; Bob ${atBob.frames} / ${atBob.samples}`);

    // What a user sees: the other one's video is playing in a tile with their name.
    for (const [viewer, other] of [[ada, 'Bob'], [bob, 'Ada']]) {
      const tile = await waitFor(async () => (await tilesOf(viewer)).find((x) => x.name === other && x.videoWidth > 0),
        { what: `${viewer.name} to show ${other}'s video` });
      assert.equal(tile.cam, 'on');
      assert.equal(tile.mic, 'on');
    }
    // The connection panel data: encrypted with DTLS, and both certificate fingerprints are known.
    const stats = await ada.page.evaluate((id) => window.peercall.stats(id), bob.id);
    assert.equal(stats.dtlsState, 'connected');
    assert.match(stats.localCertificate?.fingerprint ?? '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i);
    assert.match(stats.remoteCertificate?.fingerprint ?? '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i);
    const bobStats = await bob.page.evaluate((id) => window.peercall.stats(id), ada.id);
    assert.equal(stats.localCertificate.fingerprint, bobStats.remoteCertificate.fingerprint, 'fingerprints match across the call');
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});

test('with relay=1 the call goes through peercall\'s own TURN server', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('relay');

  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  try {
    // Credentials come from the signaling server's welcome: TURN on our port, shared-secret username.
    const iceServers = await ada.page.evaluate(() => window.peercall.iceServers());
    const turn = iceServers.find((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')));
    assert.ok(turn, `welcome carries a TURN server: ${JSON.stringify(iceServers)}`);
    assert.ok([].concat(turn.urls).includes(`turn:127.0.0.1:${server.turnPort}?transport=udp`), JSON.stringify(turn.urls));
    assert.match(turn.username, /^\d+:/, 'time-limited REST-API username');
    assert.ok(turn.credential.length >= 20, 'a credential');

    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);

    for (const [viewer, other] of [[ada, bob], [bob, ada]]) {
      const stats = await viewer.page.evaluate((id) => window.peercall.stats(id), other.id);
      const pair = stats.pair;
      assert.equal(pair?.local?.type, 'relay', `${viewer.name}'s local candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair?.remote?.type, 'relay', `${viewer.name}'s remote candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.address, '127.0.0.1', 'relayed from peercall\'s relay address');
      assert.match(pair.local.url ?? '', new RegExp(`^turn:127\\.0\\.0\\.1:${server.turnPort}\\?transport=(udp|tcp)$`),
        'allocated on peercall\'s TURN server');
    }
    // The media really goes through peercall's relay: its relayed byte counters grow while we watch.
    const relayed = async () => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const lines = metrics.split('\n').filter((l) => l.startsWith('peercall_turn_relayed_bytes_total'));
      assert.ok(lines.length > 0, 'peercall exposes peercall_turn_relayed_bytes_total');
      return lines.reduce((n, l) => n + Number(l.split(/\s+/).pop()), 0);
    };
    const before = await relayed();
    await sleep(1500);
    const after = await relayed();
    t.diagnostic(`TURN relayed ${Math.round((after - before) / 1.5 / 1000)} kB/s during the call`);
    assert.ok(after - before > 50_000, `TURN relayed ${after - before} bytes in 1.5 s`);
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});

test('three participants: everyone sees and hears the other two', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('trio');

  const people = [];
  for (const name of ['Ada', 'Bob', 'Cyd']) people.push(await join(browser, server, room, name));
  try {
    for (const viewer of people) {
      for (const other of people.filter((p) => p !== viewer)) {
        await waitConnected(viewer, other.name, { timeout: 30_000 });
      }
    }
    for (const viewer of people) {
      for (const other of people.filter((p) => p !== viewer)) {
        const flow = await waitMediaFlowing(viewer, other.id, { timeout: 30_000 });
        t.diagnostic(`${viewer.name} ← ${other.name}: ${flow.frames} frames, ${flow.samples} samples in 1.5 s`);
      }
      const tiles = await waitFor(async () => {
        const all = await tilesOf(viewer);
        const remote = all.filter((x) => !x.local && x.videoWidth > 0);
        return remote.length === 2 ? all : null;
      }, { what: `${viewer.name} to show two playing remote tiles` });
      assert.equal(tiles.length, 3, `${viewer.name} sees 3 tiles (2 others + self)`);
      assert.deepEqual(tiles.filter((x) => !x.local).map((x) => x.name).sort(),
        people.filter((p) => p !== viewer).map((p) => p.name).sort());
    }
    // Everyone still flowing at the same time (no connection starved the others).
    const flows = await Promise.all(people.flatMap((viewer) =>
      people.filter((p) => p !== viewer).map((other) => mediaFlowing(viewer, other.id))));
    assert.ok(flows.every((f) => f.ok), flows.map((f) => f.problems.join(', ')).join(' | '));
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});

test('fresh TURN credentials (ice-servers) reach running connections; an ICE restart then uses them', { timeout: 180_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  // Shortest TTL the server accepts (60 s): it sends fresh credentials at 80 % of it.
  const server = await startServer({ extraArgs: ['--credential-ttl', '60'] });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('refresh');
  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  const turnUser = (p) => p.page.evaluate((peer) => {
    const fromWelcome = window.peercall.iceServers().find((s) => s.username)?.username;
    const inUse = window.peercall.pc(peer).getConfiguration().iceServers.find((s) => s.username)?.username;
    return { fromWelcome, inUse };
  }, p === ada ? bob.id : ada.id);
  try {
    await waitConnected(ada, 'Bob');
    await waitMediaFlowing(bob, ada.id);
    const first = await turnUser(ada);
    assert.ok(first.fromWelcome && first.inUse === first.fromWelcome, JSON.stringify(first));
    const fresh = await waitFor(async () => {
      const now = await turnUser(ada);
      return now.fromWelcome !== first.fromWelcome ? now : null;
    }, { timeout: 70_000, interval: 1000, what: 'an ice-servers update' });
    assert.equal(fresh.inUse, fresh.fromWelcome, 'the running connection got the new credentials (setConfiguration)');
    assert.ok(Number(fresh.fromWelcome.split(':')[0]) > Number(first.fromWelcome.split(':')[0]), 'they expire later');
    // An ICE restart now allocates on the TURN server with the new credentials and the call goes on, relayed.
    const allocations = async () => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const line = metrics.split('\n').find((l) => l.startsWith('peercall_turn_requests_total{method="allocate",result="success"}'));
      assert.ok(line, 'peercall counts successful allocations');
      return Number(line.split(/\s+/).pop());
    };
    // Wait until the first credentials have expired, so only the fresh ones can work.
    const expiry = Number(first.fromWelcome.split(':')[0]) * 1000;
    await sleep(Math.max(0, expiry - Date.now() + 1500));
    const allocatedBefore = await allocations();
    await ada.page.evaluate((id) => window.peercall.restartIce(id), bob.id);
    await waitFor(async () => (await allocations()) > allocatedBefore, { timeout: 10_000, what: 'new TURN allocations after the ICE restart' });
    await sleep(2000);
    const peer = await waitConnected(ada, 'Bob');
    const stats = await statsOf(ada, peer.id);
    assert.equal(stats.pair?.local?.type, 'relay');
    await waitMediaFlowing(bob, ada.id);
    await waitMediaFlowing(ada, bob.id);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});
