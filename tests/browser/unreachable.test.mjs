// A call that cannot connect says why on the tile, instead of spinning: here the relay refuses the second
// browsers (relay only, and the TURN URL handed out points at a port where nothing answers).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, freePort, join, launchBrowser, startServer, uniqueRoom, waitFor } from './harness.mjs';

test('when no path can work, the tile names the likely reason', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  // A relay that never answers: deterministic, unlike a quota (which browser gets the one allocation, and
  // whether it is freed and taken again across ICE restarts, is up to timing).
  const deadTurn = await freePort();
  const server = await startServer({
    mode: 'signal',
    extraArgs: ['--turn-secret', 'unreachable-test', '--turn-server', `turn:127.0.0.1:${deadTurn}?transport=udp`],
  });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('unreachable');
  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  try {
    // Both tiles explain, in the words for a relay that refused or did not answer.
    const [adaSees, bobSees] = await waitFor(async () => {
      const texts = await Promise.all([ada, bob].map((p) => p.page.evaluate(() =>
        [...document.querySelectorAll('#stage .tile:not(.tile-local) .tile-state')].map((e) => e.textContent).join(''))));
      return texts.every((x) => x.startsWith("Can't connect")) ? texts : null;
    }, { timeout: 90_000, interval: 500, what: "both tiles saying why the call can't connect" });
    t.diagnostic(`Ada sees: ${adaSees}; Bob sees: ${bobSees}`);
    assert.match(adaSees, /relay server refused or did not answer this browser/);
    assert.match(bobSees, /relay server refused or did not answer this browser/);
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});
