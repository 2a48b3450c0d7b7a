// `--redis redis-sentinel://...` (issue 13): two nodes find their Redis master through a real Sentinel
// (`redis-server --sentinel`) and serve one room across them; when the master dies, the sentinel promotes the
// replica and the nodes follow it by themselves.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, RawWebSocket, uniqueRoom, waitFor } from '../browser/harness.mjs';
import { health, redisCommand, startNode, startRedis, startSentinel } from './cluster.mjs';

async function joinOn(node, room, name) {
  const ws = await RawWebSocket.connect(node.wsUrl);
  ws.send({ v: 1, type: 'join', room, name });
  const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: `${name}'s welcome` });
  return { ws, first, id: first?.id };
}

test('two nodes on a redis-sentinel:// URL share a room through the master the sentinel names', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const master = await startRedis();
  cleanup.add(() => master.kill());
  const sentinel = await startSentinel(master.port);
  cleanup.add(() => sentinel.kill());
  const n1 = await startNode(sentinel.url);
  cleanup.add(() => n1.kill());
  const n2 = await startNode(sentinel.url);
  cleanup.add(() => n2.kill());
  assert.equal((await health(n1)).parts.signaling.redis.status, 'up');

  const room = uniqueRoom('sentinel');
  const ann = await joinOn(n1, room, 'Ann');
  assert.equal(ann.first.type, 'welcome');
  const bob = await joinOn(n2, room, 'Bob');
  assert.equal(bob.first.type, 'welcome');
  assert.deepEqual(bob.first.peers, [{ id: ann.id, name: 'Ann' }], "Bob on node 2 sees Ann of node 1");
  ann.ws.send({ type: 'message', to: bob.id, data: { hello: 1 } });
  const m = await bob.ws.next((x) => x.type === 'message', { what: "Ann's message across nodes" });
  assert.equal(m.from, ann.id);
  assert.deepEqual(m.data, { hello: 1 });
  // The nodes were given only the sentinel's address (which runs no scripts): the room lives on the master.
  assert.equal(await redisCommand(master.port, ['EXISTS', `pc:room:{${room}}`]), 1, 'the room is stored on the master');
  ann.ws.close();
  bob.ws.close();
});

// Bound on the recovery after the master is killed: the sentinel's down-after (1 s) and failover (a few seconds
// on loopback), then the nodes' reconnect back-off (at most 5 s) and a heartbeat (2 s).
const FAILOVER_BOUND_S = 25;

test('sentinel failover: the master killed, the replica promoted, the nodes reconnect and the room works again', { timeout: 40_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const master = await startRedis();
  cleanup.add(() => master.kill());
  const replica = await startRedis({ extraArgs: ['--replicaof', '127.0.0.1', String(master.port)] });
  cleanup.add(() => replica.kill());
  await waitFor(async () => String(await redisCommand(replica.port, ['INFO', 'replication'])).includes('master_link_status:up'),
    { timeout: 10_000, interval: 100, what: 'the replica to sync' });
  const sentinel = await startSentinel(master.port, { downAfterMs: 1000, failoverTimeoutMs: 5000 });
  cleanup.add(() => sentinel.kill());
  // The sentinel must know the replica before the master dies, or it has nobody to promote.
  await waitFor(async () => {
    const replicas = await redisCommand(sentinel.port, ['SENTINEL', 'replicas', 'm']).catch(() => []);
    return Array.isArray(replicas) && replicas.length === 1;
  }, { timeout: 15_000, interval: 200, what: 'the sentinel to discover the replica' });
  const n1 = await startNode(sentinel.url);
  cleanup.add(() => n1.kill());
  const n2 = await startNode(sentinel.url);
  cleanup.add(() => n2.kill());
  const open = [];
  cleanup.add(() => open.forEach((c) => c.ws.close()));

  const room = uniqueRoom('failover');
  const ann = await joinOn(n1, room, 'Ann');
  const bob = await joinOn(n2, room, 'Bob');
  open.push(ann, bob);
  assert.equal(bob.first.type, 'welcome');
  await ann.ws.next((m) => m.type === 'peer-joined', { what: 'Ann to hear Bob join' });

  const killedAt = Date.now();
  await master.kill('SIGKILL');
  await waitFor(async () => {
    const addr = await redisCommand(sentinel.port, ['SENTINEL', 'get-master-addr-by-name', 'm']).catch(() => null);
    return Array.isArray(addr) && addr[1] === String(replica.port);
  }, { timeout: 20_000, interval: 200, what: 'the sentinel to promote the replica' });
  const promoted = (Date.now() - killedAt) / 1000;

  // The nodes find the new master by themselves: a new join on node 2 sees the room, messages cross again.
  let carl;
  await waitFor(async () => {
    const c = await joinOn(n2, room, 'Carl');
    open.push(c);
    if (c.first.type === 'welcome') carl = c;
    return !!carl;
  }, { timeout: FAILOVER_BOUND_S * 1000, interval: 500, what: 'a join to work again after the failover' });
  assert.deepEqual(carl.first.peers.map((p) => p.name).sort(), ['Ann', 'Bob'], 'the room is whole on the new master');
  ann.ws.send({ type: 'message', to: carl.id, data: 'after failover' });
  const m = await carl.ws.next((x) => x.type === 'message', { timeout: 10_000, what: "Ann's message to Carl across nodes" });
  assert.equal(m.from, ann.id);
  ann.ws.send({ type: 'message', to: bob.id, data: 'still here' });
  const m2 = await bob.ws.next((x) => x.type === 'message', { timeout: 10_000, what: "Ann's message to Bob across nodes" });
  assert.equal(m2.from, ann.id);
  const took = (Date.now() - killedAt) / 1000;
  assert.ok(took <= FAILOVER_BOUND_S, `working again within ${FAILOVER_BOUND_S} s (${took.toFixed(1)} s)`);
  t.diagnostic(`replica promoted after ${promoted.toFixed(1)} s; joins and cross-node messages work again ${took.toFixed(1)} s after the kill`);
  assert.equal(await redisCommand(replica.port, ['EXISTS', `pc:room:{${room}}`]), 1, 'the room is on the promoted replica');
  // /healthz learns it at the node's next heartbeat (every 2 s).
  await waitFor(async () => (await health(n1)).parts.signaling.redis.status === 'up', { timeout: 5000, what: "node 1's healthz to say up" });
});
