// The native peer (`peercall join`) in a call with Chromium, in both joining orders: Chromium decodes the native
// peer's video (framesDecoded rising) and plays its audio; the native peer's recording of Chromium's fake camera
// and microphone is decodable by ffprobe with about the frames the peer counted, and its chat arrives. Also: a
// server restart mid-call, glare on ICE restarts, and several --video bitrates following Chromium's feedback.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  BIN, Cleanup, describe, join, launchBrowser, mediaFlowing, sleep, startServer, uniqueRoom, waitConnected, waitFor, waitMediaFlowing, withTimeout,
} from './harness.mjs';

/** Starts `peercall join` with --json; collects its JSON lines. */
function startNative(url, args) {
  const child = spawn(BIN, ['join', url, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const native = { child, lines: [], stderr: '', code: undefined };
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk.toString();
    let i;
    while ((i = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      try {
        native.lines.push(JSON.parse(line));
      } catch {
        /* not JSON */
      }
    }
  });
  child.stderr.on('data', (chunk) => {
    native.stderr += chunk.toString();
  });
  native.exited = new Promise((resolve) => child.once('exit', (code) => {
    native.code = code;
    resolve(code);
  }));
  return native;
}

function ffprobe(file) {
  const out = spawnSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', '0', '-show_entries',
    'stream=codec_name,nb_read_frames:format=duration', '-of', 'json', file], { encoding: 'utf8' });
  assert.equal(out.status, 0, `ffprobe ${file}: ${out.stderr}`);
  const info = JSON.parse(out.stdout);
  return { codec: info.streams?.[0]?.codec_name, frames: Number(info.streams?.[0]?.nb_read_frames), duration: Number(info.format?.duration) };
}

for (const order of ['browser first', 'native first']) {
  test(`native peer and Chromium call each other (${order})`, { timeout: 120_000 }, async (t) => {
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const server = await startServer();
    cleanup.add(() => server.kill());
    const browser = await launchBrowser();
    cleanup.add(() => browser.close());
    const room = uniqueRoom('native');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-native-'));
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
    const url = `${server.url}/r/${room}`;
    const args = ['--name', 'Native', '--duration', '16', '--expect-peers', '1', '--record', dir, '--say', 'hello from native', '--stats-interval', '2'];

    let ada;
    let native;
    if (order === 'browser first') {
      ada = await join(browser, server, room, 'Ada');
      native = startNative(url, args);
    } else {
      native = startNative(url, args);
      await waitFor(() => native.lines.some((l) => l.event === 'joined'), { what: 'the native peer to join' });
      ada = await join(browser, server, room, 'Ada');
    }
    cleanup.add(() => native.child.kill('SIGKILL'));
    try {
      const joined = await waitFor(() => native.lines.find((l) => l.event === 'joined'), { what: 'the native peer to join' });
      const peer = await waitConnected(ada, 'Native', { timeout: 25_000 });
      assert.equal(peer.id, joined.id);
      const seen = await waitMediaFlowing(ada, joined.id, { timeout: 25_000 });
      t.diagnostic(`Chromium decodes ${seen.frames} frames and ${seen.samples} real audio samples per 1.5 s from the native peer`);
      await waitFor(async () => (await ada.page.evaluate(() => window.peercall.chat()))
        .some((m) => m.text === 'hello from native' && m.name === 'Native'), { what: 'the native chat to reach Chromium' });

      const code = await withTimeout(native.exited, 40_000, 'the native peer to finish');
      assert.equal(code, 0, `native exit status; stderr: ${native.stderr}`);
      const stats = native.lines.filter((l) => l.event === 'stats').at(-1);
      t.diagnostic(`native peer: route ${stats.route}, rtt ${stats.rtt_ms} ms, in ${stats.in_kbps} kbit/s, ${stats.video_frames_rx} frames`);
      assert.ok(stats.video_frames_rx > 60, JSON.stringify(stats));
      assert.equal(native.lines.find((l) => l.event === 'summary')?.ok, true);

      const recorded = native.lines.filter((l) => l.event === 'recorded');
      const video = recorded.find((r) => r.kind === 'video');
      const audio = recorded.find((r) => r.kind === 'audio');
      assert.ok(video && audio, JSON.stringify(recorded));
      assert.match(path.basename(video.path), /^Ada-/);
      const v = ffprobe(video.path);
      assert.equal(v.codec, 'vp8');
      assert.ok(Math.abs(v.frames - video.frames) <= video.frames * 0.1, `ffprobe decodes ${v.frames} of ${video.frames} frames`);
      const a = ffprobe(audio.path);
      assert.equal(a.codec, 'opus');
      assert.ok(a.duration > 5 && Math.abs(a.duration - audio.seconds) <= audio.seconds * 0.1 + 0.1,
        `Opus track of ${a.duration} s, ${audio.seconds} s written`);
      t.diagnostic(`recording: ${v.frames} VP8 frames, ${a.duration.toFixed(1)} s of Opus`);
      assert.deepEqual(ada.errors, [], 'no page errors');
    } catch (e) {
      e.message += `\n${await describe(ada)}\nnative: ${JSON.stringify(native.lines.filter((l) => l.event !== 'stats').slice(-20))}\n${native.stderr}`;
      throw e;
    }
  });
}

test('mixed mesh: two browsers and the native peer, everyone receives the other two', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('mesh');
  const ada = await join(browser, server, room, 'Ada');
  const native = startNative(`${server.url}/r/${room}`, ['--name', 'Native', '--duration', '25', '--expect-peers', '2', '--stats-interval', '2']);
  cleanup.add(() => native.child.kill('SIGKILL'));
  const joined = await waitFor(() => native.lines.find((l) => l.event === 'joined'), { what: 'the native peer to join' });
  const bob = await join(browser, server, room, 'Bob');
  try {
    for (const [viewer, other] of [[ada, bob.id], [ada, joined.id], [bob, ada.id], [bob, joined.id]]) {
      const flow = await waitMediaFlowing(viewer, other, { timeout: 25_000 });
      t.diagnostic(`${viewer.name} decodes ${flow.frames} frames per 1.5 s from ${other}`);
    }
    const code = await withTimeout(native.exited, 40_000, 'the native peer to finish');
    assert.equal(code, 0, `native exit status; stderr: ${native.stderr}`);
    const last = new Map(native.lines.filter((l) => l.event === 'stats').map((l) => [l.name, l]));
    for (const name of ['Ada', 'Bob']) {
      assert.ok(last.get(name)?.video_frames_rx > 60, `native receives ${name}: ${JSON.stringify(last.get(name))}`);
    }
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\nnative: ${native.stderr}`;
    throw e;
  }
});

test('the signaling server restarts mid-call: the native peer keeps its media flowing and reconnects', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  let server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('native-restart');
  const ada = await join(browser, server, room, 'Ada');
  const native = startNative(`${server.url}/r/${room}`, ['--name', 'Native', '--duration', '40', '--expect-peers', '1', '--stats-interval', '1']);
  cleanup.add(() => native.child.kill('SIGKILL'));
  try {
    const first = await waitFor(() => native.lines.find((l) => l.event === 'joined'), { what: 'the native peer to join' });
    await waitConnected(ada, 'Native', { timeout: 25_000 });
    await waitMediaFlowing(ada, first.id, { timeout: 25_000 });

    const { httpPort, turnPort } = server;
    await server.kill('SIGKILL');
    await waitFor(() => native.lines.some((l) => l.event === 'signaling-lost'), { what: 'the native peer to notice' });
    const down = await mediaFlowing(ada, first.id);
    assert.ok(down.ok, `Chromium still receives the native peer with the server down: ${down.problems.join(', ')}`);
    await sleep(1000);
    server = await startServer({ httpPort, turnPort });
    const back = Date.now();
    const second = await waitFor(() => native.lines.filter((l) => l.event === 'joined').at(1), { timeout: 20_000, what: 'the native peer to rejoin' });
    assert.notEqual(second.id, first.id, 'a fresh server gives a new id');
    await waitFor(async () => {
      const peers = await ada.page.evaluate(() => window.peercall.peers());
      return peers.length === 1 && peers[0].id === second.id && !peers[0].orphan && peers[0].connectionState === 'connected';
    }, { timeout: 15_000, what: 'Chromium to know the native peer by its new id, on the same connection' });
    t.diagnostic(`re-keyed ${Date.now() - back} ms after the server came back`);
    await waitMediaFlowing(ada, second.id);
    // The native peer knows Ada by her new id, on the same connection: a re-key, no leave, no join.
    // Ada's own reconnect may come later (its back-off): wait for her new session.
    const adaNow = await waitFor(() => ada.page.evaluate((old) => (window.peercall.status() === 'connected' && window.peercall.id !== old
      ? window.peercall.id : null), ada.id), { timeout: 20_000, what: 'Ada to rejoin with a new session' });
    await waitFor(() => native.lines.some((l) => l.event === 'rekeyed' && l.old === ada.id && l.id === adaNow),
      { timeout: 10_000, what: 'the native peer to re-key Ada' });
    const churn = native.lines.filter((l) => ['peer-left', 'peer-joined', 'disconnected'].includes(l.event));
    assert.deepEqual(churn, [], 'no leave, join or lost connection on the native side');
    const before = native.lines.filter((l) => l.event === 'stats').at(-1);
    await sleep(2500);
    const after = native.lines.filter((l) => l.event === 'stats').at(-1);
    assert.equal(after.name, 'Ada');
    assert.equal(after.id, adaNow);
    assert.ok(after.connected && after.video_frames_rx > before.video_frames_rx + 10 && after.video_frames_tx > before.video_frames_tx + 10,
      `native still receives and sends: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    assert.equal(after.restarts, 0, 'no ICE restart was needed');
    t.diagnostic(`after the restart: native in ${after.in_kbps} kbit/s, out ${after.out_kbps} kbit/s`);
    native.child.kill('SIGINT');
    const code = await withTimeout(native.exited, 15_000, 'the native peer to leave on Ctrl-C');
    assert.equal(code, 0, `exit status after Ctrl-C; stderr: ${native.stderr}`);
  } catch (e) {
    e.message += `\n${await describe(ada)}\nnative: ${JSON.stringify(native.lines.filter((l) => l.event !== 'stats').slice(-20))}\n${native.stderr}`;
    throw e;
  }
});

/**
 * Page init script: incoming signaling can be held (window.__signalHold.on = true) and released in order
 * (window.__releaseSignal()), so a test can make two offers cross for certain instead of hoping they do.
 */
function holdableSignaling() {
  const Native = window.WebSocket;
  const hold = { on: false, queue: [] };
  window.__signalHold = hold;
  window.__releaseSignal = () => {
    hold.on = false;
    for (const deliver of hold.queue.splice(0)) deliver();
  };
  window.WebSocket = class extends Native {
    set onmessage(fn) {
      super.onmessage = fn && ((event) => {
        if (hold.on) hold.queue.push(() => fn.call(this, event));
        else fn.call(this, event);
      });
    }

    get onmessage() {
      return super.onmessage;
    }
  };
}

test('perfect negotiation: Chromium and the native peer restart ICE at the same time', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('native-glare');
  const ada = await join(browser, server, room, 'Ada', { init: holdableSignaling });
  const native = startNative(`${server.url}/r/${room}`, ['--name', 'Native', '--duration', '40', '--expect-peers', '1', '--stats-interval', '1']);
  cleanup.add(() => native.child.kill('SIGKILL'));
  const ufrag = () => ada.page.evaluate((id) => /a=ice-ufrag:(\S+)/.exec(window.peercall.pc(id)?.remoteDescription?.sdp ?? '')?.[1], joinedId);
  let joinedId;
  try {
    const joined = await waitFor(() => native.lines.find((l) => l.event === 'joined'), { what: 'the native peer to join' });
    joinedId = joined.id;
    await waitConnected(ada, 'Native', { timeout: 25_000 });
    await waitMediaFlowing(ada, joined.id, { timeout: 25_000 });
    const ufragBefore = await ufrag();
    // Both sides offer at once, for certain: Chromium holds what the server sends it while the native peer's
    // restart offer goes out, then makes its own; the native peer gets Chromium's offer with its own pending, and
    // Chromium gets the native one (released) with its own pending.
    await ada.page.evaluate(() => { window.__signalHold.on = true; });
    const restartsBefore = native.lines.filter((l) => l.event === 'ice-restart').length;
    native.child.kill('SIGUSR1');
    await waitFor(() => native.lines.filter((l) => l.event === 'ice-restart').length > restartsBefore, { what: 'the native restart offer' });
    await ada.page.evaluate((id) => window.peercall.restartIce(id), joined.id);
    await sleep(700);
    await ada.page.evaluate(() => window.__releaseSignal());

    const peer = await waitConnected(ada, 'Native', { timeout: 20_000 });
    await waitMediaFlowing(ada, joined.id);
    const before = native.lines.filter((l) => l.event === 'stats').at(-1);
    await sleep(2500);
    const after = native.lines.filter((l) => l.event === 'stats').at(-1);
    t.diagnostic(`glare: Chromium (polite: ${peer.polite}) saw ${peer.collisions} collisions, the native peer ${after.collisions}`);
    assert.ok(peer.collisions >= 1, `Chromium's restart crossed the native offer: ${JSON.stringify(peer)}`);
    assert.ok(after.collisions >= 1, `the native peer saw the crossing: ${JSON.stringify(after)}`);
    assert.notEqual(await ufrag(), ufragBefore, 'ICE restarted (new credentials)');
    assert.ok(after.connected && after.video_frames_rx > before.video_frames_rx + 10 && after.video_frames_tx > before.video_frames_tx + 10,
      `media both ways after the glare: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    native.child.kill('SIGINT');
    assert.equal(await withTimeout(native.exited, 15_000, 'the native peer to leave'), 0, native.stderr);
    assert.deepEqual(ada.errors, [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\nnative: ${JSON.stringify(native.lines.filter((l) => l.event !== 'stats').slice(-20))}\n${native.stderr}`;
    throw e;
  }
});

/** A VP8 IVF of ffmpeg's test pattern with noise (so the encoder needs its bitrate), a keyframe every 15 frames. */
function encode(dir, name, bitrate) {
  const file = path.join(dir, name);
  const out = spawnSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=15:duration=4',
    '-vf', 'noise=alls=20:allf=t', '-c:v', 'libvpx', '-b:v', bitrate, '-g', '15', '-keyint_min', '15', '-auto-alt-ref', '0', file], { encoding: 'utf8' });
  assert.equal(out.status, 0, `ffmpeg: ${out.stderr}`);
  return file;
}

test('several --video bitrates: Chromium\'s feedback moves the native peer up to the high one, still decoded', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'peercall-ladder-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  const low = encode(dir, 'low.ivf', '100k');
  const high = encode(dir, 'high.ivf', '600k');
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('native-ladder');
  const ada = await join(browser, server, room, 'Ada');
  const native = startNative(`${server.url}/r/${room}`, ['--name', 'Native', '--duration', '40', '--expect-peers', '1', '--stats-interval', '1',
    '--video', low, '--video', high]);
  cleanup.add(() => native.child.kill('SIGKILL'));
  try {
    const joined = await waitFor(() => native.lines.find((l) => l.event === 'joined'), { what: 'the native peer to join' });
    await waitConnected(ada, 'Native', { timeout: 25_000 });
    await waitMediaFlowing(ada, joined.id, { timeout: 25_000 });
    const stats = () => native.lines.filter((l) => l.event === 'stats');
    assert.equal(stats().at(-1).video_encodings, 2);
    const start = Date.now();
    const up = await waitFor(() => stats().find((l) => l.video_encoding === 1), { timeout: 30_000, what: 'the switch to the high encoding' });
    t.diagnostic(`switched up ${((Date.now() - start) / 1000).toFixed(1)} s after media flowed: estimate ${up.estimate_kbps} kbit/s for ${up.video_kbps} kbit/s of video`);
    assert.ok(up.estimate_kbps > up.video_kbps, JSON.stringify(up));
    assert.ok(stats().some((l) => l.video_encoding === 0 && l.video_frames_tx > 0), 'it started on the low one');
    // Chromium decodes across the switch, at the higher bitrate.
    const flow = await waitMediaFlowing(ada, joined.id);
    const kbps = ((flow.after.videoIn.bytesReceived - flow.before.videoIn.bytesReceived) * 8) / 1.5 / 1000;
    t.diagnostic(`Chromium decodes ${flow.frames} frames per 1.5 s after the switch, video in at ${kbps.toFixed(0)} kbit/s`);
    assert.ok(kbps > 300, `Chromium receives the high encoding (~500 kbit/s; the low one is ~100): ${kbps} kbit/s`);
    assert.equal(stats().at(-1).video_encoding, 1, 'it stays up on a loopback link');
    native.child.kill('SIGINT');
    assert.equal(await withTimeout(native.exited, 15_000, 'the native peer to leave'), 0, native.stderr);
  } catch (e) {
    e.message += `\n${await describe(ada)}\nnative: ${JSON.stringify(native.lines.filter((l) => l.event === 'stats').slice(-5))}\n${native.stderr}`;
    throw e;
  }
});
