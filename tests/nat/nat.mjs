// Shared parts of the NAT suite: the simulated internet of netns.sh (built once per test file, removed at exit,
// also after a failure or a signal), peercall servers inside its namespaces, Chromium inside client namespaces
// (playwright-core launching a wrapper that runs `ip netns exec NS chromium`), NAT kinds verified with STUN,
// and readers for the selected candidate pair.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { BIN, CHROMIUM, CHROMIUM_FLAGS, waitFor, withTimeout } from '../browser/harness.mjs';
import { describeRoute } from '../../web/js/stats.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const NETNS = path.join(here, 'netns.sh');
export const PREFIX = process.env.PCNAT_PREFIX ?? 'pcnat-';
export const ns = (name) => `${PREFIX}${name}`;

/** The public server: web client and signaling on .10:443, STUN/TURN on .11:3478 (and .10:3478, a second STUN
 *  destination for the mapping checks), TURNS on .11:443, relays from .11. */
export const SERVER = { web: '203.0.113.10', turn: '203.0.113.11', url: 'https://203.0.113.10' };
/** Client hosts behind each NAT router (netns.sh): kind → namespace and public address. */
export const ROUTERS = ['cone1', 'cone2', 'sym1', 'sym2', 'udpblock', 'tcp443'];
export const publicIp = (router, k = 2) => `198.51.100.${(ROUTERS.indexOf(router) + 1) * 16 + k}`;
export const host = (router) => ns(`h-${router}`);

// ------------------------------------------------------------------------------------------------------------
// The topology: up once, down at exit whatever happens.

let tmp = null;
let isUp = false;

function teardownSync() {
  if (!isUp) return;
  isUp = false;
  try {
    execFileSync(NETNS, ['down'], { stdio: 'ignore', timeout: 20_000 });
  } catch {
    /* best effort */
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', teardownSync);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    teardownSync();
    process.exit(128 + os.constants.signals[signal]);
  });
}

/** Why the suite cannot run here, or null (it needs root, ip, nft, conntrack and Chromium). */
export function unavailable() {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  for (const tool of ['ip', 'nft', 'conntrack']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  if (!existsSync(CHROMIUM)) return `Chromium not found at ${CHROMIUM}`;
  if (!existsSync(BIN)) return `peercall binary not found at ${BIN}`;
  return null;
}

/** Removes a stale set, builds the simulated internet, makes a certificate for the server's two addresses. */
export async function up() {
  isUp = true; // from here on, exit removes whatever exists of the set
  await run(NETNS, ['up'], { timeout: 60_000 });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'pcnat-'));
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', path.join(tmp, 'key.pem'), '-out', path.join(tmp, 'cert.pem'), '-days', '2', '-subj', '/CN=peercall-nat',
    '-addext', `subjectAltName=IP:${SERVER.web},IP:${SERVER.turn},IP:203.0.113.20`,
    // A leaf, not a CA: rustls (the native peer's --ca-file) refuses a CA certificate used as a server's own.
    '-addext', 'basicConstraints=critical,CA:FALSE'], { timeout: 20_000 });
  return { cert: path.join(tmp, 'cert.pem'), key: path.join(tmp, 'key.pem'), tmp };
}

export async function down() {
  teardownSync();
}

export async function renumber(router, ip) {
  await run(NETNS, ['renumber', router, ip], { timeout: 20_000 });
}

/** Runs a command inside namespace `name` (full name); resolves {stdout, stderr, code}. */
export async function inNs(name, argv, { timeout = 30_000 } = {}) {
  try {
    const { stdout, stderr } = await run('ip', ['netns', 'exec', name, ...argv], { timeout, maxBuffer: 4 << 20 });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    return { stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}${e.killed ? ' (killed: timeout)' : ''}`, code: e.code ?? -1 };
  }
}

// ------------------------------------------------------------------------------------------------------------
// peercall inside a namespace.

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

/** Starts `peercall serve ARGS` in namespace `name` and waits for its banner. */
export async function startPeercall(name, args, { ready = /stop with Ctrl-C/ } = {}) {
  // `ip netns exec` enters the namespace and execs peercall: the child's pid is peercall's own.
  const child = spawn('ip', ['netns', 'exec', name, BIN, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' },
  });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 400_000) output = output.slice(-300_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const server = {
    exited: false,
    logs: () => output,
    async stop() {
      if (server.exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await withTimeout(gone, 10_000, 'peercall to exit');
    },
  };
  child.once('exit', () => {
    server.exited = true;
    children.delete(child);
  });
  try {
    await waitFor(() => {
      if (server.exited) throw new Error('peercall exited at start');
      return ready.test(output);
    }, { timeout: 20_000, interval: 100, what: `peercall in ${name} to start` });
  } catch (e) {
    await server.stop().catch(() => {});
    throw new Error(`${e.message}\n--- peercall output ---\n${output}`);
  }
  return server;
}

/** The public server of the simulated internet.
 *  --allow-peer 198.51.100.0/24: the NAT routers' public addresses are in a documentation range, which the
 *  TURN server refuses as peers by default; a relayed browser must reach the other side's server-reflexive
 *  address there. Nothing else is opened: the 10.x host candidates stay refused, as on the real internet. */
export function startPublicServer(tls, { user = null } = {}) {
  return startPeercall(ns('srv'), [
    ...(user ? ['--user', user.join(':')] : []), // a static user for coturn's clients (browsers get REST credentials)
    '--http', `${SERVER.web}:443`,
    '--tls-cert', tls.cert, '--tls-key', tls.key, // also TURNS's certificate
    '--listen', `${SERVER.turn}:3478`, '--listen', `${SERVER.web}:3478`,
    '--tls-listen', `${SERVER.turn}:443`,
    '--relay-ip', SERVER.turn,
    '--public-host', SERVER.turn, // stun:/turn:/turns: URLs name the TURN address, whose 443 is TURNS
    '--allow-peer', '198.51.100.0/24',
    '--relay-threads', '1',
  ]);
}

// ------------------------------------------------------------------------------------------------------------
// NAT kinds, checked with STUN from one socket to two server addresses.

/** Mapped addresses one UDP socket in `hostNs` gets from each of `servers` ("IP:PORT"). */
export async function stunProbe(hostNs, servers) {
  const r = await inNs(hostNs, [process.execPath, path.join(here, 'stun-probe.mjs'), ...servers], { timeout: 15_000 });
  if (r.code !== 0) throw new Error(`stun probe in ${hostNs} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim());
}

/** 'eim' (one mapping whatever the destination), 'symmetric', 'blocked' (no answer) or 'mixed'. */
export async function mappingKind(router) {
  const probe = await stunProbe(host(router), [`${SERVER.turn}:3478`, `${SERVER.web}:3478`]);
  const [a, b] = probe.mapped;
  if (!a && !b) return { kind: 'blocked', probe };
  if (!a || !b) return { kind: 'mixed', probe };
  if (a.split(':')[0] !== publicIp(router) && !a.startsWith('198.51.100.')) return { kind: 'not-natted', probe };
  return { kind: a === b ? 'eim' : 'symmetric', probe };
}

/** Whether a TCP connection from `hostNs` to ip:port opens within 3 s. */
export async function tcpOpens(hostNs, ip, port) {
  const r = await inNs(hostNs, ['timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${port}`], { timeout: 10_000 });
  return r.code === 0;
}

// ------------------------------------------------------------------------------------------------------------
// Chromium inside a namespace.

/** Launches Chromium in namespace `name` (full name) through a wrapper script. */
export async function launchIn(name, dir) {
  const wrapper = path.join(dir, `chromium-${name}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${name} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: [...CHROMIUM_FLAGS, '--ignore-certificate-errors'],
    timeout: 30_000,
  });
}

/** The selected pair as "local/remote" types, with the local relay protocol and addresses. */
export function pairOf(stats) {
  const p = stats?.pair;
  if (!p?.local || !p?.remote) return null;
  return {
    local: p.local.type,
    remote: p.remote.type,
    protocol: p.local.protocol,
    relayProtocol: p.local.relayProtocol,
    localAddress: `${p.local.address}:${p.local.port}`,
    remoteAddress: `${p.remote.address}:${p.remote.port}`,
    url: p.local.url,
    route: describeRoute(p), // what the connection panel says
    text: `${p.local.type}/${p.remote.type}${p.local.relayProtocol ? ` (relay over ${p.local.relayProtocol})` : ''}`,
  };
}
