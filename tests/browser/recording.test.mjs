// Local recording (web/js/recorder.js): the grid drawn to a canvas plus all audio mixed with Web Audio, recorded
// by MediaRecorder to WebM and saved as a download; everyone in the call sees the recording indicator. ffprobe
// finds a video and an audio stream of about 5 s in a 5 s recording.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { Cleanup, describe, ensureArtifacts, join, launchBrowser, sleep, startServer, uniqueRoom, waitConnected, waitFor, waitMediaFlowing } from './harness.mjs';

const run = promisify(execFile);
const indicator = (p) => p.page.evaluate(() => {
  const el = document.querySelector('#rec-indicator');
  return el.hidden ? null : el.textContent.trim();
});

test('a 5 s recording holds video and audio of about 5 s; everyone sees the indicator', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('rec');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(ada, bob.id);
    assert.equal(await indicator(bob), null, 'no indicator before anyone records');

    await ada.page.click('#ctl-record');
    const started = Date.now();
    assert.equal(await ada.page.getAttribute('#ctl-record', 'aria-pressed'), 'true');
    assert.equal(await indicator(ada), 'You are recording');
    await waitFor(async () => (await indicator(bob)) === 'Ada is recording', { timeout: 5000, what: 'Bob to see that Ada records' });

    await sleep(Math.max(0, 5000 - (Date.now() - started)));
    const [download] = await Promise.all([ada.page.waitForEvent('download', { timeout: 15_000 }), ada.page.click('#ctl-record')]);
    assert.match(download.suggestedFilename(), new RegExp(`^peercall-${room}-\\d{4}-\\d{2}-\\d{2}-\\d{4}\\.webm$`));
    const file = path.join(ensureArtifacts(), `recording-${room}.webm`);
    await download.saveAs(file);
    await waitFor(async () => (await indicator(bob)) === null, { timeout: 5000, what: 'Bob\'s indicator to go away' });
    assert.equal(await indicator(ada), null);

    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=index,codec_type,codec_name,width,height', '-of', 'json', file]);
    const streams = JSON.parse(stdout).streams;
    const video = streams.find((s) => s.codec_type === 'video');
    const audio = streams.find((s) => s.codec_type === 'audio');
    assert.ok(video, `a video stream: ${stdout}`);
    assert.ok(audio, `an audio stream: ${stdout}`);
    assert.deepEqual([video.width, video.height], [960, 540]);
    // MediaRecorder's WebM carries no duration in its header: measure each stream by its packets' timestamps.
    const packets = await run('ffprobe', ['-v', 'error', '-show_entries', 'packet=stream_index,pts_time', '-of', 'csv=p=0', file], { maxBuffer: 32 * 1024 * 1024 });
    const span = new Map();
    const count = new Map();
    for (const line of packets.stdout.trim().split('\n')) {
      const [index, pts] = line.split(',');
      const x = Number(pts);
      if (!Number.isFinite(x)) continue;
      const s = span.get(Number(index)) ?? { min: Infinity, max: -Infinity };
      span.set(Number(index), { min: Math.min(s.min, x), max: Math.max(s.max, x) });
      count.set(Number(index), (count.get(Number(index)) ?? 0) + 1);
    }
    const seconds = (s) => span.get(s.index).max - span.get(s.index).min;
    console.log(`recording: ${statSync(file).size} bytes, video ${seconds(video).toFixed(2)} s (${video.codec_name}, ${count.get(video.index)} frames), audio ${seconds(audio).toFixed(2)} s (${audio.codec_name})`);
    for (const s of [video, audio]) {
      assert.ok(seconds(s) > 4 && seconds(s) < 7, `${s.codec_type} lasts about 5 s (${seconds(s).toFixed(2)} s)`);
    }
    // The mix has sound in it (the fake microphones beep), not just a silent track.
    const volume = await run('ffmpeg', ['-hide_banner', '-nostats', '-i', file, '-map', '0:a', '-af', 'volumedetect', '-f', 'null', '-']);
    const max = Number(/max_volume: (-?[\d.]+) dB/.exec(volume.stderr)?.[1]);
    assert.ok(max > -40, `the audio is not silent (max ${max} dB)`);

    // Someone who joins while Bob records is told too (when their data channel opens).
    await bob.page.click('#ctl-record');
    await waitFor(async () => (await indicator(ada)) === 'Bob is recording', { timeout: 5000, what: 'Ada to see that Bob records' });
    const cyd = await join(browser, server, room, 'Cyd');
    await waitConnected(cyd, 'Bob');
    await waitFor(async () => (await indicator(cyd)) === 'Bob is recording', { timeout: 10_000, what: 'Cyd to see that Bob records' });
    await ada.page.click('#ctl-record');
    await waitFor(async () => (await indicator(cyd)) === 'Bob and Ada are recording', { timeout: 5000, what: 'Cyd to see both record' });
    // Bob leaves while recording: his recording is saved, and nobody sees him as recording any more.
    const [saved] = await Promise.all([bob.page.waitForEvent('download', { timeout: 15_000 }), bob.page.click('#ctl-leave')]);
    assert.match(saved.suggestedFilename(), /\.webm$/);
    await waitFor(async () => (await indicator(cyd)) === 'Ada is recording', { timeout: 10_000, what: 'Cyd to see only Ada record' });
    assert.equal(await indicator(ada), 'You are recording');
    assert.deepEqual([...ada.errors, ...bob.errors, ...cyd.errors], [], 'no page errors');
  } catch (e) {
    for (const p of [ada, bob]) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
