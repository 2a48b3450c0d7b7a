// Invite by QR code: the invite dialog shows the room link as a QR code the server renders (GET /qr, SVG); a
// screenshot of it decodes (zbarimg, Debian's zbar-tools) to the exact room link. /qr renders this server's room
// links only.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { Cleanup, describe, ensureArtifacts, join, launchBrowser, startServer, uniqueRoom, waitFor } from './harness.mjs';

const run = promisify(execFile);

test('the invite dialog\'s QR code decodes to the exact room link', { timeout: 60_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('invite');
  const ada = await join(browser, server, room, 'Ada');
  try {
    await ada.page.click('#top-copy');
    await waitFor(() => ada.page.evaluate(() => {
      const img = document.querySelector('#invite-qr');
      return document.querySelector('#invite').open && img.complete && img.naturalWidth > 0;
    }), { timeout: 5000, what: 'the QR code to load in the invite dialog' });
    const link = `${server.url}/r/${room}`;
    assert.equal(await ada.page.textContent('#invite-dialog-url'), link);
    const file = path.join(ensureArtifacts(), `invite-qr-${room}.png`);
    await ada.page.locator('#invite-qr').screenshot({ path: file });
    const { stdout } = await run('zbarimg', ['--quiet', '--raw', file]);
    assert.equal(stdout.trim(), link, 'zbarimg reads the room link from the screenshot');
    assert.deepEqual(ada.errors, [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}`;
    throw e;
  }

  // The route itself: SVG for this server's room links, a plain refusal for anything else.
  const qr = (text, headers = {}) => fetch(`${server.url}/qr?${new URLSearchParams({ text })}`, { headers });
  const good = await qr(`${server.url}/r/${room}`);
  assert.equal(good.status, 200);
  assert.equal(good.headers.get('content-type'), 'image/svg+xml');
  assert.match(await good.text(), /<svg[^>]*>.*<path /s);
  for (const text of [
    `http://evil.example/r/${room}`, // another site
    `${server.url}/r/${room}?next=http://evil.example`, // anything after the room
    `${server.url}/r/not%20a%20room`,
    `${server.url}/metrics`,
    `${server.url}/r/${'a'.repeat(400)}`, // too long
    'hello world',
  ]) {
    const response = await qr(text);
    assert.equal(response.status, 400, `refused: ${text}`);
    assert.match(await response.text(), /room links of this server/);
  }
  assert.equal((await fetch(`${server.url}/qr`)).status, 400, 'no text');
});
