// The attacks of issue 9, run together against one `peercall serve` while two browsers are in a call through
// its TURN relay: the call keeps decoding video, the server's memory and descriptors stay bounded, and every
// attack gets its documented answer. Everything is on loopback: each "attacker" has its own source address in
// 127.0.0.0/8 (127.0.0.2 and up), the browsers are 127.0.0.1, so per-address limits fall on the attackers only.
// Every loop is bounded in count; the whole test in time.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  Cleanup, RawWebSocket, describe, join, launchBrowser, mediaFlowing, startServer, statsOf, uniqueRoom, waitConnected,
  waitMediaFlowing,
} from './harness.mjs';
import { ATTR, METHOD, UDP_TRANSPORT, UdpTurnClient, encode, tcpConnect, xorAddress } from './turn-client.mjs';

const LIMITS = {
  clientQuota: 20, maxPermissions: 8, tcpPerAddress: 20, unauthRate: 10, joinsPerMin: 30, failedJoins: 3,
};

function serverArgs() {
  return [
    '--client-quota', String(LIMITS.clientQuota),
    '--max-permissions', String(LIMITS.maxPermissions),
    '--tcp-per-address', String(LIMITS.tcpPerAddress),
    '--unauth-rate', String(LIMITS.unauthRate),
    '--max-joins-per-min', String(LIMITS.joinsPerMin),
    '--failed-joins-before-backoff', String(LIMITS.failedJoins),
    // Peers the relay policy allows, so that the permission cap (not the policy) is what refuses. Nothing is
    // ever sent to them: CreatePermission only installs a permission.
    '--allow-peer', '198.51.100.0/24',
  ];
}

/** Everything an attack opened, closed when the test ends (also when it fails: open sockets would keep
 *  the test process alive). */
const opened = [];
const keep = (closable) => {
  opened.push(closable);
  return closable;
};

function residentMiB(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]) / 1024;
}

const openDescriptors = (pid) => readdirSync(`/proc/${pid}/fd`).length;

async function metric(server, name) {
  const body = await (await fetch(`${server.url}/metrics`)).text();
  const line = body.split('\n').find((l) => l.startsWith(name));
  assert.ok(line, `no metric ${name}`);
  return Number(line.split(' ').pop());
}

/** TURN credentials the way a browser gets them: join a room over signaling, read the welcome. */
async function credentials(server, localAddress) {
  const ws = keep(await RawWebSocket.connect(server.wsUrl, { localAddress }));
  ws.send({ type: 'join', v: 1, room: uniqueRoom('creds'), name: 'Mallory' });
  const welcome = await ws.next((m) => m.type === 'welcome', { what: 'welcome' });
  const turn = welcome.iceServers.find((s) => s.username);
  return { ws, username: turn.username, password: turn.credential };
}

async function tcpIdleFlood(server) {
  const sockets = [];
  for (let i = 0; i < 300; i++) {
    const socket = await tcpConnect(server.turnPort, { localAddress: '127.0.0.2' });
    if (socket) sockets.push(keep({ close: () => socket.destroy(), destroyed: () => socket.destroyed, socket }));
  }
  await new Promise((r) => setTimeout(r, 500));
  const open = sockets.filter(({ socket }) => !socket.destroyed && !socket.readableEnded).length;
  const refused = await metric(server, 'peercall_turn_stream_refused_total{limit="per_address"}');
  // The server's footprint while all 300 are held open (or refused).
  const held = { rss: residentMiB(server.pid), fds: openDescriptors(server.pid) };
  for (const s of sockets) s.close();
  return { open, refused, held };
}

async function unauthenticatedFlood(server) {
  // Allocates with a random MESSAGE-INTEGRITY: unauthenticated until it verifies, so rate-limited.
  const client = keep(await UdpTurnClient.open({ host: '127.0.0.1', port: server.turnPort }, { localAddress: '127.0.0.3' }));
  const started = Date.now();
  const answers = await Promise.all(Array.from({ length: 300 }, () => {
    const { bytes, tid } = encode(METHOD.ALLOCATE, [UDP_TRANSPORT]);
    const forged = Buffer.concat([bytes, Buffer.from([0x00, 0x08, 0x00, 0x14]), randomBytes(20)]);
    forged.writeUInt16BE(bytes.readUInt16BE(2) + 24, 2);
    return client.send({ bytes: forged, tid }, 1500);
  }));
  client.close();
  return { answered: answers.filter(Boolean).length, seconds: (Date.now() - started) / 1000 };
}

async function allocationsFromOneAddress(server) {
  // Under `serve` every join mints a username: five of them, eight Allocates each, from one address.
  const codes = [];
  const clients = [];
  for (let j = 0; j < 5; j++) {
    const creds = await credentials(server, '127.0.0.4');
    for (let i = 0; i < 8; i++) {
      const client = keep(await UdpTurnClient.open({ host: '127.0.0.1', port: server.turnPort }, { localAddress: '127.0.0.4' }));
      clients.push(client);
      const r = await client.authed(METHOD.ALLOCATE, [UDP_TRANSPORT], creds);
      codes.push(r?.cls === 'success' ? 200 : r?.code);
    }
    creds.ws.close();
  }
  return { codes, clients };
}

async function permissionFlood(server) {
  const creds = await credentials(server, '127.0.0.5');
  const client = keep(await UdpTurnClient.open({ host: '127.0.0.1', port: server.turnPort }, { localAddress: '127.0.0.5' }));
  const alloc = await client.authed(METHOD.ALLOCATE, [UDP_TRANSPORT], creds);
  assert.equal(alloc?.cls, 'success', 'the attacker gets one allocation');
  const codes = [];
  for (let i = 1; i <= 20; i++) {
    const r = await client.authed(METHOD.CREATE_PERMISSION, [[ATTR.XOR_PEER_ADDRESS, xorAddress(`198.51.100.${i}`, 9)]], creds);
    codes.push(r?.cls === 'success' ? 200 : r?.code);
  }
  // The server itself, through its own relay: refused whatever the allow list says.
  const self = await client.authed(METHOD.CREATE_PERMISSION, [[ATTR.XOR_PEER_ADDRESS, xorAddress('127.0.0.1', server.turnPort)]], creds);
  client.close();
  creds.ws.close();
  return { codes, self: self?.code };
}

async function signalingAttacks(server) {
  // Another site's page opening our WebSocket.
  const foreign = await RawWebSocket.connect(server.wsUrl, { localAddress: '127.0.0.6', origin: 'https://evil.example' })
    .then(() => 'accepted', (e) => e.message);
  // Join and drop, again and again, from one address.
  const churn = [];
  for (let i = 0; i < 45; i++) {
    const ws = await RawWebSocket.connect(server.wsUrl, { localAddress: '127.0.0.7' });
    ws.send({ type: 'join', v: 1, room: uniqueRoom('churn'), name: 'M' });
    const m = await ws.next((x) => x.type === 'welcome' || x.type === 'error', { what: 'join answer' });
    churn.push(m.type === 'welcome' ? 'welcome' : m.code);
    ws.socket.destroy();
  }
  // Guessing a room's password from one address.
  const room = uniqueRoom('locked');
  const owner = await RawWebSocket.connect(server.wsUrl, { localAddress: '127.0.0.8' });
  owner.send({ type: 'join', v: 1, room, name: 'Owner', password: 'correct horse battery staple' });
  await owner.next((m) => m.type === 'welcome', { what: 'owner welcome' });
  const guesses = [];
  for (let i = 0; i < 10; i++) {
    const ws = await RawWebSocket.connect(server.wsUrl, { localAddress: '127.0.0.9' });
    ws.send({ type: 'join', v: 1, room, name: 'Guess', password: `guess-${i}` });
    const m = await ws.next((x) => x.type === 'welcome' || x.type === 'error', { what: 'guess answer' });
    guesses.push(m?.code ?? m?.type);
    ws.close();
  }
  owner.close();
  // A stranger (through a proxy) reading the status pages.
  const health = await (await fetch(`${server.url}/healthz`, { headers: { 'X-Forwarded-For': '203.0.113.9' } })).json();
  const metricsStatus = (await fetch(`${server.url}/metrics`, { headers: { 'X-Forwarded-For': '203.0.113.9' } })).status;
  return { foreign, churn, guesses, health, metricsStatus };
}

test('every attack at once, while a relayed call goes on: the call keeps its video, the server stays small', { timeout: 180_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  cleanup.add(() => {
    for (const c of opened.splice(0)) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  });
  const server = await startServer({ extraArgs: serverArgs() });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('under-attack');
  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  try {
    await waitConnected(ada, 'Bob', { timeout: 30_000 });
    await waitMediaFlowing(ada, bob.id, { timeout: 30_000 });
    await waitMediaFlowing(bob, ada.id, { timeout: 30_000 });
    const before = { rss: residentMiB(server.pid), fds: openDescriptors(server.pid) };

    // The attacks run together, and the call is measured while they run.
    const during = Promise.all([mediaFlowing(ada, bob.id, { ms: 4000 }), mediaFlowing(bob, ada.id, { ms: 4000 })]);
    const [tcp, unauth, allocations, permissions, signaling] = await Promise.all([
      tcpIdleFlood(server), unauthenticatedFlood(server), allocationsFromOneAddress(server), permissionFlood(server),
      signalingAttacks(server),
    ]);
    const after = { rss: residentMiB(server.pid), fds: openDescriptors(server.pid) };
    const peak = { rss: Math.max(after.rss, tcp.held.rss), fds: Math.max(after.fds, tcp.held.fds) };
    const flowDuring = await during;
    t.diagnostic(`before: ${before.rss.toFixed(1)} MiB, ${before.fds} fds; under attack: ${peak.rss.toFixed(1)} MiB, ${peak.fds} fds`);
    t.diagnostic(`unauthenticated flood: ${unauth.answered} of 300 answered in ${unauth.seconds.toFixed(1)} s`);

    // Every attack got its documented answer.
    assert.equal(tcp.open, LIMITS.tcpPerAddress, 'idle TCP connections kept per address');
    assert.ok(tcp.refused >= 300 - LIMITS.tcpPerAddress, `${tcp.refused} connections refused at accept`);
    // A burst of twice the rate per relay thread (2 here), then the rate: far below the 300 sent.
    assert.ok(unauth.answered <= 2 * (2 * LIMITS.unauthRate) + 2 * LIMITS.unauthRate * (unauth.seconds + 1),
      `${unauth.answered} forged-integrity requests answered`);
    assert.equal(allocations.codes.filter((c) => c === 200).length, LIMITS.clientQuota, allocations.codes.join(' '));
    // Past the quota: 486, or no answer at all when the attacker's nonce requests also ran into the
    // unauthenticated rate limit (each new socket fetches a nonce).
    const past = allocations.codes.filter((c) => c !== 200);
    assert.ok(past.every((c) => c === 486 || c == null), allocations.codes.join(' '));
    assert.ok(past.filter((c) => c === 486).length >= 10, allocations.codes.join(' '));
    assert.deepEqual(permissions.codes.slice(0, LIMITS.maxPermissions), Array(LIMITS.maxPermissions).fill(200));
    assert.ok(permissions.codes.slice(LIMITS.maxPermissions).every((c) => c === 508), permissions.codes.join(' '));
    assert.equal(permissions.self, 403, 'the server itself is never a peer');
    assert.match(signaling.foreign, /403/, 'a foreign Origin is refused');
    assert.ok(signaling.churn.includes('too-many-joins'), signaling.churn.join(' '));
    assert.ok(signaling.churn.filter((x) => x === 'welcome').length <= LIMITS.joinsPerMin * 2, signaling.churn.join(' '));
    // The allowance of failures, the one that starts the back-off, then refusals until it ends.
    const answered = LIMITS.failedJoins + 1;
    assert.deepEqual(signaling.guesses.slice(0, answered), Array(answered).fill('wrong-password'), signaling.guesses.join(' '));
    assert.ok(signaling.guesses.slice(answered).every((c) => c === 'too-many-joins'), signaling.guesses.join(' '));
    assert.deepEqual(signaling.health, { status: 'ok' }, 'strangers see only the status');
    assert.equal(signaling.metricsStatus, 403);

    // The call never noticed, and the server stayed within bounds.
    assert.ok(flowDuring.every((f) => f.ok), flowDuring.map((f) => f.problems.join(', ')).join(' | '));
    const stats = await statsOf(ada, bob.id);
    assert.equal(stats.pair?.local?.type, 'relay', 'the call is relayed by the attacked server');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
    assert.ok(peak.rss < before.rss + 64, `memory grew from ${before.rss.toFixed(1)} to ${peak.rss.toFixed(1)} MiB`);
    assert.ok(peak.fds < before.fds + 200, `descriptors grew from ${before.fds} to ${peak.fds}`);
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\n--- server ---\n${server.logs().slice(-4000)}`;
    throw e;
  }
});
