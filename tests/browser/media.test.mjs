// Missing or blocked devices: the call still works, and people are told what is going on in plain words.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Cleanup, describe, enableTestHook, join, launchBrowser, mediaFlowing, startServer, statsOf, tilesOf, uniqueRoom, waitConnected,
  waitFor, waitMediaFlowing,
} from './harness.mjs';

/** Page script: this machine has no camera (getUserMedia for video fails as it does without one). */
function noCamera() {
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  const enumerate = devices.enumerateDevices.bind(devices);
  devices.getUserMedia = async (constraints) => {
    if (constraints?.video) throw new DOMException('Requested device not found', 'NotFoundError');
    return getUserMedia(constraints);
  };
  devices.enumerateDevices = async () => (await enumerate()).filter((d) => d.kind !== 'videoinput');
}

/** Page script: the user refused camera and microphone access. */
function blocked() {
  navigator.mediaDevices.getUserMedia = async () => { throw new DOMException('Permission denied', 'NotAllowedError'); };
}

test('without a camera the call is audio-only, both ways', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('nocam');
  const ada = await join(browser, server, room, 'Ada');
  const cyd = await join(browser, server, room, 'Cyd', { init: noCamera });
  try {
    await waitConnected(ada, 'Cyd');
    await waitConnected(cyd, 'Ada');
    // Cyd is told, and her camera button shows the camera off.
    await waitFor(() => cyd.page.evaluate(() => [...document.querySelectorAll('.toast')].some((x) => /audio only|audio-only/.test(x.textContent))),
      { timeout: 5000, what: 'Cyd to be told the call is audio-only' });
    assert.equal(await cyd.page.getAttribute('#ctl-cam', 'aria-pressed'), 'false');
    // Ada sees Cyd's avatar (no video), and hears her.
    await waitFor(async () => (await tilesOf(ada)).find((x) => x.name === 'Cyd')?.cam === 'off', { what: 'Ada to see Cyd without video' });
    const fromCyd = await mediaFlowing(ada, cyd.id, { minFrames: 0 });
    assert.ok(fromCyd.samples > 20_000 && fromCyd.energy > 0, `Ada hears Cyd: ${fromCyd.problems.join(', ')}`);
    assert.equal((await statsOf(ada, cyd.id))?.videoIn?.framesDecoded ?? 0, 0, 'no video from Cyd');
    // Cyd still sees and hears Ada.
    await waitMediaFlowing(cyd, ada.id);
    // Trying to turn on a camera that does not exist says so.
    await cyd.page.click('#ctl-cam');
    await waitFor(() => cyd.page.evaluate(() => [...document.querySelectorAll('.toast')].some((x) => x.textContent.startsWith('No camera found'))),
      { timeout: 5000, what: 'a "No camera found" message' });
    assert.deepEqual([...ada.errors, ...cyd.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(cyd)}`;
    throw e;
  }
});

test('blocked camera and microphone: a clear message, and you can still join to watch and listen', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('blocked');
  const ada = await join(browser, server, room, 'Ada');
  const context = await browser.newContext();
  await enableTestHook(context); // Bob's page is read through window.peercall
  await context.addInitScript(blocked);
  const page = await context.newPage();
  const bob = { name: 'Bob', context, page, errors: [], console: [] };
  page.on('pageerror', (e) => bob.errors.push(e.message));
  try {
    await page.goto(`${server.url}/r/${room}?name=Bob`);
    await waitFor(() => page.isVisible('#media-error'), { timeout: 10_000, what: 'the blocked-devices message' });
    assert.match(await page.textContent('#media-error'), /^Access to your camera and microphone is blocked\. Allow it from the icon in the address bar/);
    assert.equal(await page.getAttribute('#pre-mic', 'aria-pressed'), 'false');
    assert.equal(await page.getAttribute('#pre-cam', 'aria-pressed'), 'false');
    await page.click('#join-btn');
    await waitFor(() => page.evaluate(() => window.peercall.status() === 'connected'), { what: 'Bob to join' });
    bob.id = await page.evaluate(() => window.peercall.id);
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id, { what: 'Bob to see and hear Ada' });
    await waitFor(async () => {
      const tile = (await tilesOf(ada)).find((x) => x.name === 'Bob');
      return tile?.cam === 'off' && tile?.mic === 'off';
    }, { what: 'Ada to see Bob with camera and microphone off' });
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});
