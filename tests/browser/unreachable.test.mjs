// A call that cannot connect says why on the tile, instead of spinning: here the relay refuses the second
// browser (an allocation quota of one per address, both browsers on 127.0.0.1, relay only).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, join, launchBrowser, startServer, uniqueRoom, waitFor } from './harness.mjs';

test('when no path can work, the tile names the likely reason', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer({ extraArgs: ['--client-quota', '1'] });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('unreachable');
  const ada = await join(browser, server, room, 'Ada', { relay: true });
  const bob = await join(browser, server, room, 'Bob', { relay: true });
  try {
    // Both tiles explain: the browser the relay refused says so; the other (relayed; which one gets the single
    // allocation depends on timing and on ICE restarts) sees nothing arrive from it.
    const [adaSees, bobSees] = await waitFor(async () => {
      const texts = await Promise.all([ada, bob].map((p) => p.page.evaluate(() =>
        [...document.querySelectorAll('#stage .tile:not(.tile-local) .tile-state')].map((e) => e.textContent).join(''))));
      return texts.every((x) => x.startsWith("Can't connect")) ? texts : null;
    }, { timeout: 90_000, interval: 500, what: "both tiles saying why the call can't connect" });
    t.diagnostic(`Ada sees: ${adaSees}; Bob sees: ${bobSees}`);
    const refused = /relay server refused or did not answer this browser/;
    const [self, other] = refused.test(bobSees) ? [bobSees, adaSees] : [adaSees, bobSees];
    assert.match(self, refused);
    assert.match(other, /no network addresses arrived from the other side|other side could not reach the relay/);
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});
