// Helpers for the multi-node tests: a real redis-server, peercall signaling nodes sharing it, and Debian's haproxy
// in front (round-robin, health checks on /healthz, a cookie to pin a browser to a node). Every process is started
// on free loopback ports and stopped at the end (and at exit as a last resort).

import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, Cleanup, freePort, waitFor, withTimeout } from '../browser/harness.mjs';

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

function tool(name) {
  for (const dir of ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin']) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`${name} not found (apt-get install ${name === 'redis-server' ? 'redis-server' : name})`);
}

/** Spawns a long-running process, keeping the tail of its output; `kill(signal)` waits for the exit. */
function run(cmd, args, what) {
  return runIn(undefined, cmd, args, what);
}

/** `run` in working directory `cwd`. */
function runIn(cwd, cmd, args, what) {
  const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-150_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const proc = {
    child,
    pid: child.pid,
    exited: false,
    logs: () => output,
    async kill(signal = 'SIGKILL') {
      if (proc.exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await withTimeout(gone, 10_000, `${what} to exit on ${signal}`);
    },
  };
  child.once('exit', () => {
    proc.exited = true;
    children.delete(child);
  });
  return proc;
}

/** A throw-away redis-server on a free port, no persistence (a restart starts empty); `extraArgs` e.g. --replicaof. */
export async function startRedis({ port, extraArgs = [] } = {}) {
  port ??= await freePort();
  // A replica's full sync writes an RDB file even with --save '': into a temporary directory, not the checkout.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-redis-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const proc = run(tool('redis-server'), ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--protected-mode', 'no', '--loglevel', 'warning', '--dir', dir, ...extraArgs], 'redis-server');
  const redis = { ...proc, port, url: `redis://127.0.0.1:${port}` };
  await waitFor(async () => {
    if (proc.exited) throw new Error(`redis-server exited:\n${proc.logs()}`);
    return redisCommand(port, ['PING']).then((r) => r === 'PONG').catch(() => false);
  }, { timeout: 10_000, interval: 100, what: 'redis-server to answer PING' });
  return redis;
}

/** One Redis command over a fresh connection (RESP), for checks from the test: returns the decoded reply. */
export async function redisCommand(port, args) {
  const net = await import('node:net');
  return withTimeout(new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    socket.once('error', reject);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const parsed = parseResp(buf, 0);
      if (parsed) {
        socket.end();
        resolve(parsed.value);
      }
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
  }), 3000, `redis ${args[0]}`);
}

function parseResp(buf, at) {
  const end = buf.indexOf('\r\n', at);
  if (end < 0) return null;
  const type = String.fromCharCode(buf[at]);
  const line = buf.subarray(at + 1, end).toString();
  if (type === '+' || type === '-') return { value: type === '-' ? new Error(line) : line, next: end + 2 };
  if (type === ':') return { value: Number(line), next: end + 2 };
  if (type === '$') {
    const n = Number(line);
    if (n < 0) return { value: null, next: end + 2 };
    if (buf.length < end + 2 + n + 2) return null;
    return { value: buf.subarray(end + 2, end + 2 + n).toString(), next: end + 2 + n + 2 };
  }
  if (type === '*') {
    const n = Number(line);
    const out = [];
    let next = end + 2;
    for (let i = 0; i < n; i++) {
      const item = parseResp(buf, next);
      if (!item) return null;
      out.push(item.value);
      next = item.next;
    }
    return { value: out, next };
  }
  return null;
}

/** A `peercall signal` node using `redisUrl`, on a free (or the given) loopback port. */
export async function startNode(redisUrl, { port, extraArgs = [] } = {}) {
  port ??= await freePort();
  // Generous per-address limits (every test client is on loopback) unless the test sets its own.
  const limits = [['--max-connections-per-ip', '200'], ['--max-joins-per-min', '1000'], ['--max-new-rooms-per-min', '1000']]
    .filter(([flag]) => !extraArgs.includes(flag)).flat();
  const args = ['signal', '--http', `127.0.0.1:${port}`, '--redis', redisUrl, '--trusted-proxy', '127.0.0.1/32',
    ...limits, ...extraArgs];
  const proc = run(BIN, args, 'peercall node');
  const node = { ...proc, port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws` };
  node.kill = proc.kill;
  await waitFor(async () => {
    if (proc.exited) throw new Error(`peercall exited at start:\n${proc.logs()}`);
    const health = await fetch(`${node.url}/healthz`).then((r) => r.json()).catch(() => null);
    return health?.parts?.signaling?.redis?.status === 'up';
  }, { timeout: 15_000, interval: 100, what: `node ${node.url} to be up with Redis` });
  return node;
}

/** The detailed /healthz of a node (loopback clients get it). */
export async function health(node) {
  return fetch(`${node.url}/healthz`).then((r) => r.json());
}

/** The value of one Prometheus sample of a node's /metrics (first line starting with `name`). */
export async function metric(node, name) {
  const text = await fetch(`${node.url}/metrics`).then((r) => r.text());
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : undefined;
}

/**
 * haproxy in front of `nodes` (round-robin, /healthz checks every 300 ms, failed connections redispatched; a
 * cookie SRV=n1|n2... pins a client to a node while that node is up). Returns {url, port, stop}.
 */
export async function startHaproxy(nodes) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode http',
    '  timeout connect 1s',
    '  timeout client 120s',
    '  timeout server 120s',
    '  timeout tunnel 1h',
    '  option redispatch',
    '  retries 3',
    '  option forwardfor',
    'frontend fe',
    `  bind 127.0.0.1:${port}`,
    '  default_backend nodes',
    'backend nodes',
    '  balance roundrobin',
    '  option httpchk GET /healthz',
    '  http-check expect status 200',
    '  cookie SRV insert indirect nocache',
    '  default-server inter 300ms fall 2 rise 2',
    ...nodes.map((n, i) => `  server n${i + 1} 127.0.0.1:${n.port} check cookie n${i + 1}`),
    '',
  ].join('\n'));
  const proc = run(tool('haproxy'), ['-db', '-f', cfg], 'haproxy');
  const lb = { ...proc, port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/ws` };
  lb.stop = async () => {
    await proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  await waitFor(async () => {
    if (proc.exited) throw new Error(`haproxy exited:\n${proc.logs()}`);
    return (await fetch(`${lb.url}/healthz`).catch(() => null))?.ok;
  }, { timeout: 10_000, interval: 100, what: 'haproxy to serve' });
  return lb;
}

/**
 * A `redis-server --sentinel` monitoring the master on `masterPort` as service `name` (quorum 1), its config in a
 * temp dir (Sentinel rewrites it): {port, url (a redis-sentinel:// URL for --redis), kill}.
 */
export async function startSentinel(masterPort, { name = 'm', downAfterMs = 5000, failoverTimeoutMs = 180_000 } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-sentinel-'));
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', 'protected-mode no', `dir ${dir}`,
    `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1`, `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
    `sentinel failover-timeout ${name} ${failoverTimeoutMs}`, ''].join('\n'));
  const proc = run(tool('redis-server'), [conf, '--sentinel'], 'redis sentinel');
  const sentinel = { ...proc, port, url: `redis-sentinel://127.0.0.1:${port}/?sentinelServiceName=${name}` };
  sentinel.kill = async (signal) => {
    await proc.kill(signal);
    rmSync(dir, { recursive: true, force: true });
  };
  await waitFor(async () => {
    if (proc.exited) throw new Error(`redis sentinel exited:\n${proc.logs()}`);
    const addr = await redisCommand(port, ['SENTINEL', 'get-master-addr-by-name', name]).catch(() => null);
    return Array.isArray(addr) && addr[1] === String(masterPort);
  }, { timeout: 10_000, interval: 100, what: 'the sentinel to know its master' });
  return sentinel;
}

/** Whether nothing listens on loopback TCP `port`. */
async function tcpPortFree(port) {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * A Redis Cluster of `masters` redis-servers in cluster mode (no replicas, no persistence) on loopback, their
 * nodes-P.conf in a temp dir, slots assigned by `redis-cli --cluster create`; resolves once every node says
 * cluster_state:ok. Returns {ports, url (a redis-cluster:// URL naming every node), owner(key) (the port serving
 * the key's slot), kill}. `kill` stops every server and removes the temp dir; it is safe to call twice.
 */
export async function startRedisCluster({ masters = 3 } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-rcluster-'));
  const procs = [];
  const ports = [];
  const kill = async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL').catch(() => {})));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    while (ports.length < masters) {
      // Each node also listens on its cluster bus, port + 10000.
      const port = await freePort();
      if (!ports.includes(port) && (await tcpPortFree(port + 10_000))) ports.push(port);
    }
    for (const port of ports) {
      const proc = runIn(dir, tool('redis-server'), ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'no',
        '--protected-mode', 'no', '--loglevel', 'warning', '--dir', dir], 'redis-server (cluster)');
      procs.push(proc);
    }
    for (const [i, port] of ports.entries()) {
      await waitFor(async () => {
        if (procs[i].exited) throw new Error(`redis-server ${port} exited:\n${procs[i].logs()}`);
        return redisCommand(port, ['PING']).then((r) => r === 'PONG').catch(() => false);
      }, { timeout: 10_000, interval: 100, what: `cluster node ${port} to answer PING` });
    }
    await withTimeout(new Promise((resolve, reject) => {
      execFile(tool('redis-cli'), ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
        { timeout: 20_000 }, (err, stdout, stderr) => (err ? reject(new Error(`redis-cli --cluster create: ${err.message}\n${stdout}${stderr}`)) : resolve()));
    }), 25_000, 'redis-cli --cluster create');
    await waitFor(async () => {
      const infos = await Promise.all(ports.map((p) => redisCommand(p, ['CLUSTER', 'INFO']).catch(() => '')));
      return infos.every((info) => String(info).includes('cluster_state:ok'));
    }, { timeout: 15_000, interval: 200, what: 'cluster_state:ok on every node' });
  } catch (e) {
    await kill();
    throw e;
  }
  const url = `redis-cluster://127.0.0.1:${ports[0]}?${ports.slice(1).map((p) => `node=127.0.0.1:${p}`).join('&')}`;
  const owner = async (key) => {
    const slot = await redisCommand(ports[0], ['CLUSTER', 'KEYSLOT', key]);
    const shards = await redisCommand(ports[0], ['CLUSTER', 'SLOTS']);
    const shard = shards.find(([from, to]) => slot >= from && slot <= to);
    return Number(shard[2][1]);
  };
  return { ports, url, owner, kill, procs };
}

/**
 * A fresh redis-server and two nodes on it started with `args`, stopped when test `t` ends: {redis, n1, n2, open},
 * where the WebSockets pushed on `open` are closed then too.
 */
export async function twoNodes(t, args) {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const redis = await startRedis();
  cleanup.add(() => redis.kill());
  const n1 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n1.kill());
  const n2 = await startNode(redis.url, { extraArgs: args });
  cleanup.add(() => n2.kill());
  const open = [];
  cleanup.add(() => open.forEach((ws) => ws.close()));
  return { redis, n1, n2, open };
}
