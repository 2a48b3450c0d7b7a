// Call set-up benchmark: join → first remote video frame, peercall's room page against the in-page limit, in
// one browser, one run (bench/call-setup.sh runs it; see bench/README.md).
//
// Each trial, one after the other, in fresh browser contexts (cold page, camera opened afresh):
//   - limit: a page served by this script that does what a call needs and nothing else: getUserMedia (the
//     client's constraints), two RTCPeerConnections in the page (the client's bundle/rtcp-mux policy and two
//     negotiated data channels), offer/answer and candidates handed over directly, the first frame of the
//     remote video shown (requestVideoFrameCallback). Navigation included: times count from its navigation start.
//   - room: Host is in the room (joined and idle, its camera running); Joiner opens /r/ROOM?name=Joiner&join=1.
//     Times count from the Joiner's navigation start (performance.timeOrigin; the two pages share the browser's
//     clock): the Joiner's first frame of Host, and Host's first frame of the Joiner.
// The phases come from the marks the page sets (web/js/util.js mark, read through window.peercall.marks()).
//
// Environment: TRIALS [10] WARMUP [1] (trials of each kind run first and not counted) PEERCALL_BIN OUT (a
// directory for results.json) TIMEOUT_MS [20000] (per trial).
import { createServer } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { enableTestHook, join, launchBrowser, sleep, startServer, uniqueRoom, waitFor } from '../tests/browser/harness.mjs';

const TRIALS = Number(process.env.TRIALS ?? 10);
const WARMUP = Number(process.env.WARMUP ?? 1);
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS ?? 20_000);
const OUT = process.env.OUT ?? null;

// The in-page limit. Candidates wait for the remote description (addIceCandidate needs it), as they would
// across signaling; nothing else waits.
const LIMIT_PAGE = `<!doctype html><meta charset="utf-8"><title>limit</title>
<video id="v" autoplay muted playsinline width="320" height="180"></video>
<script type="module">
const mark = (n) => performance.mark('limit:' + n);
mark('page-ready');
const config = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
const a = new RTCPeerConnection(config);
const b = new RTCPeerConnection(config);
for (const pc of [a, b]) for (const id of [0, 1]) pc.createDataChannel('d' + id, { negotiated: true, id });
const pending = new Map([[a, []], [b, []]]);
const deliver = (to, c) => (to.remoteDescription ? to.addIceCandidate(c).catch(() => {}) : pending.get(to).push(c));
const flush = (pc) => { for (const c of pending.get(pc).splice(0)) pc.addIceCandidate(c).catch(() => {}); };
a.onicecandidate = ({ candidate }) => candidate && deliver(b, candidate);
b.onicecandidate = ({ candidate }) => candidate && deliver(a, candidate);
b.onconnectionstatechange = () => b.connectionState === 'connected' && mark('connected');
const v = document.getElementById('v');
b.ontrack = ({ track, streams }) => {
  if (track.kind !== 'video') return;
  v.srcObject = streams[0];
  v.requestVideoFrameCallback(() => mark('first-frame'));
};
const stream = await navigator.mediaDevices.getUserMedia({
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
});
mark('camera');
for (const t of stream.getTracks()) a.addTrack(t, stream);
await a.setLocalDescription();
mark('offer');
await b.setRemoteDescription(a.localDescription);
flush(b);
await b.setLocalDescription();
mark('answer');
await a.setRemoteDescription(b.localDescription);
flush(a);
</script>`;

function serveLimitPage() {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(LIMIT_PAGE);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function newContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  await enableTestHook(context);
  return context;
}

async function limitTrial(browser, url) {
  const context = await newContext(browser);
  try {
    const page = await context.newPage();
    await page.goto(url, { timeout: TIMEOUT_MS });
    const marks = await waitFor(() => page.evaluate(() => {
      const all = performance.getEntriesByType('mark').filter((m) => m.name.startsWith('limit:'));
      if (!all.some((m) => m.name === 'limit:first-frame')) return null;
      return Object.fromEntries(all.map((m) => [m.name.slice(6), m.startTime]));
    }), { timeout: TIMEOUT_MS, interval: 50, what: 'the in-page limit page to show its first frame' });
    return marks;
  } finally {
    await context.close();
  }
}

/** First time of each mark name concerning `peer` (or no peer), relative to `origin` (ms since the epoch). */
function phases(marks, origin, peer) {
  const out = {};
  for (const m of marks) {
    if (m.peer !== null && m.peer !== peer) continue;
    if (!(m.name in out)) out[m.name] = m.at - origin;
  }
  return out;
}

async function roomTrial(browser, server) {
  const room = uniqueRoom('setup');
  const host = await join(browser, server, room, 'Host', { timeout: TIMEOUT_MS });
  const context = await newContext(browser);
  try {
    const page = await context.newPage();
    await page.goto(`${server.url}/r/${room}?name=Joiner&join=1`, { timeout: TIMEOUT_MS });
    const joiner = await waitFor(() => page.evaluate((hostId) => {
      const marks = window.peercall?.marks?.() ?? [];
      if (!marks.some((m) => m.name === 'first-frame' && m.peer === hostId)) return null;
      return { id: window.peercall.id, origin: window.peercall.timeOrigin, marks };
    }, host.id), { timeout: TIMEOUT_MS, interval: 50, what: 'Joiner to show the first frame of Host' });
    const hostMarks = await waitFor(() => host.page.evaluate((id) => {
      const marks = window.peercall.marks();
      return marks.some((m) => m.name === 'first-frame' && m.peer === id) ? marks : null;
    }, joiner.id), { timeout: TIMEOUT_MS, interval: 50, what: 'Host to show the first frame of Joiner' });
    return {
      joiner: phases(joiner.marks, joiner.origin, host.id),
      // Host's own page-ready, camera and welcome came before the Joiner existed: only what concerns the Joiner.
      host: phases(hostMarks.filter((m) => m.peer === joiner.id), joiner.origin, joiner.id),
    };
  } finally {
    await context.close();
    await host.context.close();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
};
const fmt = (x) => (Number.isFinite(x) ? Math.round(x).toString() : '–');

const ORDER = {
  limit: ['page-ready', 'camera', 'offer', 'answer', 'connected', 'first-frame'],
  // Whoever offers marks `offer` when it sends it and `answer` when the answer arrives; the answerer marks `offer`
  // when it arrives and `answer-sent`. Host offers (docs/protocol.md, "Who offers"); both columns have both, so
  // the table reads either way.
  joiner: ['page-ready', 'camera', 'ws-open', 'welcome', 'offer', 'answer-sent', 'answer', 'connected', 'first-frame'],
  host: ['peer-joined', 'offer', 'answer-sent', 'answer', 'connected', 'first-frame'],
};

function table(results) {
  const lines = ['| phase (ms from navigation start, median of trials) | limit (in page) | joiner | host (in the room) |',
    '| --- | ---: | ---: | ---: |'];
  const names = ['page-ready', 'camera', 'ws-open', 'welcome', 'peer-joined', 'offer', 'answer-sent', 'answer', 'connected', 'first-frame'];
  for (const name of names) {
    const col = (kind) => (ORDER[kind].includes(name) ? fmt(median(results[kind].map((r) => r[name]).filter(Number.isFinite))) : '');
    lines.push(`| ${name} | ${col('limit')} | ${col('joiner')} | ${col('host')} |`);
  }
  return lines.join('\n');
}

const server = await startServer();
const limitServer = await serveLimitPage();
const limitUrl = `http://127.0.0.1:${limitServer.address().port}/limit`;
const browser = await launchBrowser();
const results = { limit: [], joiner: [], host: [] };
try {
  for (let i = 0; i < WARMUP + TRIALS; i++) {
    // Alternated, so that a busy moment of the machine falls on both kinds.
    const limit = await limitTrial(browser, limitUrl);
    const room = await roomTrial(browser, server);
    await sleep(200);
    if (i < WARMUP) continue;
    results.limit.push(limit);
    results.joiner.push(room.joiner);
    results.host.push(room.host);
    console.error(`trial ${i - WARMUP + 1}/${TRIALS}: first frame limit ${fmt(limit['first-frame'])} ms, joiner ${fmt(room.joiner['first-frame'])} ms, host ${fmt(room.host['first-frame'])} ms`);
  }
} finally {
  await browser.close();
  await server.kill();
  limitServer.close();
}

const ff = (kind) => results[kind].map((r) => r['first-frame']);
const summary = {
  trials: TRIALS,
  limit: { median: median(ff('limit')), p10: quantile(ff('limit'), 0.1), p90: quantile(ff('limit'), 0.9) },
  joiner: { median: median(ff('joiner')), p10: quantile(ff('joiner'), 0.1), p90: quantile(ff('joiner'), 0.9) },
  host: { median: median(ff('host')), p10: quantile(ff('host'), 0.1), p90: quantile(ff('host'), 0.9) },
};
summary.joinerOverLimit = summary.joiner.median / summary.limit.median;
summary.hostOverLimit = summary.host.median / summary.limit.median;
console.log(table(results));
console.log('');
console.log(`join → first remote frame over ${TRIALS} trials, median (p10–p90): limit ${fmt(summary.limit.median)} ms `
  + `(${fmt(summary.limit.p10)}–${fmt(summary.limit.p90)}), joiner ${fmt(summary.joiner.median)} ms `
  + `(${fmt(summary.joiner.p10)}–${fmt(summary.joiner.p90)}), host ${fmt(summary.host.median)} ms `
  + `(${fmt(summary.host.p10)}–${fmt(summary.host.p90)}); joiner / limit ${summary.joinerOverLimit.toFixed(2)}×, `
  + `host / limit ${summary.hostOverLimit.toFixed(2)}×`);
if (OUT) {
  mkdirSync(OUT, { recursive: true });
  writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({ summary, results }, null, 1));
}
