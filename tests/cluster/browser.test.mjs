// Browsers on different nodes behind haproxy: a call with video both ways, three peers over two nodes, and the
// node holding one participant killed mid-call (media goes on, the participant resumes on the other node with the
// same id, nobody sees a leave).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, join, launchBrowser, mediaFlowing, sleep, uniqueRoom, waitConnected, waitFor, waitMediaFlowing } from '../browser/harness.mjs';
import { startHaproxy, startNode, startRedis } from './cluster.mjs';

/** Pins the page's later requests (the WebSocket) to haproxy server `srv`, and records every peer-left it gets. */
function pinned(srv) {
  return `document.cookie = 'SRV=${srv}; path=/';
    window.__left = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...a) {
        super(...a);
        this.addEventListener('message', (e) => {
          try { const m = JSON.parse(e.data); if (m.type === 'peer-left') window.__left.push(m.id); } catch {}
        });
      }
    };`;
}

test('browsers on two nodes behind haproxy: call, three peers, a node killed mid-call', { timeout: 240_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const redis = await startRedis();
  cleanup.add(() => redis.kill());
  const n1 = await startNode(redis.url, { extraArgs: ['--resume-grace', '3'] });
  cleanup.add(() => n1.kill());
  const n2 = await startNode(redis.url, { extraArgs: ['--resume-grace', '3'] });
  cleanup.add(() => n2.kill());
  const lb = await startHaproxy([n1, n2]);
  cleanup.add(() => lb.stop());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('cluster');
  const ada = await join(browser, lb, room, 'Ada', { init: pinned('n1') });
  const bob = await join(browser, lb, room, 'Bob', { init: pinned('n2') });
  const everyone = [ada, bob];
  try {
    const [h1, h2] = await Promise.all([n1, n2].map((n) => fetch(`${n.url}/healthz`).then((r) => r.json())));
    assert.equal(h1.parts.signaling.connections, 1, 'Ada is on node 1');
    assert.equal(h2.parts.signaling.connections, 1, 'Bob is on node 2');
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);

    const cid = await join(browser, lb, room, 'Cid', { init: pinned('n1') });
    everyone.push(cid);
    for (const [p, others] of [[ada, ['Bob', 'Cid']], [bob, ['Ada', 'Cid']], [cid, ['Ada', 'Bob']]]) {
      for (const o of others) await waitConnected(p, o);
    }
    await waitMediaFlowing(bob, cid.id);
    await waitMediaFlowing(cid, bob.id);

    // Kill the node that holds Ada and Cid.
    await n1.kill('SIGKILL');
    const flow = await mediaFlowing(bob, ada.id);
    assert.ok(flow.ok, `Bob still decodes Ada right after the kill: ${flow.problems.join(', ')}`);
    for (const p of [ada, cid]) {
      await waitFor(async () => (await p.page.evaluate(() => window.peercall.status())) === 'connected',
        { timeout: 30_000, what: `${p.name} to reconnect through haproxy` });
      assert.equal(await p.page.evaluate(() => window.peercall.id), p.id, `${p.name} resumed with the same id`);
    }
    assert.equal((await fetch(`${n2.url}/healthz`).then((r) => r.json())).parts.signaling.connections, 3, 'all on node 2 now');
    await sleep(12_000); // past node TTL + sweep + grace: a peer not resumed would be announced by now
    for (const [viewer, other] of [[bob, ada], [ada, bob], [cid, bob]]) {
      const f = await mediaFlowing(viewer, other.id);
      assert.ok(f.ok, `${viewer.name} decodes ${other.name} after the kill: ${f.problems.join(', ')}`);
    }
    for (const p of everyone) {
      assert.deepEqual(await p.page.evaluate(() => window.__left), [], `${p.name} never got a peer-left`);
    }
  } catch (e) {
    for (const p of everyone) console.error(await describe(p));
    throw e;
  }
});
