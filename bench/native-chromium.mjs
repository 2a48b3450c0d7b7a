// One call, two kinds of peer: a Chromium tab (fake camera and microphone) and the native peer (`peercall join`,
// recording). Samples the CPU time of each over SAMPLE seconds once media flows: the native peer's process, and
// Chromium's whole process tree (browser, renderer, GPU and utility processes) for its one tab.
//   PEERCALL_BIN=target/release/peercall node bench/native-chromium.mjs
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BIN, join, launchBrowser, sleep, startServer, uniqueRoom, waitMediaFlowing, waitFor } from '../tests/browser/harness.mjs';

const SAMPLE = Number(process.env.SAMPLE ?? 10);
const TICK = 100; // CLK_TCK on Linux

const ticks = (pid) => {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
};
const tree = (pid) => {
  const out = [pid];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let kids = '';
    try { kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8'); } catch { /* gone */ }
    for (const k of kids.trim().split(/\s+/).filter(Boolean)) out.push(...tree(Number(k)));
  }
  return out;
};
const sum = (pids) => pids.reduce((a, p) => a + ticks(p), 0);

const server = await startServer();
const browser = await launchBrowser();
const room = uniqueRoom('bench');
const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-bench-'));
const ada = await join(browser, server, room, 'Ada');
const native = spawn(BIN, ['join', `${server.url}/r/${room}`, '--name', 'Native', '--duration', String(SAMPLE + 30), '--record', dir, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
native.stdout.on('data', (c) => { out += c; });
try {
  const id = await waitFor(() => out.split('\n').map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .find((l) => l?.event === 'joined')?.id, { what: 'native to join' });
  await waitMediaFlowing(ada, id, { timeout: 30_000 });
  await sleep(2000);
  // Chromium is a child of this node process (playwright spawns it); so are the server and the native peer.
  const others = new Set([...tree(server.pid), ...tree(native.pid)]);
  const chromePids = tree(process.pid).filter((p) => p !== process.pid && !others.has(p));
  const [c0, n0] = [sum(chromePids), ticks(native.pid)];
  await sleep(SAMPLE * 1000);
  const [c1, n1] = [sum(chromePids), ticks(native.pid)];
  const pct = (t) => ((100 * t) / TICK / SAMPLE).toFixed(1);
  const rss = readFileSync(`/proc/${native.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)?.[1];
  console.log(`over ${SAMPLE} s of one call: Chromium tab ${pct(c1 - c0)} % CPU (${chromePids.length} processes), native peer ${pct(n1 - n0)} % CPU, ${Math.round(rss / 1024)} MB RSS`);
} finally {
  native.kill('SIGKILL');
  await browser.close();
  await server.kill();
  rmSync(dir, { recursive: true, force: true });
}
