// Cluster benchmark (issue 13): one node vs two nodes on Redis. Message latency (p50/p99 of a ping-pong through
// signaling), messages per second, and Redis commands per join and per message (INFO commandstats).
// Usage: PEERCALL_BIN=target/release/peercall node bench/cluster.mjs   (bounded: 500 round trips, a burst of 50 messages)
import { performance } from 'node:perf_hooks';
import { RawWebSocket, uniqueRoom } from '../tests/browser/harness.mjs';
import { redisCommand, startNode, startRedis } from '../tests/cluster/cluster.mjs';

const ROUNDS = 500;
const BURST = 1000; // 50 per burst
async function joinOn(node, room, name) {
  const ws = await RawWebSocket.connect(node.wsUrl);
  ws.send({ v: 1, type: 'join', room, name });
  const w = await ws.next((m) => m.type === 'welcome', { timeout: 8000 });
  return { ws, id: w.id };
}
async function ops(port) {
  const text = await redisCommand(port, ['INFO', 'commandstats']);
  let n = 0;
  for (const m of text.matchAll(/calls=(\d+)/g)) n += Number(m[1]);
  return n;
}
async function measure(label, na, nb, redisPort) {
  const room = uniqueRoom('bench');
  const before = redisPort ? await ops(redisPort) : 0;
  const a = await joinOn(na, room, 'a');
  const b = await joinOn(nb, room, 'b');
  const afterJoin = redisPort ? await ops(redisPort) : 0;
  const lat = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    a.ws.send({ type: 'message', to: b.id, data: i });
    await b.ws.next((m) => m.type === 'message');
    b.ws.send({ type: 'message', to: a.id, data: i });
    await a.ws.next((m) => m.type === 'message');
    lat.push((performance.now() - t0) / 2);
    if (i % 40 === 39) await new Promise((r) => setTimeout(r, 1000)); // stay under 50 msgs/s per connection
  }
  lat.sort((x, y) => x - y);
  await new Promise((r) => setTimeout(r, 2500)); // refill the rate-limit bucket
  const beforeMsgs = redisPort ? await ops(redisPort) : 0;
  const t0 = performance.now();
  // Throughput: a burst of 50 messages from one sender (the per-connection rate limit's burst).
  let got = 0;
  for (let i = 0; i < BURST / 20; i++) a.ws.send({ type: 'message', to: b.id, data: i });
  while (got < BURST / 20) { await b.ws.next((m) => m.type === 'message'); got++; }
  const secs = (performance.now() - t0) / 1000;
  const afterMsgs = redisPort ? await ops(redisPort) : 0;
  const perJoin = redisPort ? ((afterJoin - before) / 2).toFixed(1) : '-';
  const perMsg = redisPort ? ((afterMsgs - beforeMsgs - ROUNDS * 0) / (BURST / 20)).toFixed(2) : '-';
  console.log(`${label}: one-way latency p50 ${lat[Math.floor(ROUNDS / 2)].toFixed(3)} ms, p99 ${lat[Math.floor(ROUNDS * 0.99)].toFixed(3)} ms; `
    + `${(got / secs).toFixed(0)} msgs/s (one sender, burst); Redis commands per join ${perJoin}, per message ${perMsg}`);
  for (const c of [a, b]) c.ws.close();
}
const redis = await startRedis();
const n1 = await startNode(redis.url);
const n2 = await startNode(redis.url);
try {
  await measure('same node (clustered)', n1, n1, redis.port);
  await measure('cross node', n1, n2, redis.port);
} finally {
  for (const p of [n1, n2, redis]) await p.kill();
}
