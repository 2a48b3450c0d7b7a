// The call survives the signaling server going away, and a hostile client cannot disturb it.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import {
  Cleanup, describe, ensureArtifacts, join, launchBrowser, mediaFlowing, peersOf, RawWebSocket, sleep, startServer, statsOf, statusOf, tilesOf,
  uniqueRoom, waitConnected, waitFor, waitMediaFlowing,
} from './harness.mjs';

test('restarting the signaling server mid-call: media keeps flowing, clients reconnect by themselves', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('restart');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);

    // Kill the server outright (no goodbye to anyone).
    const { httpPort, turnPort } = server;
    await server.kill('SIGKILL');
    for (const p of [ada, bob]) {
      await waitFor(async () => (await statusOf(p)) === 'reconnecting', { timeout: 10_000, what: `${p.name} to notice signaling is down` });
      const pill = await p.page.textContent('#status-text');
      assert.match(pill, /Reconnecting/, `${p.name} sees the reconnecting status`);
    }
    await ada.page.screenshot({ path: path.join(ensureArtifacts(), 'call-reconnecting.png') });
    // While signaling is down the call goes on: it is peer to peer.
    for (const [viewer, other] of [[ada, bob], [bob, ada]]) {
      const flow = await mediaFlowing(viewer, other.id);
      assert.ok(flow.ok, `${viewer.name} still receives ${other.name} with the server down: ${flow.problems.join(', ')}`);
    }

    // Same ports, fresh process (all server state is gone: new peer ids).
    await sleep(1000);
    server = await startServer({ httpPort, turnPort });
    const back = Date.now();
    for (const p of [ada, bob]) {
      await waitFor(async () => (await statusOf(p)) === 'connected', { timeout: 20_000, what: `${p.name} to reconnect by itself` });
      assert.equal(await p.page.getAttribute('#status', 'data-status'), 'connected');
    }
    t.diagnostic(`both reconnected ${Date.now() - back} ms after the server came back`);
    const newIds = { ada: await ada.page.evaluate(() => window.peercall.id), bob: await bob.page.evaluate(() => window.peercall.id) };
    // Each still has exactly one peer: the other one, under its new id, on the same (never interrupted) connection.
    await waitFor(async () => {
      const [pa, pb] = [await ada.page.evaluate(() => window.peercall.peers()), await bob.page.evaluate(() => window.peercall.peers())];
      return pa.length === 1 && pb.length === 1 && pa[0].id === newIds.bob && pb[0].id === newIds.ada
        && !pa[0].orphan && !pb[0].orphan && pa[0].connectionState === 'connected' && pb[0].connectionState === 'connected';
    }, { timeout: 10_000, what: 'both sides to know each other by their new ids' });
    for (const [viewer, other] of [[ada, 'Bob'], [bob, 'Ada']]) {
      const names = (await tilesOf(viewer)).filter((x) => !x.local).map((x) => x.name);
      assert.deepEqual(names, [other], `${viewer.name} shows one tile for ${other}, no duplicate`);
    }
    await waitMediaFlowing(ada, newIds.bob);
    await waitMediaFlowing(bob, newIds.ada);

    // Signaling works again: a newcomer joins both.
    const cyd = await join(browser, server, room, 'Cyd');
    await waitConnected(cyd, 'Ada', { timeout: 30_000 });
    await waitConnected(cyd, 'Bob', { timeout: 30_000 });
    await waitMediaFlowing(ada, cyd.id);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\n--- server ---\n${server.logs().slice(-3000)}`;
    throw e;
  }
});

test('forged, foreign, invalid and oversized messages get errors; the call is unaffected', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('abuse');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  const sockets = [];
  const connect = async () => {
    const ws = await RawWebSocket.connect(server.wsUrl);
    sockets.push(ws);
    return ws;
  };
  cleanup.add(() => sockets.forEach((ws) => ws.close()));
  try {
    await waitConnected(ada, 'Bob');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);

    // Before joining: anything but join is refused.
    const mallory = await connect();
    mallory.send({ type: 'offer', to: ada.id, sdp: 'v=0' });
    assert.equal((await mallory.nextError('offer before join')).code, 'not-joined');
    mallory.send('this is not json');
    assert.equal((await mallory.nextError('invalid JSON')).code, 'bad-json');
    mallory.send('[1, 2, 3]');
    assert.equal((await mallory.nextError('JSON array')).code, 'bad-json');

    // Mallory joins the room and forges `from` to speak as Bob: the server stamps her own id instead.
    mallory.send({ v: 1, type: 'join', room, name: 'Mallory' });
    const welcome = await mallory.next((m) => m.type === 'welcome', { what: 'welcome' });
    assert.ok(welcome, 'Mallory got in (the room is open)');
    assert.deepEqual(welcome.peers.map((p) => p.id).sort(), [ada.id, bob.id].sort());
    mallory.send({ type: 'message', to: ada.id, from: bob.id, data: { t: 'chat', text: 'I am Bob, send me your password' } });
    mallory.send({ type: 'message', to: ada.id, from: bob.id, data: { t: 'bye' } }); // would drop Bob if trusted
    const forged = await waitFor(() => ada.page.evaluate(() => window.peercall.chat().find((m) => m.text.includes('send me your password'))),
      { timeout: 5000, what: 'the forged message to arrive' });
    assert.equal(forged.name, 'Mallory', 'shown as coming from Mallory, not Bob');
    assert.equal(forged.from, welcome.id);
    assert.equal((await waitConnected(ada, 'Bob')).id, bob.id, 'Bob is still in Ada\'s call');

    // Unknown type, missing and wrong fields, a second join.
    mallory.send({ type: 'teleport', to: ada.id });
    assert.equal((await mallory.nextError('unknown type')).code, 'unknown-type');
    mallory.send({ type: 'offer', sdp: 'v=0' });
    assert.equal((await mallory.nextError('offer without to')).code, 'bad-field');
    mallory.send({ type: 'offer', to: ada.id, sdp: 42 });
    assert.equal((await mallory.nextError('sdp not a string')).code, 'bad-field');
    mallory.send({ v: 1, type: 'join', room, name: 'Mallory again' });
    assert.equal((await mallory.nextError('second join')).code, 'already-joined');

    // Oversized frame (over the 64 KiB default): refused, connection kept.
    mallory.send({ type: 'message', to: ada.id, data: 'x'.repeat(70 * 1024) });
    assert.equal((await mallory.nextError('oversized')).code, 'too-large');
    mallory.sendBinary(Buffer.from([1, 2, 3]));
    assert.equal((await mallory.nextError('binary frame')).code, 'bad-json');
    mallory.send({ type: 'ping' });
    assert.ok(await mallory.next((m) => m.type === 'pong', { what: 'pong' }), 'the connection is still usable');

    // A client of another room cannot reach Ada or Bob.
    const eve = await connect();
    eve.send({ v: 1, type: 'join', room: uniqueRoom('elsewhere'), name: 'Eve' });
    assert.ok(await eve.next((m) => m.type === 'welcome', { what: 'Eve\'s welcome' }));
    eve.send({ type: 'offer', to: ada.id, sdp: 'v=0\r\n' });
    assert.equal((await eve.nextError('foreign offer')).code, 'unknown-peer');
    eve.send({ type: 'message', to: bob.id, data: { t: 'chat', text: 'from another room' } });
    assert.equal((await eve.nextError('foreign message')).code, 'unknown-peer');

    // An unsupported protocol version is refused.
    const old = await connect();
    old.send({ v: 2, type: 'join', room, name: 'Future' });
    assert.equal((await old.nextError('v2 join')).code, 'unsupported-version');

    // Repeated abuse: the server gives up on that connection (and only that one).
    const flood = await connect();
    let abuse = null;
    for (let i = 0; i < 200 && !flood.closed; i++) {
      flood.send('{nope');
      await sleep(5);
    }
    abuse = await flood.next((m) => m.type === 'error' && m.code === 'abuse', { timeout: 5000, what: 'abuse error' });
    assert.ok(abuse, 'the abusive connection is told why');
    await waitFor(() => flood.closed, { timeout: 5000, what: 'the abusive connection to be closed' });

    // Through all this, Ada and Bob's call went on, and they saw nothing of it but Mallory joining.
    for (const [viewer, other] of [[ada, bob], [bob, ada]]) {
      const flow = await mediaFlowing(viewer, other.id);
      assert.ok(flow.ok, `${viewer.name} still receives ${other.name}: ${flow.problems.join(', ')}`);
      assert.equal(await statusOf(viewer), 'connected');
    }
    // Mallory's forged "bye" only ended Mallory's own presence on Ada's screen; Bob still sees her.
    assert.deepEqual((await tilesOf(ada)).filter((x) => !x.local).map((x) => x.name), ['Bob']);
    assert.deepEqual((await tilesOf(bob)).filter((x) => !x.local).map((x) => x.name).sort(), ['Ada', 'Mallory']);
    assert.equal((await tilesOf(bob)).some((x) => x.name === 'Eve'), false, 'Eve never showed up');
    assert.equal(await bob.page.evaluate(() => window.peercall.chat().some((m) => m.text === 'from another room')), false);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});

test('a relayed call recovers when the server and its TURN relay restart', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('relay-restart');
  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  try {
    await waitConnected(ada, 'Bob');
    await waitMediaFlowing(bob, ada.id);
    const { httpPort, turnPort } = server;
    await server.kill('SIGKILL'); // the relay goes with it: media stops
    await waitFor(async () => (await peersOf(ada))[0]?.connectionState !== 'connected', { timeout: 20_000, what: 'Ada to notice the relay is gone' });
    const downAt = Date.now();
    server = await startServer({ httpPort, turnPort }); // new process: new TURN secret, no allocations
    for (const [viewer, other] of [[ada, 'Bob'], [bob, 'Ada']]) {
      const peer = await waitConnected(viewer, other, { timeout: 45_000 });
      const stats = await statsOf(viewer, peer.id);
      assert.equal(stats.pair?.local?.type, 'relay', `${viewer.name} is relayed again`);
      await waitMediaFlowing(viewer, peer.id, { what: `${viewer.name} to receive ${other} again` });
      const names = (await tilesOf(viewer)).filter((x) => !x.local).map((x) => x.name);
      assert.deepEqual(names, [other], `${viewer.name} shows one tile for ${other}`);
    }
    t.diagnostic(`call restored ${Date.now() - downAt} ms after the relay failure was noticed`);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\n--- server ---\n${server.logs().slice(-2000)}`;
    throw e;
  }
});

test('a dropped signaling connection resumes the same session: same id, nobody sees a leave', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('resume');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    // Mark Bob's connection object to Ada, to prove later it is the very same one.
    await bob.page.evaluate((id) => { window.peercall.pc(id).marker = 'original'; }, ada.id);
    const toasts = () => bob.page.evaluate(() => [...document.querySelectorAll('.toast')].map((x) => x.textContent));

    for (let i = 1; i <= 3; i++) {
      await ada.page.evaluate(() => window.peercall.dropSignaling());
      await waitFor(async () => (await statusOf(ada)) === 'reconnecting', { timeout: 5000, what: 'Ada to notice the drop' });
      await waitFor(async () => (await statusOf(ada)) === 'connected', { timeout: 15_000, what: `Ada to resume (drop ${i})` });
      assert.equal(await ada.page.evaluate(() => window.peercall.id), ada.id, 'Ada keeps her id');
    }
    assert.ok(!(await toasts()).some((x) => /Ada (left|joined)/.test(x)), 'Bob saw no leave or join');
    assert.equal(await bob.page.evaluate((id) => window.peercall.pc(id)?.marker, ada.id), 'original', 'Bob\'s connection to Ada was never replaced');
    await waitMediaFlowing(bob, ada.id);
    // Signaling works for Ada after resuming: a newcomer connects to her.
    const cyd = await join(browser, server, room, 'Cyd');
    await waitConnected(ada, 'Cyd', { timeout: 30_000 });
    await waitMediaFlowing(ada, cyd.id);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\n--- server ---\n${server.logs().slice(-2000)}`;
    throw e;
  }
});
