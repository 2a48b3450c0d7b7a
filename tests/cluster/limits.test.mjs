// Per-address limits that hold across nodes (issue 13): the connection cap, joins per minute and new rooms per
// minute are counted in Redis, a dead node's connections stop counting once its liveness key expires, and with
// Redis down each node falls back to its own cap (and says so in /metrics). Clients on distinct loopback
// addresses (127.0.0.x) stand for distinct users; the nodes trust only 127.0.0.1 as a proxy.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, RawWebSocket, sleep, uniqueRoom, waitFor } from '../browser/harness.mjs';
import { metric, redisCommand, startNode, startRedis, twoNodes } from './cluster.mjs';

/** Opens a WebSocket from `localAddress` and joins: {ws, first} where first is the welcome or the error. */
async function joinFrom(localAddress, node, room, name) {
  const ws = await RawWebSocket.connect(node.wsUrl, { localAddress });
  ws.send({ v: 1, type: 'join', room, name });
  const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: `${name}'s answer` });
  return { ws, first };
}

/** The per-minute counters use fixed windows of Redis's clock: keep a check out of a minute's last seconds. */
async function awayFromMinuteEdge() {
  const intoMinute = Date.now() % 60_000;
  if (intoMinute > 45_000) await sleep(60_000 - intoMinute + 500);
}

/**
 * Opens a WebSocket from `localAddress` without joining: {ws, first, admitted}. A rename before a join is
 * answered `not-joined` by the room core once the node admitted the connection (a ping would not do: the
 * connection's own session answers it at once), or the connection is refused `too-many-connections`.
 */
async function connectFrom(localAddress, node) {
  const ws = await RawWebSocket.connect(node.wsUrl, { localAddress });
  ws.send({ v: 1, type: 'rename', name: 'x' });
  const first = await ws.next((m) => m.type === 'error', { timeout: 8000, what: 'the answer to a rename' });
  return { ws, first, admitted: first.code === 'not-joined' };
}

/** Whether one more connection from `localAddress` is admitted on `node` (kept in `open` if so). */
async function admittedOn(localAddress, node, open) {
  const c = await connectFrom(localAddress, node);
  if (c.admitted) open.push(c);
  else c.ws.close();
  return c.admitted;
}

const CAP = 3;

test('per-address limits hold across two nodes; a dead node stops counting; Redis down: each node its own cap', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const redis = await startRedis();
  cleanup.add(() => redis.kill());
  const args = ['--resume-grace', '3', '--max-connections-per-ip', String(CAP), '--max-joins-per-min', '4', '--max-new-rooms-per-min', '2'];
  const n1 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n1.kill());
  const n2 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n2.kill());
  const open = [];
  cleanup.add(() => open.forEach((c) => c.ws.close()));

  // Connections per address: 2 on node 1 and 1 on node 2 fill the cap of 3; a 4th is refused on either node.
  // (The cap is about connections, so these do not join: a ping is answered once the node admitted it.)
  const n1Conns = [];
  for (const node of [n1, n1, n2]) {
    const c = await connectFrom('127.0.0.2', node);
    assert.equal(c.first.code, 'not-joined', `connection ${open.length + 1} of ${CAP} is admitted`);
    open.push(c);
    if (node === n1) n1Conns.push(c);
  }
  for (const node of [n2, n1]) {
    const over = await connectFrom('127.0.0.2', node);
    assert.equal(over.first.code, 'too-many-connections', `a 4th connection is refused on node ${node === n1 ? 1 : 2}`);
    assert.match(over.first.message, /across this service's nodes/);
    await waitFor(() => over.ws.closed, { timeout: 3000, what: 'the refused connection to close' });
  }
  // Another address is not affected.
  const other = await connectFrom('127.0.0.9', n2);
  assert.ok(other.admitted, 'another address is not affected');
  open.push(other);
  // A connection that goes gives its place back, on the other node too.
  n1Conns.shift().ws.close();
  await waitFor(() => admittedOn('127.0.0.2', n2, open), { timeout: 5000, interval: 200, what: 'the closed connection to stop counting' });

  // Joins per minute (4) across nodes: the 5th join of an address is refused, whichever node it reaches
  // (each node alone would allow 4).
  await awayFromMinuteEdge();
  const jroom = uniqueRoom('rate');
  for (const node of [n1, n2, n1, n2]) {
    const c = await joinFrom('127.0.0.3', node, jroom, 'j');
    assert.equal(c.first.type, 'welcome', 'joins within the rate are admitted');
    c.ws.close();
  }
  const fifth = await joinFrom('127.0.0.3', n1, jroom, 'j5');
  assert.equal(fifth.first.code, 'too-many-joins', 'the 5th join in a minute is refused across nodes');
  assert.match(fifth.first.message, /at most 4 a minute/);

  // New rooms per minute (2) across nodes.
  await awayFromMinuteEdge();
  for (const node of [n1, n2]) {
    const c = await joinFrom('127.0.0.4', node, uniqueRoom('new'), 'r');
    assert.equal(c.first.type, 'welcome', 'new rooms within the rate are created');
    c.ws.close();
  }
  const third = await joinFrom('127.0.0.4', n1, uniqueRoom('new'), 'r3');
  assert.equal(third.first.code, 'too-many-joins', 'a 3rd new room in a minute is refused across nodes');
  assert.match(third.first.message, /new rooms/);

  // Redis holds the counts per address (a hash per address, node -> connections).
  const counted = await redisCommand(redis.port, ['HGET', 'pc:ips:{127.0.0.2}', await nodeId(n1)]);
  assert.equal(Number(counted), 1, "node 1's one connection from 127.0.0.2 is counted in Redis");

  // A node killed: once its liveness lapses (6 s), its connections no longer count on the other node.
  await n1.kill('SIGKILL');
  assert.equal((await connectFrom('127.0.0.2', n2)).first.code, 'too-many-connections', 'the cap is full right after the kill');
  await waitFor(() => admittedOn('127.0.0.2', n2, open), { timeout: 12_000, interval: 500, what: "the dead node's connections to stop counting" });

  // Redis down: node 2 falls back to its own cap (already full for 127.0.0.2 here after the above? count it).
  await redis.kill('SIGKILL');
  await waitFor(async () => (await metric(n2, 'peercall_signal_redis_up')) === 0, { timeout: 10_000, what: 'node 2 to see Redis down' });
  const fresh = [];
  for (let i = 0; i < CAP; i++) {
    const c = await connectFrom('127.0.0.5', n2);
    assert.ok(c.admitted, "with Redis down a connection is admitted on the node's own cap");
    fresh.push(c);
  }
  const overLocal = await connectFrom('127.0.0.5', n2);
  assert.equal(overLocal.first.code, 'too-many-connections', 'the node still holds its own cap');
  assert.ok((await metric(n2, 'peercall_signal_redis_limit_fallbacks_total')) >= 1, 'the fallback is counted in /metrics');
  for (const c of [...fresh, overLocal]) c.ws.close();
});

/** A node's cluster id, from its /healthz. */
async function nodeId(node) {
  const h = await fetch(`${node.url}/healthz`).then((r) => r.json());
  return h.parts.signaling.redis.node;
}

/** Joins `room` with `password` from `localAddress`: {first, ms} (the welcome or error, and how long it took). */
async function guessFrom(localAddress, node, room, password, open) {
  const ws = await RawWebSocket.connect(node.wsUrl, { localAddress });
  open.push(ws);
  const started = Date.now();
  ws.send({ v: 1, type: 'join', room, name: 'g', password });
  const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: 'the answer to a join' });
  return { first, ms: Date.now() - started };
}

test('password guessing spread over two nodes meets the back-off and the room delay at one node\'s thresholds', { timeout: 60_000 }, async (t) => {
  const { redis, n1, n2, open } = await twoNodes(t, ['--failed-joins-before-backoff', '3', '--room-failed-joins-before-delay', '4']);

  // Address back-off: 3 failures allowed, the 4th starts a back-off; alternated over the nodes (2 per node,
  // which each node alone would allow), the 5th is refused at once on the other node.
  const aroom = uniqueRoom('guess-ip');
  assert.equal((await guessFrom('127.0.0.30', n1, aroom, 'right', open)).first.type, 'welcome');
  for (const [i, node] of [n1, n2, n1, n2].entries()) {
    const g = await guessFrom('127.0.0.31', node, aroom, `wrong${i}`, open);
    assert.equal(g.first.code, 'wrong-password', `guess ${i + 1} is checked`);
  }
  const fifth = await guessFrom('127.0.0.31', n1, aroom, 'right', open);
  assert.equal(fifth.first.code, 'too-many-joins', 'after the 4th failure the address backs off on the other node too');
  assert.match(fifth.first.message, /too many failed joins from your address: try again in 1 s/);
  assert.equal((await guessFrom('127.0.0.32', n2, aroom, 'right', open)).first.type, 'welcome', 'another address is not affected');
  assert.ok(Number(await redisCommand(redis.port, ['GET', 'pc:rate:fi:{127.0.0.31}'])) >= 4, 'Redis holds the count of the address');

  // Room delay: after 4 failed joins to a room (from 4 addresses, so no back-off, alternating nodes), every
  // join to it waits about a second before it is checked, on both nodes, the right password too.
  const rroom = uniqueRoom('guess-room');
  assert.equal((await guessFrom('127.0.0.40', n1, rroom, 'right', open)).first.type, 'welcome');
  for (const [i, node] of [n2, n1, n2, n1].entries()) {
    const g = await guessFrom(`127.0.0.${41 + i}`, node, rroom, 'wrong', open);
    assert.equal(g.first.code, 'wrong-password');
    assert.ok(g.ms < 900, `failure ${i + 1} of 4 is answered without delay (${g.ms} ms)`);
  }
  for (const node of [n2, n1]) {
    const late = await guessFrom('127.0.0.50', node, rroom, 'right', open);
    assert.equal(late.first.type, 'welcome', 'the right password is still admitted');
    assert.ok(late.ms >= 950, `the join waited the room's guessing delay (${late.ms} ms)`);
  }
});
