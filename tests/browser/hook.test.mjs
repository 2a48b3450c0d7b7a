// The test hook (window.peercall) is opt-in: an ordinary room page does not install it; once the page's storage
// holds the flag (web/js/room.js; harness.mjs enableTestHook sets it for the other tests) it does, across loads.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, launchBrowser, startServer, uniqueRoom } from './harness.mjs';

test('window.peercall exists only where the test-hook flag is set', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const prejoin = () => page.waitForSelector('#prejoin:not([hidden])', { timeout: 10_000 });

  await page.goto(`${server.url}/r/${uniqueRoom('hook')}?name=Ada`);
  await prejoin();
  assert.equal(await page.evaluate(() => 'peercall' in window), false, 'an ordinary page has no test hook');

  await page.evaluate(() => localStorage.setItem('peercall.testHook', 'true'));
  await page.reload();
  await prejoin();
  assert.equal(await page.evaluate(() => window.peercall?.phase()), 'prejoin', 'the flag installs the hook');

  await page.evaluate(() => localStorage.setItem('peercall.testHook', '"yes"'));
  await page.reload();
  await prejoin();
  assert.equal(await page.evaluate(() => 'peercall' in window), false, 'only the exact flag counts');
  assert.deepEqual(errors, [], 'no page errors');
});
