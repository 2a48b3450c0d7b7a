// Join-token guessing spread over two nodes (issue 13): a bad, expired or wrong-room join token is counted in
// Redis with the address's other failed joins, so alternating the nodes buys no more guesses than one node gives,
// and the back-off it starts holds on both nodes, for a good token too. Clients on distinct loopback addresses
// (127.0.0.x) stand for distinct users.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { RawWebSocket, uniqueRoom } from '../browser/harness.mjs';
import { metric, redisCommand, twoNodes } from './cluster.mjs';

const SECRET = 'cluster-token-secret-for-the-test';

/** A join token as `peercall_signal::mint_join_token` makes it: base64url(JSON claims) "." base64url(HMAC). */
function mint(secret, claims) {
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const sig = createHmac('sha256', secret).update(payload).digest('base64url');
  return `${payload}.${sig}`;
}

/** Joins `room` with `token` from `localAddress`: the welcome or the error. */
async function joinWith(localAddress, node, room, token, open) {
  const ws = await RawWebSocket.connect(node.wsUrl, { localAddress });
  open.push(ws);
  ws.send({ v: 1, type: 'join', room, name: 'g', token });
  return ws.next((m) => m.type === 'welcome' || m.type === 'error', { timeout: 8000, what: 'the answer to a join' });
}

test('bad join tokens alternated over two nodes meet the back-off at one node\'s threshold', { timeout: 60_000 }, async (t) => {
  const { redis, n1, n2, open } = await twoNodes(t, ['--join-token-secret', SECRET, '--failed-joins-before-backoff', '3']);

  const room = uniqueRoom('tok');
  const exp = Math.floor(Date.now() / 1000) + 600;
  const good = mint(SECRET, { room, exp });
  const bad = [
    mint('another-secret-entirely', { room, exp }), // forged
    mint(SECRET, { room, exp: Math.floor(Date.now() / 1000) - 1 }), // expired
    mint(SECRET, { room: uniqueRoom('elsewhere'), exp }), // for another room
    'not.a-token',
  ];
  const failuresBefore = (await metric(n1, 'peercall_signal_join_failures_total')) + (await metric(n2, 'peercall_signal_join_failures_total'));

  // 3 failures allowed, the 4th starts the back-off: alternated (2 per node, which each node alone would allow),
  // every one is still answered bad-token.
  for (const [i, node] of [n1, n2, n1, n2].entries()) {
    const first = await joinWith('127.0.0.61', node, room, bad[i], open);
    assert.equal(first.code, 'bad-token', `bad token ${i + 1} is answered bad-token`);
  }
  assert.equal(Number(await redisCommand(redis.port, ['GET', 'pc:rate:fi:{127.0.0.61}'])), 4, 'Redis counts the failures of the address');
  const failuresAfter = (await metric(n1, 'peercall_signal_join_failures_total')) + (await metric(n2, 'peercall_signal_join_failures_total'));
  assert.equal(failuresAfter - failuresBefore, 4, 'each failed join is counted in /metrics');

  // The address now backs off on both nodes: a good token is refused with the back-off, and so is a bad one
  // (the same answer: it tells a guesser nothing about its guess).
  const goodRefused = await joinWith('127.0.0.61', n1, room, good, open);
  assert.equal(goodRefused.code, 'too-many-joins', 'a good token from the address is refused during the back-off');
  assert.match(goodRefused.message, /too many failed joins from your address: try again in 1 s/);
  const badRefused = await joinWith('127.0.0.61', n2, room, bad[0], open);
  assert.equal(badRefused.code, 'too-many-joins', 'a bad token during the back-off gets the same answer');
  assert.match(badRefused.message, /too many failed joins from your address/);
  assert.ok((await metric(n1, 'peercall_signal_joins_refused_total{reason="backoff"}')) >= 1, 'the back-off refusal is counted in /metrics');

  // Another address is not affected.
  assert.equal((await joinWith('127.0.0.62', n2, room, good, open)).type, 'welcome', 'another address joins');
});
