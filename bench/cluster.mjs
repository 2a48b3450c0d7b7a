// Cluster benchmark (issue 13): one node without Redis against two nodes on one redis-server, side by side.
// Per setup: idle connections held and memory per connection (VmRSS of the node processes from /proc, before and
// after), one-way message latency p50/p99 (ping-pong through signaling, same node and cross node), messages per
// second (a burst from one sender), and Redis commands per connection, per join and per message (INFO
// commandstats deltas). RUNS runs (default 3), medians printed as a Markdown table.
// Usage: PEERCALL_BIN=target/release/peercall node bench/cluster.mjs   (bounded: HOLD connections, ROUNDS round
// trips, a burst of 50 messages per run; every wait has a timeout)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { BIN, RawWebSocket, freePort, uniqueRoom, waitFor } from '../tests/browser/harness.mjs';
import { redisCommand, startNode, startRedis } from '../tests/cluster/cluster.mjs';

const RUNS = Number(process.env.RUNS ?? 3);
const ROUNDS = Number(process.env.ROUNDS ?? 300);
const HOLD = Math.min(Number(process.env.HOLD ?? 1000), 5000);
const BURST = 50; // the per-connection rate limit's burst
const LIMITS = ['--max-connections-per-ip', '100000', '--max-joins-per-min', '100000', '--max-new-rooms-per-min', '100000'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A node without Redis (the single-binary default). */
async function startPlain() {
  const port = await freePort();
  const child = spawn(BIN, ['signal', '--http', `127.0.0.1:${port}`, ...LIMITS], { stdio: 'ignore' });
  const node = { pid: child.pid, port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws` };
  node.kill = async () => { child.kill('SIGKILL'); await new Promise((r) => child.once('exit', r)); };
  await waitFor(async () => (await fetch(`${node.url}/healthz`).catch(() => null))?.ok, { timeout: 15_000, what: 'plain node' });
  return node;
}

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

async function ops(port) {
  if (!port) return 0;
  const text = await redisCommand(port, ['INFO', 'commandstats']);
  let n = 0;
  for (const m of text.matchAll(/calls=(\d+)/g)) n += Number(m[1]);
  return n;
}

async function joinOn(node, room, name) {
  const ws = await RawWebSocket.connect(node.wsUrl);
  ws.send({ v: 1, type: 'join', room, name });
  const w = await ws.next((m) => m.type === 'welcome', { timeout: 8000, what: 'welcome' });
  return { ws, id: w.id };
}

/** HOLD idle connections spread over `nodes` (each admitted: a rename before join is answered not-joined). */
async function hold(nodes, redisPort) {
  await sleep(500);
  const before = nodes.map((n) => rssKiB(n.pid));
  const ops0 = await ops(redisPort);
  const conns = [];
  for (let i = 0; i < HOLD; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, HOLD - i) }, async (_, j) => {
      const ws = await RawWebSocket.connect(nodes[(i + j) % nodes.length].wsUrl, { timeout: 10_000 });
      ws.send({ v: 1, type: 'rename', name: 'x' });
      const m = await ws.next((x) => x.type === 'error', { timeout: 10_000, what: 'admission' });
      return { ws, ok: m.code === 'not-joined' };
    }));
    conns.push(...batch);
  }
  await sleep(1500);
  const held = conns.filter((c) => c.ok && !c.ws.closed).length;
  const after = nodes.map((n) => rssKiB(n.pid));
  const opsPerConn = redisPort ? (await ops(redisPort) - ops0) / HOLD : null;
  const perConn = ((after.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0)) * 1024) / HOLD;
  for (const c of conns) c.ws.close();
  return { held, perConn, opsPerConn };
}

async function latency(na, nb, redisPort) {
  const room = uniqueRoom('bench');
  const ops0 = await ops(redisPort);
  const a = await joinOn(na, room, 'a');
  const b = await joinOn(nb, room, 'b');
  const perJoin = redisPort ? (await ops(redisPort) - ops0) / 2 : null;
  const lat = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    a.ws.send({ type: 'message', to: b.id, data: i });
    await b.ws.next((m) => m.type === 'message', { timeout: 5000, what: 'ping' });
    b.ws.send({ type: 'message', to: a.id, data: i });
    await a.ws.next((m) => m.type === 'message', { timeout: 5000, what: 'pong' });
    lat.push((performance.now() - t0) / 2);
    if (i % 40 === 39) await sleep(1000); // stay under the per-connection message rate
  }
  lat.sort((x, y) => x - y);
  await sleep(2500); // the rate-limit bucket refills
  const ops1 = await ops(redisPort);
  const t0 = performance.now();
  for (let i = 0; i < BURST; i++) a.ws.send({ type: 'message', to: b.id, data: i });
  for (let got = 0; got < BURST; got++) await b.ws.next((m) => m.type === 'message', { timeout: 5000, what: 'burst' });
  const secs = (performance.now() - t0) / 1000;
  const perMsg = redisPort ? (await ops(redisPort) - ops1) / BURST : null;
  for (const c of [a, b]) c.ws.close();
  return { p50: lat[Math.floor(ROUNDS / 2)], p99: lat[Math.floor(ROUNDS * 0.99)], rate: BURST / secs, perJoin, perMsg };
}

const median = (xs) => {
  const v = xs.filter((x) => x !== null).sort((a, b) => a - b);
  return v.length ? v[Math.floor(v.length / 2)] : null;
};

const rows = { one: [], same: [], cross: [] };
for (let run = 0; run < RUNS; run++) {
  const plain = await startPlain();
  try {
    rows.one.push({ ...(await hold([plain], null)), ...(await latency(plain, plain, null)) });
  } finally {
    await plain.kill();
  }
  const redis = await startRedis();
  const n1 = await startNode(redis.url, { extraArgs: LIMITS });
  const n2 = await startNode(redis.url, { extraArgs: LIMITS });
  try {
    const h = await hold([n1, n2], redis.port);
    rows.same.push({ ...h, ...(await latency(n1, n1, redis.port)) });
    rows.cross.push({ ...h, ...(await latency(n1, n2, redis.port)) });
  } finally {
    for (const p of [n1, n2, redis]) await p.kill();
  }
  console.error(`run ${run + 1}/${RUNS} done`);
}

const f = (x, d = 2) => (x === null ? '-' : x.toFixed(d));
console.log(`| setup (median of ${RUNS}) | connections held (of ${HOLD}) | memory per connection | Redis cmds per connection | `
  + 'one-way p50 | one-way p99 | msgs/s (one sender, burst of 50) | Redis cmds per join | per message |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const [label, key] of [['one node, no Redis', 'one'], ['two nodes + Redis, same node', 'same'], ['two nodes + Redis, cross node', 'cross']]) {
  const r = rows[key];
  const m = (k) => median(r.map((x) => x[k]));
  console.log(`| ${label} | ${m('held')} | ${f(m('perConn') / 1024, 1)} KiB | ${f(m('opsPerConn'))} | ${f(m('p50'), 3)} ms | `
    + `${f(m('p99'), 3)} ms | ${f(m('rate'), 0)} | ${f(m('perJoin'), 1)} | ${f(m('perMsg'))} |`);
}
