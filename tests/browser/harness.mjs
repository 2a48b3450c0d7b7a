// Shared helpers for the browser tests: start the real peercall binary on free loopback ports, launch Debian
// Chromium (fake camera and microphone) through playwright-core, join rooms, read getStats through the page's
// test hook (window.peercall), wait with bounded timeouts, and clean everything up even when a test fails.
//
// The test hook is opt-in (web/js/room.js): a page installs window.peercall only when its localStorage holds
// peercall.testHook = true. `join` sets that for its contexts; a test that opens a room page in a context of its
// own and reads window.peercall calls `enableTestHook(context)` first.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdirSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export { sleep };

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const BIN = path.resolve(REPO, process.env.PEERCALL_BIN ?? 'target/debug/peercall');
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(REPO, 'tests', 'artifacts');

/** The flags TEAM.md lists (plus autoplay, so remote audio plays without a click; playwright adds a fresh
 *  --user-data-dir and --headless). No mDNS, no background traffic: only loopback and this host. */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

// ------------------------------------------------------------------------------------------------------------
// Cleanup: every process and browser started here is stopped at the end of the test, and at exit as a last resort.

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

/** Collects cleanups; `await using`-style: call `run()` in `t.after` or a finally block. */
export class Cleanup {
  constructor() {
    this.tasks = [];
  }
  add(task) {
    this.tasks.push(task);
    return task;
  }
  async run() {
    for (const task of this.tasks.reverse()) {
      try {
        await withTimeout(Promise.resolve().then(task), 10_000, 'cleanup');
      } catch (e) {
        console.error('cleanup failed:', e.message);
      }
    }
    this.tasks = [];
  }
}

// ------------------------------------------------------------------------------------------------------------
// Waiting, always bounded.

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `check` until it returns a truthy value (returned) or `timeout` ms pass (throws, naming `what` and the
 * last value seen, so a failure says what the page looked like).
 */
export async function waitFor(check, { timeout = 15_000, interval = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    await sleep(interval);
  }
  const seen = lastError ? `last error: ${lastError.message}` : `last value: ${JSON.stringify(last)}`;
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (${seen})`);
}

// ------------------------------------------------------------------------------------------------------------
// Ports and the peercall server.

async function tcpFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

async function udpFree(port) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', () => resolve(false));
    socket.bind({ port, address: '127.0.0.1', exclusive: true }, () => socket.close(() => resolve(true)));
  });
}

/** A loopback port free for both TCP and UDP (TURN listens on both). */
export async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = 20_000 + Math.floor(Math.random() * 25_000); // below the relay range 49152-65535
    if ((await tcpFree(port)) && (await udpFree(port))) return port;
  }
  throw new Error('no free loopback port found');
}

/**
 * Starts `peercall serve` on free loopback ports (or the given ones) and waits until /healthz answers.
 * @returns {Promise<{url: string, wsUrl: string, httpPort: number, turnPort: number, logs: () => string,
 *                    kill: () => Promise<void>, stop: () => Promise<void>, exited: boolean}>}
 */
export async function startServer({ httpPort, turnPort, extraArgs = [], tls = false, mode = 'serve' } = {}) {
  if (!existsSync(BIN)) throw new Error(`peercall binary not found at ${BIN}: run \`cargo build -p peercall\` or set PEERCALL_BIN`);
  httpPort ??= await freePort();
  turnPort ??= await freePort();
  // mode 'signal': web client and signaling only (no TURN of its own: give --turn-secret and --turn-server).
  const args = mode === 'signal'
    ? ['signal', '--http', `127.0.0.1:${httpPort}`, ...extraArgs]
    : ['serve', '--http', `127.0.0.1:${httpPort}`, '--listen', `127.0.0.1:${turnPort}`, '--relay-ip', '127.0.0.1', ...extraArgs];
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } });
  children.add(child);
  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-150_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const server = {
    // tls: the server runs HTTPS (--tls-self-signed or --tls-cert in extraArgs); browsers need
    // --ignore-certificate-errors for a self-signed certificate.
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${httpPort}`,
    wsUrl: `${tls ? 'wss' : 'ws'}://127.0.0.1:${httpPort}/ws`,
    httpPort,
    turnPort,
    pid: child.pid,
    exited: false,
    logs: () => output,
    async kill(signal = 'SIGKILL') {
      if (server.exited) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await withTimeout(gone, 10_000, `peercall to exit on ${signal}`);
    },
    stop: () => server.kill('SIGTERM'),
  };
  child.once('exit', () => {
    server.exited = true;
    children.delete(child);
  });
  try {
    await waitFor(async () => {
      if (server.exited) throw new Error(`peercall exited at start:\n${output}`);
      if (tls) return healthyOverTls(httpPort);
      const response = await fetch(`${server.url}/healthz`).catch(() => null);
      return response?.ok;
    }, { timeout: 15_000, interval: 100, what: `peercall to serve ${server.url}/healthz` });
  } catch (e) {
    await server.kill().catch(() => {});
    throw new Error(`${e.message}\n--- peercall output ---\n${output}`);
  }
  return server;
}

/** Whether https://127.0.0.1:port/healthz answers 200, whatever the certificate (a self-signed one, say). */
function healthyOverTls(port) {
  return new Promise((resolve) => {
    const request = https.get({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('error', () => resolve(false));
    request.on('timeout', () => request.destroy());
  });
}

// ------------------------------------------------------------------------------------------------------------
// Browser and participants.

/** Launches Chromium. `cameras`: how many fake cameras it offers (default 1; it always offers 3 microphones);
 *  `extraArgs`: more command-line flags (--ignore-certificate-errors for a self-signed server, say). */
export async function launchBrowser({ cameras = 1, extraArgs = [] } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  const args = CHROMIUM_FLAGS.map((flag) =>
    flag === '--use-fake-device-for-media-stream' && cameras > 1 ? `${flag}=device-count=${cameras}` : flag).concat(extraArgs);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * Makes every page of `context` install the test hook (window.peercall): sets localStorage peercall.testHook
 * before any page script runs. Pages without storage (about:blank) are skipped.
 */
export function enableTestHook(context) {
  return context.addInitScript(() => {
    try {
      localStorage.setItem('peercall.testHook', 'true');
    } catch {
      /* an opaque origin has no storage, and no room page either */
    }
  });
}

/**
 * Opens `/r/<room>?name=<name>&join=1` in a fresh browser context (its own storage) and waits until the page
 * is in the call with signaling connected. Page errors are recorded in `participant.errors`.
 */
export async function join(browser, server, room, name, { relay = false, viewport = DESKTOP, mobile = false, timeout = 20_000, init = null } = {}) {
  const context = await browser.newContext({
    viewport,
    deviceScaleFactor: mobile ? 2 : 1,
    isMobile: mobile,
    hasTouch: mobile,
    permissions: ['camera', 'microphone'],
  });
  await enableTestHook(context);
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const participant = { name, context, page, errors: [], console: [] };
  page.on('pageerror', (e) => participant.errors.push(e.message));
  page.on('console', (m) => {
    participant.console.push(`${m.type()}: ${m.text()}`);
    if (participant.console.length > 500) participant.console.shift();
  });
  const query = new URLSearchParams({ name, join: '1' });
  if (relay) query.set('relay', '1');
  await page.goto(`${server.url}/r/${room}?${query}`, { timeout });
  await waitFor(() => page.evaluate(() => window.peercall?.phase() === 'call' && window.peercall.status() === 'connected'),
    { timeout, what: `${name} to join ${room}` });
  participant.id = await page.evaluate(() => window.peercall.id);
  return participant;
}

export function idOf(participant) {
  return participant.page.evaluate(() => window.peercall.id);
}

export function peersOf(participant) {
  return participant.page.evaluate(() => window.peercall.peers());
}

export function statusOf(participant) {
  return participant.page.evaluate(() => window.peercall.status());
}

/** getStats summary (web/js/stats.js) of `participant`'s connection to the peer with id `peerId`. */
export function statsOf(participant, peerId) {
  return participant.page.evaluate((id) => window.peercall.stats(id), peerId);
}

/** The peer entry, as `participant` sees it, of the participant called `name`. */
export async function peerNamed(participant, name) {
  return (await peersOf(participant)).find((p) => p.name === name) ?? null;
}

/**
 * Waits until `participant` has exactly one entry for the participant called `name`, connected with its data
 * channel open and known by its current signaling id (not an orphan of a lost session); returns that entry.
 */
export function waitConnected(participant, name, { timeout = 20_000 } = {}) {
  return waitFor(async () => {
    const entries = (await peersOf(participant)).filter((p) => p.name === name);
    const peer = entries[0];
    return entries.length === 1 && !peer.orphan && peer.connectionState === 'connected' && peer.channel === 'open' ? peer : null;
  }, { timeout, what: `${participant.name} to be connected to ${name}` });
}

/**
 * Asserts, over `ms` milliseconds, that `participant` decodes video and audio from `peerId`: framesDecoded rises,
 * and real audio samples (received minus concealed) and audio energy rise. Returns the two samples.
 */
export async function mediaFlowing(participant, peerId, { ms = 2000, minFrames = 10 } = {}) {
  const a = await statsOf(participant, peerId);
  await sleep(ms);
  const b = await statsOf(participant, peerId);
  const problems = [];
  const frames = (b?.videoIn?.framesDecoded ?? 0) - (a?.videoIn?.framesDecoded ?? 0);
  if (frames < minFrames) problems.push(`framesDecoded rose by ${frames} (< ${minFrames})`);
  const real = (s) => (s?.audioIn?.totalSamplesReceived ?? 0) - (s?.audioIn?.concealedSamples ?? 0);
  const samples = real(b) - real(a);
  const minSamples = Math.round((48_000 * ms) / 1000 / 4); // at least a quarter of the time in real audio
  if (samples < minSamples) problems.push(`real audio samples rose by ${samples} (< ${minSamples})`);
  const energy = (b?.audioIn?.totalAudioEnergy ?? 0) - (a?.audioIn?.totalAudioEnergy ?? 0);
  if (!(energy > 0)) problems.push(`audio energy did not rise (${energy})`);
  return { ok: problems.length === 0, problems, frames, samples, energy, before: a, after: b };
}

/** Like mediaFlowing, retried until it holds (a fresh connection needs a moment to ramp up). */
export async function waitMediaFlowing(participant, peerId, { timeout = 20_000, what } = {}) {
  let last = null;
  try {
    return await waitFor(async () => {
      last = await mediaFlowing(participant, peerId, { ms: 1500 });
      return last.ok ? last : null;
    }, { timeout, interval: 0, what: what ?? `${participant.name} to decode media from ${peerId}` });
  } catch (e) {
    throw new Error(`${e.message}; last problems: ${last?.problems.join(', ')}`);
  }
}

/** Frames decoded from `peerId` now. */
export async function framesFrom(participant, peerId) {
  return (await statsOf(participant, peerId))?.videoIn?.framesDecoded ?? 0;
}

/** The tiles shown on `participant`'s stage, with what a user sees on each. */
export function tilesOf(participant) {
  return participant.page.evaluate(() => [...document.querySelectorAll('#stage .tile')].map((tile) => {
    const video = tile.querySelector('video');
    return {
      peer: tile.dataset.peer,
      local: tile.classList.contains('tile-local'),
      name: tile.querySelector('.tile-name')?.textContent ?? '',
      mic: tile.dataset.mic,
      cam: tile.dataset.cam,
      screen: tile.classList.contains('tile-screen'),
      videoWidth: video?.videoWidth ?? 0,
      visible: tile.getBoundingClientRect().width > 0,
    };
  }));
}

export function ensureArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

export function uniqueRoom(prefix = 'room') {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** A description of a participant's state for failure messages. */
export async function describe(participant) {
  try {
    const info = await participant.page.evaluate(async () => {
      const peers = window.peercall?.peers() ?? [];
      for (const peer of peers) {
        const s = await window.peercall.stats(peer.id).catch(() => null);
        peer.stats = s && {
          pair: s.pair && `${s.pair.local?.type}/${s.pair.remote?.type} ${s.pair.local?.protocol}`,
          bytes: [s.bytesSent, s.bytesReceived],
          framesDecoded: s.videoIn?.framesDecoded,
          framesEncoded: s.videoOut?.framesEncoded,
          audioPackets: s.audioIn?.packetsReceived,
        };
      }
      return { id: window.peercall?.id, status: window.peercall?.status(), peers };
    });
    return `${participant.name}: ${JSON.stringify(info)}\n  errors: ${participant.errors.join(' | ')}\n  console tail: ${participant.console.slice(-8).join(' | ')}`;
  } catch (e) {
    return `${participant.name}: (page unavailable: ${e.message})`;
  }
}

// ------------------------------------------------------------------------------------------------------------
// A tiny WebSocket client (RFC 6455), for raw protocol tests: Node 20 has no global WebSocket, and the only
// npm dependencies are playwright-core and axe-core. Text and binary frames, masking, ping/pong, close.

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export class RawWebSocket {
  /** @param {string} url ws://127.0.0.1:PORT/PATH */
  /** `localAddress` picks the client's source address (e.g. 127.0.0.2, another "user" on loopback). */
  static connect(url, { timeout = 5000, localAddress, origin } = {}) {
    const { hostname, port, pathname } = new URL(url);
    const key = randomBytes(16).toString('base64');
    const socket = net.connect({ host: hostname, port: Number(port), localAddress });
    const ws = new RawWebSocket(socket);
    return withTimeout(new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        const response = head.subarray(0, end).toString('latin1');
        const expected = createHash('sha1').update(key + WS_GUID).digest('base64');
        if (!/^HTTP\/1\.1 101/.test(response) || !response.toLowerCase().includes(`sec-websocket-accept: ${expected.toLowerCase()}`)) {
          socket.destroy();
          reject(new Error(`WebSocket handshake refused: ${response.split('\r\n')[0]}`));
          return;
        }
        socket.on('data', (data) => ws.#feed(data));
        ws.#feed(head.subarray(end + 4));
        resolve(ws);
      };
      socket.on('data', onData);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
          + `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: ${origin ?? `http://${hostname}:${port}`}\r\n\r\n`);
      });
    }), timeout, `WebSocket handshake with ${url}`);
  }

  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.fragments = [];
    this.messages = []; // parsed JSON (or {raw}) text messages not yet taken
    this.waiters = [];
    this.closed = false;
    this.closeCode = null;
    socket.on('close', () => this.#onClosed());
    socket.on('error', () => this.#onClosed());
  }

  #onClosed() {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  #feed(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const b0 = this.buffer[0];
      const b1 = this.buffer[1];
      let length = b1 & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      const maskOffset = offset;
      if (masked) offset += 4;
      if (this.buffer.length < offset + length) return;
      let payload = Buffer.from(this.buffer.subarray(offset, offset + length));
      if (masked) {
        const mask = this.buffer.subarray(maskOffset, maskOffset + 4);
        for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      }
      this.buffer = this.buffer.subarray(offset + length);
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if (opcode === 0x8) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.#frame(0x8, payload.subarray(0, 2));
        this.socket.end();
        this.#onClosed();
        return;
      }
      if (opcode === 0x9) {
        this.#frame(0xa, payload);
        continue;
      }
      if (opcode === 0xa) continue;
      this.fragments.push(payload);
      if (!fin) continue;
      payload = Buffer.concat(this.fragments);
      this.fragments = [];
      const text = payload.toString('utf8');
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        message = { raw: text };
      }
      this.messages.push(message);
      for (const waiter of this.waiters.splice(0)) waiter();
    }
  }

  #frame(opcode, payload) {
    if (this.socket.destroyed) return;
    const mask = randomBytes(4);
    const length = payload.length;
    const header = length < 126 ? Buffer.alloc(2) : length < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    if (length < 126) header[1] = 0x80 | length;
    else if (length < 65_536) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(length, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(length), 2);
    }
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
    this.socket.write(Buffer.concat([header, mask, body]));
  }

  /** Sends a text frame: objects are JSON-encoded, strings sent as they are (to send invalid JSON). */
  send(message) {
    this.#frame(0x1, Buffer.from(typeof message === 'string' ? message : JSON.stringify(message), 'utf8'));
  }

  sendBinary(bytes) {
    this.#frame(0x2, Buffer.from(bytes));
  }

  /**
   * The next received message matching `filter` (earlier non-matching ones are skipped and dropped);
   * null when the connection closes first. Throws after `timeout` ms.
   */
  async next(filter = () => true, { timeout = 5000, what = 'a message' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      while (this.messages.length) {
        const message = this.messages.shift();
        if (filter(message)) return message;
      }
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
      await withTimeout(new Promise((resolve) => this.waiters.push(resolve)), left, what).catch(() => {});
    }
  }

  /** The next `error` message (skipping others). */
  nextError(what) {
    return this.next((m) => m.type === 'error', { what: `an error (${what})` });
  }

  close() {
    if (!this.closed) this.#frame(0x8, Buffer.from([0x03, 0xe8]));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 200).unref();
  }
}
