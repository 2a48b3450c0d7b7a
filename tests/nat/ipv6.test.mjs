// The native peer over IPv6 (issue 12): two hosts on one link with IPv4 and IPv6 addresses, the second host's
// firewall dropping every IPv4 UDP packet and TURN over TCP, so media can only flow over IPv6 host candidates.
// Own namespaces (prefix pcv6-), removed at exit also after a failure. Needs root.
//
// Run: sudo PEERCALL_BIN=target/debug/peercall node --test tests/nat/ipv6.test.mjs

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { test } from 'node:test';
import { BIN } from '../browser/harness.mjs';
import { inNs, unavailable } from './nat.mjs';

const skip = unavailable() ?? false;
const A = 'pcv6-a';
const B = 'pcv6-b';
const sh = (...argv) => execFileSync(argv[0], argv.slice(1), { stdio: ['pipe', 'ignore', 'pipe'], timeout: 20_000 });

function down() {
  for (const ns of [A, B]) {
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', ns]).toString().split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch { /* not there */ }
    try {
      sh('ip', 'netns', 'del', ns);
    } catch { /* not there */ }
  }
}

function up() {
  down();
  sh('ip', 'netns', 'add', A);
  sh('ip', 'netns', 'add', B);
  sh('ip', 'link', 'add', 'pcv6a', 'netns', A, 'type', 'veth', 'peer', 'name', 'pcv6b', 'netns', B);
  sh('ip', '-n', A, 'addr', 'add', '10.99.0.1/24', 'dev', 'pcv6a');
  sh('ip', '-n', B, 'addr', 'add', '10.99.0.2/24', 'dev', 'pcv6b');
  sh('ip', '-n', A, 'addr', 'add', '2001:db8:99::1/64', 'dev', 'pcv6a', 'nodad');
  sh('ip', '-n', B, 'addr', 'add', '2001:db8:99::2/64', 'dev', 'pcv6b', 'nodad');
  for (const [ns, dev] of [[A, 'pcv6a'], [B, 'pcv6b']]) {
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    sh('ip', '-n', ns, 'link', 'set', dev, 'up');
  }
  // B: no IPv4 UDP out at all, no TURN over TCP: only IPv6 UDP can carry media.
  execFileSync('ip', ['netns', 'exec', B, 'nft', '-f', '-'], {
    input: 'table ip pcv6 {\n chain out {\n  type filter hook output priority 0;\n  udp dport 1-65535 drop\n  tcp dport 3478 drop\n }\n}\n',
    timeout: 10_000,
  });
}

test('the native peer connects over IPv6 host candidates when IPv4 UDP is blocked', { skip, timeout: 90_000 }, async (t) => {
  process.once('exit', down);
  up();
  t.after(down);
  const server = spawn('ip', ['netns', 'exec', A, BIN, 'serve', '--http', '10.99.0.1:8080', '--listen', '10.99.0.1:3478', '--public-host', '10.99.0.1'], { stdio: 'ignore' });
  t.after(() => server.kill('SIGKILL'));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const link = 'http://10.99.0.1:8080/r/ipv6';
  const first = inNs(A, [BIN, 'join', link, '--name', 'a', '--duration', '12', '--json'], { timeout: 40_000 });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const second = await inNs(B, [BIN, 'join', link, '--name', 'b', '--duration', '9', '--expect-peers', '1', '--json'], { timeout: 40_000 });
  const stats = second.stdout.split('\n').filter((l) => l.includes('"event":"stats"')).map((l) => JSON.parse(l)).filter((s) => s.connected).at(-1);
  const about = `${second.stdout.slice(-1200)}\n${second.stderr.slice(-1200)}`;
  assert.equal(second.code, 0, `b exits 0 (media both ways): ${about}`);
  assert.equal(stats?.route, 'host', `directly, host to host: ${about}`);
  assert.ok(stats.video_frames_rx > 10, `b receives a's video: ${about}`);
  assert.equal((await first).code, 0, 'a exits 0 too');
});
