// `--redis redis-cluster://...` (issue 13): two signaling nodes on a real Redis Cluster (3 masters started by the
// test): every script keeps to one hash slot (rooms `{ROOM}`, addresses `{ADDR}`), room channels are shard
// channels (SSUBSCRIBE/SPUBLISH), and the guarantees of one Redis hold: messages across nodes, capacity and
// password under concurrent joins spread over both nodes, resume on the other node.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, RawWebSocket, sleep, uniqueRoom } from '../browser/harness.mjs';
import { health, redisCommand, startNode, startRedisCluster } from './cluster.mjs';

async function joinOn(node, room, name, extra = {}) {
  const ws = await RawWebSocket.connect(node.wsUrl);
  ws.send({ v: 1, type: 'join', room, name, ...extra });
  const first = await ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: `${name}'s welcome` });
  return { ws, first, id: first?.id, resume: first?.resume };
}

test('two nodes on a Redis Cluster: messages across nodes, capacity and password under concurrent joins, resume elsewhere', { timeout: 40_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const cluster = await startRedisCluster();
  cleanup.add(() => cluster.kill());
  const args = ['--room-capacity', '2'];
  const n1 = await startNode(cluster.url, { extraArgs: args });
  cleanup.add(() => n1.kill());
  // Node 2 is given one seed node only: it learns the others from the cluster.
  const n2 = await startNode(`redis-cluster://127.0.0.1:${cluster.ports[1]}`, { extraArgs: args });
  cleanup.add(() => n2.kill());
  assert.equal((await health(n2)).parts.signaling.redis.status, 'up');
  const open = [];
  cleanup.add(() => open.forEach((c) => c.ws.close()));
  const join = async (...a) => {
    const c = await joinOn(...a);
    open.push(c);
    return c;
  };

  // Presence and messages across nodes, both ways and in order.
  const room = uniqueRoom('rc');
  const ann = await join(n1, room, 'Ann');
  assert.equal(ann.first.type, 'welcome', JSON.stringify(ann.first));
  const bob = await join(n2, room, 'Bob');
  assert.equal(bob.first.type, 'welcome', JSON.stringify(bob.first));
  assert.deepEqual(bob.first.peers, [{ id: ann.id, name: 'Ann' }], 'Bob on node 2 sees Ann of node 1');
  await ann.ws.next((m) => m.type === 'peer-joined', { what: 'Ann to hear Bob join' });
  for (let i = 0; i < 20; i++) ann.ws.send({ type: 'message', to: bob.id, data: { i } });
  for (let i = 0; i < 20; i++) {
    const m = await bob.ws.next((x) => x.type === 'message', { what: `message ${i}` });
    assert.equal(m.from, ann.id);
    assert.equal(m.data.i, i, 'per-sender order across nodes');
  }
  bob.ws.send({ type: 'offer', to: ann.id, sdp: 'v=0 fake' });
  assert.equal((await ann.ws.next((m) => m.type === 'offer', { what: "Bob's offer" })).from, bob.id);
  // The room lives on the master of its slot, and both nodes listen on its shard channel there.
  const owner = await cluster.owner(`pc:room:{${room}}`);
  assert.equal(await redisCommand(owner, ['EXISTS', `pc:room:{${room}}`]), 1, 'the room hash is on its slot owner');
  const numsub = await redisCommand(owner, ['PUBSUB', 'SHARDNUMSUB', `pc:ch:{${room}}`]);
  assert.equal(Number(numsub[1]), 2, 'both nodes subscribe to the room as a shard channel');

  // Resume on the other node: same id, Bob sees neither a leave nor a join.
  ann.ws.close();
  await sleep(300);
  const again = await join(n2, room, 'Ann', { resume: ann.resume });
  assert.equal(again.first.resumed, true, `resumed on node 2: ${JSON.stringify(again.first)}`);
  assert.equal(again.id, ann.id, 'same id on the other node');
  again.ws.send({ type: 'message', to: bob.id, data: 'back' });
  const back = await bob.ws.next((m) => m.type === 'message' || m.type === 'peer-left' || m.type === 'peer-joined', { what: 'the message after resume' });
  assert.equal(back.type, 'message', `Bob sees no leave or join (got ${JSON.stringify(back)})`);

  // Capacity 2 under 8 concurrent joins spread over both nodes, in rooms of (likely) different masters.
  const owners = new Set();
  for (let round = 0; round < 3; round++) {
    const r = uniqueRoom(`full${round}`);
    owners.add(await cluster.owner(`pc:room:{${r}}`));
    const all = await Promise.all(Array.from({ length: 8 }, (_, i) => join([n1, n2][i % 2], r, `p${i}`)));
    assert.equal(all.filter((c) => c.first?.type === 'welcome').length, 2, `round ${round}: exactly 2 of 8 admitted`);
    assert.equal(all.filter((c) => c.first?.code === 'room-full').length, 6, `round ${round}: 6 get room-full`);
  }
  t.diagnostic(`capacity rounds ran on ${owners.size} of 3 masters`);

  // A fresh room claimed concurrently with 4 passwords over both nodes: one wins, only its password opens it.
  const proom = uniqueRoom('rcpw');
  const racers = await Promise.all(Array.from({ length: 4 }, (_, i) => join([n1, n2][i % 2], proom, `r${i}`, { password: `secret-${i}` })));
  const winners = racers.filter((c) => c.first?.type === 'welcome');
  assert.equal(winners.length, 1, 'exactly one creator wins the room');
  assert.equal(racers.filter((c) => c.first?.code === 'wrong-password').length, 3, 'the others get wrong-password');
  const w = racers.indexOf(winners[0]);
  const good = await join([n1, n2][(w + 1) % 2], proom, 'good', { password: `secret-${w}` });
  assert.equal(good.first.type, 'welcome', 'the right password opens it on the other node');
  const bad = await join([n1, n2][w % 2], proom, 'bad', { password: 'guess' });
  assert.equal(bad.first.code, 'wrong-password', 'a wrong password is refused');
  const dump = JSON.stringify(await redisCommand(await cluster.owner(`pc:room:{${proom}}`), ['HGETALL', `pc:room:{${proom}}`]));
  assert.match(dump, /"pw"/, 'the room has its password hash on its slot owner');
  for (let i = 0; i < 4; i++) assert.ok(!dump.includes(`secret-${i}`), 'no password in Redis');
});
