// `--redis redis-sentinel://...` (issue 13): two nodes find their Redis master through a real Sentinel
// (`redis-server --sentinel`) and serve one room across them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, RawWebSocket, uniqueRoom } from '../browser/harness.mjs';
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
  assert.equal(await redisCommand(master.port, ['EXISTS', `pc:room:${room}`]), 1, 'the room is stored on the master');
  ann.ws.close();
  bob.ws.close();
});
