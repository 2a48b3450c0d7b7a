// Idle call cost: CPU of the whole browser (every Chromium process, by type) while a call sits idle, against a
// bare page that only shows its camera (bench/idle-cpu.sh runs it; see bench/README.md).
//
//   - limit: a page served by this script that opens camera and microphone with the client's constraints and
//     shows the camera in a <video>: what any video page pays for its camera;
//   - alone: one person alone in a peercall room (camera and microphone on, the level meter and the clock running);
//   - pair: two people in a call (both pages), media flowing both ways: the figure is per page (total / 2).
// Each is measured WINDOWS times over WINDOW_S seconds after SETTLE_S seconds, in one browser, one after the other.
// CPU comes from /proc (utime + stime of every process whose command line names the browser), in % of one core.
//
// Environment: WINDOWS [3] WINDOW_S [6] SETTLE_S [3] PEERCALL_BIN OUT (a directory for results.json).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { join, launchBrowser, sleep, startServer, uniqueRoom, waitConnected } from '../tests/browser/harness.mjs';

const WINDOWS = Number(process.env.WINDOWS ?? 3);
const WINDOW_S = Number(process.env.WINDOW_S ?? 6);
const SETTLE_S = Number(process.env.SETTLE_S ?? 3);
const OUT = process.env.OUT ?? null;
const TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

const LIMIT_PAGE = `<!doctype html><meta charset="utf-8"><title>camera</title>
<video id="v" autoplay muted playsinline style="width: 100%"></video>
<script type="module">
document.getElementById('v').srcObject = await navigator.mediaDevices.getUserMedia({
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
});
</script>`;

/** CPU ticks used so far by every browser process, by process type (browser, renderer, gpu-process, utility). */
function browserTicks() {
  const out = {};
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!cmd[0] || !/chrom/.test(path.basename(cmd[0]))) continue;
      const type = cmd.find((a) => a.startsWith('--type='))?.slice(7) ?? 'browser';
      // Fields after the command name: utime and stime are the 14th and 15th of the line.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      out[type] = (out[type] ?? 0) + Number(fields[11]) + Number(fields[12]);
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

/** % of one core used by the browser over WINDOW_S seconds, in total and by process type. */
async function cpuWindow() {
  const a = browserTicks();
  await sleep(WINDOW_S * 1000);
  const b = browserTicks();
  const byType = {};
  let total = 0;
  for (const [type, ticks] of Object.entries(b)) {
    const pct = ((ticks - (a[type] ?? 0)) / TICKS_PER_S / WINDOW_S) * 100;
    byType[type] = Math.round(pct * 10) / 10;
    total += pct;
  }
  return { total: Math.round(total * 10) / 10, byType };
}

async function measure(kind, pages) {
  await sleep(SETTLE_S * 1000);
  const runs = [];
  for (let i = 0; i < WINDOWS; i++) {
    const w = await cpuWindow();
    w.perPage = Math.round((w.total / pages) * 10) / 10;
    runs.push(w);
    console.error(`${kind} ${i + 1}/${WINDOWS}: ${w.total} % of a core (${JSON.stringify(w.byType)}), ${w.perPage} % per page`);
  }
  return runs;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

const limitServer = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(LIMIT_PAGE);
});
await new Promise((resolve) => limitServer.listen(0, '127.0.0.1', resolve));
const server = await startServer();
const browser = await launchBrowser();
const results = {};
try {
  results.browser = await measure('browser, no page', 1);
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${limitServer.address().port}/`);
  results.limit = await measure('camera page (limit)', 1);
  await context.close();

  const room = uniqueRoom('idle');
  const ada = await join(browser, server, room, 'Ada');
  results.alone = await measure('peercall, alone in a room', 1);
  const bob = await join(browser, server, room, 'Bob');
  await waitConnected(ada, 'Bob');
  results.pair = await measure('peercall, two in a call', 2);
  await bob.context.close();
  await ada.context.close();
} finally {
  await browser.close();
  await server.kill();
  limitServer.close();
}

const med = (kind) => median(results[kind].map((r) => r.perPage));
const summary = {
  windows: WINDOWS,
  windowSecs: WINDOW_S,
  browser: med('browser'),
  limit: med('limit'),
  alone: med('alone'),
  pairPerPage: med('pair'),
};
console.log('| % of one core, whole browser (median of windows) | no page | camera page (limit) | peercall alone in a room | peercall, two in a call, per page |');
console.log('| --- | ---: | ---: | ---: | ---: |');
console.log(`| ${WINDOWS} windows of ${WINDOW_S} s | ${summary.browser} | ${summary.limit} | ${summary.alone} | ${summary.pairPerPage} |`);
if (OUT) {
  mkdirSync(OUT, { recursive: true });
  writeFileSync(path.join(OUT, 'results.json'), JSON.stringify({ summary, results }, null, 1));
}
