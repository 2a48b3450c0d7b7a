// Signaling across nodes on a real redis-server, with raw WebSocket clients: presence and messages across nodes,
// capacity and passwords under concurrent joins over both nodes, resume on another node, a node killed, Redis
// down and back, draining.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, RawWebSocket, sleep, uniqueRoom, waitFor } from '../browser/harness.mjs';
import { health, metric, redisCommand, startNode, startRedis } from './cluster.mjs';

async function joinOn(node, room, name, extra = {}) {
  const ws = await RawWebSocket.connect(node.wsUrl);
  ws.send({ v: 1, type: 'join', room, name, ...extra });
  const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: `${name}'s welcome` });
  return { ws, first, id: first?.id, resume: first?.resume };
}

const GRACE = 3; // --resume-grace of the nodes, seconds

async function cluster(cleanup, extraArgs = []) {
  const redis = await startRedis();
  cleanup.add(() => redis.kill());
  const args = ['--resume-grace', String(GRACE), ...extraArgs];
  const n1 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n1.kill());
  const n2 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n2.kill());
  return { redis, n1, n2, args };
}

test('two nodes: presence, ordered messages, renames and leaves cross nodes, never rooms', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const { n1, n2 } = await cluster(cleanup);
  const room = uniqueRoom('x');
  const ann = await joinOn(n1, room, 'Ann');
  assert.equal(ann.first.type, 'welcome');
  const bob = await joinOn(n2, room, 'Bob');
  assert.equal(bob.first.type, 'welcome');
  assert.deepEqual(bob.first.peers, [{ id: ann.id, name: 'Ann' }], "Bob's welcome on node 2 lists Ann of node 1");
  const joined = await ann.ws.next((m) => m.type === 'peer-joined', { what: 'Ann to hear Bob join' });
  assert.deepEqual(joined.peer, { id: bob.id, name: 'Bob' });
  assert.notEqual(ann.id, bob.id);

  // 100 messages from Ann arrive at Bob in order, stamped with Ann's id whatever `from` Ann wrote.
  for (let i = 0; i < 100; i++) ann.ws.send({ type: 'message', to: bob.id, from: 'forged', data: { i } });
  for (let i = 0; i < 100; i++) {
    const m = await bob.ws.next((x) => x.type === 'message', { what: `message ${i}` });
    assert.equal(m.from, ann.id);
    assert.equal(m.data.i, i, 'per-sender order is kept across nodes');
  }
  bob.ws.send({ type: 'offer', to: ann.id, sdp: 'v=0 fake' });
  const offer = await ann.ws.next((m) => m.type === 'offer', { what: 'the offer' });
  assert.equal(offer.from, bob.id);
  assert.equal(offer.sdp, 'v=0 fake');

  // A peer of another room (on either node) cannot reach them.
  const eve = await joinOn(n2, uniqueRoom('other'), 'Eve');
  eve.ws.send({ type: 'message', to: ann.id, data: 'psst' });
  assert.equal((await eve.ws.nextError('cross-room')).code, 'unknown-peer');
  const eve1 = await joinOn(n1, uniqueRoom('other'), 'Eve1');
  eve1.ws.send({ type: 'message', to: bob.id, data: 'psst' });
  assert.equal((await eve1.ws.nextError('cross-room')).code, 'unknown-peer');

  ann.ws.send({ type: 'rename', name: 'Annie' });
  const upd = await bob.ws.next((m) => m.type === 'peer-updated', { what: 'the rename' });
  assert.deepEqual(upd.peer, { id: ann.id, name: 'Annie' });

  // Resume on the other node: same id, nobody sees a leave or a join.
  ann.ws.close();
  await sleep(300);
  const again = await joinOn(n2, room, 'Annie', { resume: ann.resume });
  assert.equal(again.first.resumed, true, 'resumed on node 2');
  assert.equal(again.id, ann.id, 'same id on the other node');
  assert.deepEqual(again.first.peers.map((p) => p.id), [bob.id]);
  again.ws.send({ type: 'message', to: bob.id, data: 'back' });
  const back = await bob.ws.next((m) => m.type === 'message' || m.type === 'peer-left' || m.type === 'peer-joined', { what: 'the message after resume' });
  assert.equal(back.type, 'message', `Bob sees no leave or join, only Ann's message (got ${JSON.stringify(back)})`);

  again.ws.send({ type: 'leave' });
  const left = await bob.ws.next((m) => m.type === 'peer-left', { what: 'the leave' });
  assert.equal(left.id, ann.id);
  for (const c of [bob, eve, eve1]) c.ws.close();
});

test('capacity and password hold under concurrent joins over both nodes', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const { redis, n1, n2 } = await cluster(cleanup, ['--room-capacity', '2']);
  const nodes = [n1, n2];

  for (let round = 0; round < 3; round++) {
    const room = uniqueRoom('full');
    const all = await Promise.all(Array.from({ length: 8 }, (_, i) => joinOn(nodes[i % 2], room, `p${i}`)));
    const welcomed = all.filter((c) => c.first?.type === 'welcome');
    const full = all.filter((c) => c.first?.type === 'error' && c.first.code === 'room-full');
    assert.equal(welcomed.length, 2, `round ${round}: exactly 2 of 8 concurrent joins admitted`);
    assert.equal(full.length, 6, `round ${round}: the others get room-full`);
    for (const c of all) c.ws.close();
  }

  // A fresh room claimed concurrently with 6 different passwords: one wins; only its password opens the room.
  const room = uniqueRoom('pw');
  const racers = await Promise.all(Array.from({ length: 6 }, (_, i) => joinOn(nodes[i % 2], room, `r${i}`, { password: `secret-${i}` })));
  const winners = racers.filter((c) => c.first?.type === 'welcome');
  assert.equal(winners.length, 1, 'exactly one of 6 concurrent creators wins the room');
  const wrong = racers.filter((c) => c.first?.code === 'wrong-password');
  assert.equal(wrong.length, 5, 'the other 5 get wrong-password');
  const winner = racers.indexOf(winners[0]);
  const good = await joinOn(nodes[(winner + 1) % 2], room, 'good', { password: `secret-${winner}` });
  assert.equal(good.first.type, 'welcome', 'the right password opens it on the other node too');
  const bad = await joinOn(nodes[winner % 2], room, 'bad', { password: 'guess' });
  assert.equal(bad.first.code, 'wrong-password');
  for (const c of [...racers, good, bad]) c.ws.close();

  // Redis holds a salted hash, never the password.
  const dump = JSON.stringify(await redisCommand(redis.port, ['HGETALL', `pc:room:{${room}}`]).catch(() => []));
  for (let i = 0; i < 6; i++) assert.ok(!dump.includes(`secret-${i}`), 'no password in Redis');
});

test('a killed node: its peers resume on the other node, or are announced as left within the bound', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const { n1, n2 } = await cluster(cleanup);
  const room = uniqueRoom('kill');
  const bob = await joinOn(n2, room, 'Bob');
  const ann = await joinOn(n1, room, 'Ann');
  const cid = await joinOn(n1, room, 'Cid');
  await bob.ws.next((m) => m.type === 'peer-joined' && m.peer.name === 'Cid', { what: 'Cid joined' });
  await n1.kill('SIGKILL');
  // Ann comes back on node 2 with her token: same id, no leave. Cid does not come back.
  const annBack = await joinOn(n2, room, 'Ann', { resume: ann.resume });
  assert.equal(annBack.first.resumed, true);
  assert.equal(annBack.id, ann.id);
  const start = Date.now();
  const left = await bob.ws.next((m) => m.type === 'peer-left', { timeout: 20_000, what: "Cid's leave" });
  const took = (Date.now() - start) / 1000;
  assert.equal(left.id, cid.id, 'only Cid (not resumed) is announced as left');
  // Bound: node TTL 6 s + heartbeat 2 s + grace + a heartbeat of slack.
  assert.ok(took <= 6 + 2 + GRACE + 2, `left within the bound (${took.toFixed(1)} s)`);
  t.diagnostic(`the dead node's peer was announced as left after ${took.toFixed(1)} s`);
  const annSees = await annBack.ws.next((m) => m.type === 'peer-left', { timeout: 5000, what: 'Ann sees Cid leave' });
  assert.equal(annSees.id, cid.id);
  annBack.ws.send({ type: 'message', to: bob.id, data: 'still here' });
  const m = await bob.ws.next((x) => x.type === 'message', { what: 'message after the kill' });
  assert.equal(m.from, ann.id);
  for (const c of [bob, annBack]) c.ws.close();
});

test('Redis down: local calls go on, new joins get unavailable, healthz and metrics say so; back: joins work', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let { redis, n1, n2 } = await cluster(cleanup);
  const room = uniqueRoom('down');
  const ann = await joinOn(n1, room, 'Ann');
  const amy = await joinOn(n1, room, 'Amy');
  const bob = await joinOn(n2, room, 'Bob');
  await ann.ws.next((m) => m.type === 'peer-joined' && m.peer.name === 'Bob', { what: 'Bob joined' });

  await redis.kill('SIGKILL');
  await waitFor(async () => (await health(n1)).parts.signaling.redis.status === 'down', { timeout: 10_000, what: 'healthz to report Redis down' });
  const h = await fetch(`${n1.url}/healthz`);
  assert.equal(h.status, 200, 'a node without Redis stays in the load balancer (it serves its calls)');
  assert.equal((await h.json()).status, 'degraded');
  assert.equal(await metric(n1, 'peercall_signal_redis_up'), 0);
  // Same-node messages still flow.
  ann.ws.send({ type: 'message', to: amy.id, data: 'local' });
  assert.equal((await amy.ws.next((m) => m.type === 'message', { what: 'local message' })).from, ann.id);
  // A new join is refused with a clear error.
  const late = await joinOn(n2, room, 'Late');
  assert.equal(late.first.type, 'error');
  assert.equal(late.first.code, 'unavailable');
  assert.match(late.first.message, /Redis/);

  // Redis back, empty (no persistence): the nodes reconnect and write their rooms back.
  redis = await startRedis({ port: redis.port });
  cleanup.add(() => redis.kill());
  await waitFor(async () => (await health(n1)).parts.signaling.redis.status === 'up' && (await health(n2)).parts.signaling.redis.status === 'up',
    { timeout: 20_000, what: 'both nodes to reconnect' });
  await sleep(2500); // a heartbeat: rooms restored
  const again = await joinOn(n2, room, 'Late');
  assert.equal(again.first.type, 'welcome', 'joins work again');
  assert.deepEqual(again.first.peers.map((p) => p.name).sort(), ['Amy', 'Ann', 'Bob'], 'the room was restored from the nodes');
  ann.ws.send({ type: 'message', to: bob.id, data: 'cross again' });
  assert.equal((await bob.ws.next((m) => m.type === 'message', { what: 'cross-node message after Redis came back' })).from, ann.id);
  assert.ok((await metric(n1, 'peercall_signal_redis_reconnects_total')) >= 1);
  for (const c of [ann, amy, bob, late, again]) c.ws.close();
});

test('draining: SIGTERM closes with 4001 and the clients resume on another node, nobody sees a leave', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const { n1, n2 } = await cluster(cleanup);
  const room = uniqueRoom('drain');
  const ann = await joinOn(n1, room, 'Ann');
  const bob = await joinOn(n2, room, 'Bob');
  await ann.ws.next((m) => m.type === 'peer-joined', { what: 'Bob joined' });
  const stopped = n2.kill('SIGTERM');
  await waitFor(() => bob.ws.closed, { timeout: 5000, what: "Bob's socket to close" });
  assert.equal(bob.ws.closeCode, 4001, `draining close code; node 2 said:\n${n2.logs().slice(-3000)}`);
  await stopped;
  const back = await joinOn(n1, room, 'Bob', { resume: bob.resume });
  assert.equal(back.first.resumed, true);
  assert.equal(back.id, bob.id);
  back.ws.send({ type: 'message', to: ann.id, data: 'moved' });
  const m = await ann.ws.next((x) => x.type !== 'pong', { what: 'the message after the drain' });
  assert.equal(m.type, 'message', `Ann sees no leave (got ${JSON.stringify(m)})`);
  await sleep((6 + 2 + GRACE) * 1000);
  ann.ws.send({ type: 'ping' });
  const after = await ann.ws.next((x) => x.type === 'pong' || x.type === 'peer-left', { what: 'pong' });
  assert.equal(after.type, 'pong', 'still no leave after the grace period');
  for (const c of [ann, back]) c.ws.close();
});
