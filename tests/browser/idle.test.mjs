// A call that sits idle costs the machine little: the page does not restyle itself many times a second (the
// speaking ring used to go on and off on one's own tile at every sample of Chromium's test tone, each time
// redrawing the tile), while the ring still lights when a microphone hears something.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Cleanup, join, launchBrowser, sleep, startServer, uniqueRoom } from './harness.mjs';

const WINDOW_MS = 6_000;
// The clock's tick each second, the odd status or stats render: a few style recalculations a second. The meter
// redrawing the tile at each sample took 28 to 45 a second.
const MAX_RESTYLES_PER_SEC = 8;

// One server and one browser for the file's tests (each uses its own room and contexts).
const cleanup = new Cleanup();
let server;
let browser;
before(async () => {
  server = await startServer();
  cleanup.add(() => server.kill());
  browser = await launchBrowser();
  cleanup.add(() => browser.close());
});
after(() => cleanup.run());

test('alone in a call: the speaking ring follows the microphone, and the page does not restyle many times a second', { timeout: 90_000 }, async (t) => {
  const ada = await join(browser, server, uniqueRoom('idle'), 'Ada');
  t.after(() => ada.context.close());
  await sleep(1_000); // the camera and the meter are running

  // Whether the ring is lit on Ada's own tile, looked at every 100 ms (the test tone beeps twice a second, and the
  // ring stays on between the beeps as it would through a sentence).
  await ada.page.evaluate(() => {
    window.ringLit = 0;
    const tile = document.querySelector('.tile-local');
    setInterval(() => { if (tile.classList.contains('speaking')) window.ringLit++; }, 100);
  });
  const cdp = await ada.context.newCDPSession(ada.page);
  await cdp.send('Performance.enable');
  const restyles = async () => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'RecalcStyleCount').value;
  const before = await restyles();
  await sleep(WINDOW_MS);
  const perSec = (await restyles() - before) / (WINDOW_MS / 1000);
  const lit = await ada.page.evaluate(() => window.ringLit);

  assert.ok(lit >= 1, `the speaking ring never lit on Ada's tile in ${WINDOW_MS} ms of the test tone`);
  assert.ok(perSec <= MAX_RESTYLES_PER_SEC, `the idle call page restyled ${perSec.toFixed(1)} times a second (at most ${MAX_RESTYLES_PER_SEC})`);
  assert.deepEqual(ada.errors, []);
});
