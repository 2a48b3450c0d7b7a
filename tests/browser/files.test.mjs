// File transfer over the data channel (web/js/files.js): a 20 MB file and a second one sent at once arrive intact
// (same SHA-256, saved through the page's Save link) while video keeps flowing both ways; progress shows on both
// sides; the channel's queue stays bounded (backpressure); a file over the limit is refused with a clear message.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { Cleanup, describe, framesFrom, join, launchBrowser, sleep, startServer, uniqueRoom, waitConnected, waitFor, waitMediaFlowing } from './harness.mjs';

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const HIGH_WATER = 1024 * 1024; // web/js/files.js
const CHUNK = 16 * 1024;

test('a 20 MB file arrives intact while video keeps flowing', { timeout: 180_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('files');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    await waitMediaFlowing(ada, bob.id);

    const big = randomBytes(20 * 1024 * 1024);
    const small = randomBytes(1_234_567);
    await bob.page.click('#ctl-files'); // Bob watches the Files panel
    await ada.page.setInputFiles('#file-input', [
      { name: 'big.bin', mimeType: 'application/octet-stream', buffer: big },
      { name: 'notes.txt', mimeType: 'text/plain', buffer: small },
    ]);

    // While it moves: video frames keep being decoded on both sides, progress shows on both.
    const samples = [];
    const started = Date.now();
    for (;;) {
      const [bobFiles, adaFiles] = await Promise.all([bob.page.evaluate(() => window.peercall.files()), ada.page.evaluate(() => window.peercall.files())]);
      const [framesAtBob, framesAtAda] = await Promise.all([framesFrom(bob, ada.id), framesFrom(ada, bob.id)]);
      const rows = await bob.page.evaluate(() => [...document.querySelectorAll('#file-list .file-row')].map((r) => r.querySelector('.file-state').textContent));
      samples.push({ at: Date.now() - started, bobFiles, adaFiles, framesAtBob, framesAtAda, rows });
      const done = (list) => list.length === 2 && list.every((f) => f.state === 'done');
      if (done(bobFiles) && done(adaFiles)) break;
      if (Date.now() - started > 90_000) throw new Error(`transfer did not finish: ${JSON.stringify(samples.at(-1))}`);
      await sleep(300);
    }
    const seconds = (Date.now() - started) / 1000;
    console.log(`20 MB + 1.2 MB in ${seconds.toFixed(1)} s (${((big.length + small.length) * 8 / seconds / 1e6).toFixed(1)} Mbit/s), ${samples.length} samples`);
    const during = samples.filter((s) => s.bobFiles.some((f) => f.state === 'receiving'));
    assert.ok(during.length >= 1, 'sampled at least once while the file was in flight');
    assert.ok(during.some((s) => s.bobFiles.some((f) => f.bytes > 0 && f.bytes < f.size)), 'the receiver saw partial progress');
    assert.ok(samples.some((s) => s.rows.some((r) => /Receiving… \d+ %/.test(r))), 'the receiver\'s panel showed "Receiving… N %"');
    assert.ok(samples.some((s) => s.adaFiles.some((f) => f.state === 'sending' && f.bytes > 0)), 'the sender saw acknowledged progress');
    const first = samples[0];
    const last = samples.at(-1);
    const fps = (a, b, key) => ((b[key] - a[key]) * 1000) / Math.max(1, b.at - a.at);
    assert.ok(fps(first, last, 'framesAtBob') > 5, `Bob kept decoding Ada's video (${fps(first, last, 'framesAtBob').toFixed(1)} fps)`);
    assert.ok(fps(first, last, 'framesAtAda') > 5, `Ada kept decoding Bob's video (${fps(first, last, 'framesAtAda').toFixed(1)} fps)`);
    await waitMediaFlowing(bob, ada.id, { what: 'video from Ada right after the transfer' });

    // Bob saves both files: the downloads are byte for byte what Ada sent.
    for (const [name, bytes] of [['big.bin', big], ['notes.txt', small]]) {
      const [download] = await Promise.all([
        bob.page.waitForEvent('download', { timeout: 10_000 }),
        bob.page.click(`#file-list .file-row[data-direction="in"]:has(.file-name:text-is("${name}")) .file-save`),
      ]);
      assert.equal(download.suggestedFilename(), name);
      assert.equal(sha256(await readFile(await download.path())), sha256(bytes), `${name}: same SHA-256`);
    }
    const buffered = await ada.page.evaluate(() => window.peercall.fileBuffered());
    assert.ok(buffered[0].maxBuffered <= HIGH_WATER + CHUNK + 4, `backpressure: at most ${buffered[0].maxBuffered} bytes queued`);
    assert.ok(buffered[0].maxBuffered > 0);

    // Over the limit: refused before anything is sent, and the sender is told why.
    await ada.page.evaluate(() => window.peercall.sendFiles([{ name: 'movie.mkv', size: 150_000_000 }]));
    await waitFor(() => ada.page.evaluate(() => document.querySelector('#toasts')?.textContent.includes('Not sent: movie.mkv is 150 MB: files up to 100 MB can be sent.')),
      { timeout: 5000, what: 'the size-limit message' });
    assert.equal((await bob.page.evaluate(() => window.peercall.files())).length, 2, 'nothing was offered to Bob');
    // Ada leaves: what Bob received stays in his list, still to be saved.
    await ada.page.click('#ctl-leave');
    await waitFor(async () => (await bob.page.evaluate(() => window.peercall.peers())).length === 0, { timeout: 10_000, what: 'Ada gone' });
    await bob.page.click('#tab-files');
    assert.equal(await bob.page.locator('#file-list .file-row[data-direction="in"] .file-save').count(), 2, 'both Save links remain');
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    for (const p of [ada, bob]) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
