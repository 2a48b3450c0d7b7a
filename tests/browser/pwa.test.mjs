// Installable and usable offline: the web app manifest is valid and makes the client installable (Chromium's own
// installability check over CDP), the service worker registers and takes control, and with the server gone the
// shell still opens — landing page and room page — with the "you are offline" screen instead of the browser's
// error page; when the server answers again the room page opens by itself.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_FLAGS, Cleanup, startServer, uniqueRoom, waitFor } from './harness.mjs';

test('installable app: valid manifest, worker in control, shell opens offline and recovers', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let server = await startServer();
  cleanup.add(() => server.kill());
  // A persistent profile: Chromium never offers to install from an incognito profile (what newContext gives).
  const profile = mkdtempSync(path.join(os.tmpdir(), 'peercall-pwa-'));
  cleanup.add(() => rmSync(profile, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, timeout: 30_000, permissions: ['camera', 'microphone'],
  });
  cleanup.add(() => context.close());
  const page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(`${server.url}/`);
  const cdp = await context.newCDPSession(page);
  const manifest = await cdp.send('Page.getAppManifest');
  assert.deepEqual(manifest.errors, [], `manifest parses without errors: ${JSON.stringify(manifest.errors)}`);
  assert.match(manifest.url, /\/manifest\.webmanifest$/);

  // The worker installs (its precache of the whole shell succeeded) and controls the page after a reload.
  const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
  assert.equal(scope, `${server.url}/`);
  await page.reload();
  assert.ok(await page.evaluate(() => navigator.serviceWorker.controller !== null), 'the worker controls the page');
  await waitFor(async () => (await cdp.send('Page.getInstallabilityErrors')).installabilityErrors.length === 0,
    { timeout: 10_000, what: 'Chromium to find the app installable' }).catch(async (e) => {
    e.message += `: ${JSON.stringify((await cdp.send('Page.getInstallabilityErrors')).installabilityErrors)}`;
    throw e;
  });
  assert.equal(await page.isVisible('#offline'), false, 'online, no offline screen');

  // A room page once visited online.
  const room = uniqueRoom('pwa');
  await page.goto(`${server.url}/r/${room}?name=Ada`);
  await page.waitForSelector('#join-btn', { state: 'visible', timeout: 10_000 });
  assert.equal(await page.isVisible('#offline'), false);

  // The network cut: the server is gone. Both pages open from the cache and say what is going on.
  const { httpPort, turnPort } = server;
  await server.kill();
  for (const url of [`http://127.0.0.1:${httpPort}/`, `http://127.0.0.1:${httpPort}/r/${room}?name=Ada`]) {
    const response = await page.goto(url);
    assert.ok(response?.fromServiceWorker(), `${url} is answered by the worker`);
    await page.waitForSelector('#offline', { state: 'visible', timeout: 10_000 });
    assert.match(await page.textContent('#offline h1'), /You are offline/);
    await waitFor(() => page.evaluate(() => document.activeElement?.id === 'offline-retry'), { timeout: 5000, what: 'Try again to have the focus' }).catch(async (e) => { e.message += ` (focus on ${await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 120))})`; throw e; });
  }
  // Browser offline too (navigator.onLine false): the same screen, from the cache.
  await context.setOffline(true);
  await page.reload();
  await page.waitForSelector('#offline', { state: 'visible', timeout: 10_000 });
  await context.setOffline(false);

  // The server back on the same address: the room page notices on its own (retry every 5 s) and opens.
  server = await startServer({ httpPort, turnPort });
  await page.waitForSelector('#offline', { state: 'hidden', timeout: 15_000 });
  await page.waitForSelector('#join-btn', { state: 'visible', timeout: 10_000 });
  assert.deepEqual(errors, [], 'no page errors');
});
