// Changing devices mid-call: another camera, another microphone, the screen — all by replaceTrack, so the
// connection is never renegotiated and the other side keeps receiving.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Cleanup, describe, join, launchBrowser, peersOf, startServer, statsOf, tilesOf, uniqueRoom, waitConnected, waitFor,
  waitMediaFlowing,
} from './harness.mjs';

/** What Ada sends to `peerId`, and the SDP versions of that connection (they change on any renegotiation). */
function sending(participant, peerId) {
  return participant.page.evaluate((id) => {
    const pc = window.peercall.pc(id);
    const track = (kind) => pc.getSenders().find((s) => s.track?.kind === kind)?.track ?? null;
    const version = (d) => d?.sdp.match(/^o=\S+ \S+ (\d+)/m)?.[1] ?? null;
    return {
      video: track('video')?.label ?? null,
      audio: track('audio')?.label ?? null,
      local: version(pc.localDescription),
      remote: version(pc.remoteDescription),
      offers: pc.getTransceivers().length,
    };
  }, peerId);
}

test('switching camera and microphone and sharing the screen mid-call need no renegotiation', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  // Chromium's fake cameras: device 0 is I420, device 1 Y16 (a depth format WebRTC does not encode), device 2
  // MJPEG. Switching 0 → 2 is the realistic "other webcam" case.
  const browser = await launchBrowser({ cameras: 3 });
  cleanup.add(() => browser.close());
  const room = uniqueRoom('devices');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    const start = await sending(ada, bob.id);
    const bobStart = await sending(bob, ada.id);
    assert.equal(start.video, 'fake_device_0');

    // Another camera, from the settings dialog.
    await ada.page.click('#ctl-cam-more');
    const cameras = await ada.page.$$eval('#set-cam-select option', (options) => options.map((o) => ({ value: o.value, label: o.textContent })));
    assert.equal(cameras.length, 3, `every camera is offered: ${JSON.stringify(cameras)}`);
    await ada.page.selectOption('#set-cam-select', cameras.find((c) => c.label === 'fake_device_2').value);
    await waitFor(async () => (await sending(ada, bob.id)).video === 'fake_device_2', { what: 'Ada to send the other camera' });
    await waitMediaFlowing(bob, ada.id, { what: 'Bob to keep receiving Ada after her camera switch' });

    // Another microphone.
    const microphones = await ada.page.$$eval('#set-mic-select option', (options) => options.map((o) => ({ value: o.value, label: o.textContent })));
    assert.ok(microphones.length >= 2, `several microphones offered: ${JSON.stringify(microphones)}`);
    const otherMic = microphones.find((m) => m.label !== start.audio);
    await ada.page.selectOption('#set-mic-select', otherMic.value);
    await waitFor(async () => (await sending(ada, bob.id)).audio === otherMic.label, { what: 'Ada to send the other microphone' });
    await waitMediaFlowing(bob, ada.id, { what: 'Bob to keep hearing Ada after her microphone switch' });
    await ada.page.keyboard.press('Escape');
    await waitFor(async () => !(await ada.page.evaluate(() => document.querySelector('#settings').open)), { what: 'settings to close' });

    // Screen share: Bob sees Ada's screen (shown uncropped), then her camera again when she stops.
    await ada.page.click('#ctl-screen');
    await waitFor(async () => (await sending(ada, bob.id)).video?.startsWith('screen'), { what: 'Ada to send her screen' });
    await waitFor(async () => (await tilesOf(bob)).find((x) => x.peer === ada.id)?.screen, { what: 'Bob to see a screen-share tile' });
    await waitFor(async () => (await statsOf(bob, ada.id))?.videoIn?.frameWidth >= 960, { what: 'Bob to receive screen-sized video' });
    await waitMediaFlowing(bob, ada.id, { what: 'Bob to receive Ada\'s screen' });
    assert.equal(await ada.page.getAttribute('#ctl-screen', 'aria-pressed'), 'true');
    await ada.page.click('#ctl-screen');
    await waitFor(async () => (await sending(ada, bob.id)).video === 'fake_device_2', { what: 'Ada back on her camera' });
    await waitFor(async () => !(await tilesOf(bob)).find((x) => x.peer === ada.id)?.screen, { what: 'Bob\'s tile back to camera' });
    await waitMediaFlowing(bob, ada.id);

    // Not one renegotiation on either side.
    const end = await sending(ada, bob.id);
    const bobEnd = await sending(bob, ada.id);
    assert.deepEqual([end.local, end.remote, end.offers], [start.local, start.remote, start.offers], 'Ada\'s SDP never changed');
    assert.deepEqual([bobEnd.local, bobEnd.remote], [bobStart.local, bobStart.remote], 'Bob\'s SDP never changed');
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});

test('simultaneous ICE restarts from both sides (glare) resolve by perfect negotiation', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('glare');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  const ufrags = (p, id) => p.page.evaluate((peer) => {
    const pc = window.peercall.pc(peer);
    const ufrag = (d) => d?.sdp.match(/^a=ice-ufrag:(\S+)/m)?.[1] ?? null;
    return { local: ufrag(pc.currentLocalDescription), remote: ufrag(pc.currentRemoteDescription), signaling: pc.signalingState };
  }, id);
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    const polite = (await peersOf(ada))[0].polite;
    assert.equal(polite, ada.id < bob.id, 'the lower id is the polite side');
    assert.notEqual(polite, (await peersOf(bob))[0].polite, 'exactly one side is polite');

    for (let round = 1; round <= 3; round++) {
      const before = { ada: await ufrags(ada, bob.id), bob: await ufrags(bob, ada.id) };
      // Both ask for an ICE restart at the same moment: two offers cross.
      await Promise.all([
        ada.page.evaluate((id) => window.peercall.restartIce(id), bob.id),
        bob.page.evaluate((id) => window.peercall.restartIce(id), ada.id),
      ]);
      await waitFor(async () => {
        const [a, b] = [await ufrags(ada, bob.id), await ufrags(bob, ada.id)];
        return a.signaling === 'stable' && b.signaling === 'stable' && a.local !== before.ada.local && b.local !== before.bob.local
          && a.remote === b.local && b.remote === a.local;
      }, { timeout: 15_000, what: `round ${round}: both sides on fresh, matching ICE credentials` });
      await waitConnected(ada, 'Bob');
      await waitConnected(bob, 'Ada');
    }
    const collisions = (await peersOf(ada))[0].collisions + (await peersOf(bob))[0].collisions;
    t.diagnostic(`${collisions} crossing offers resolved in 3 rounds`);
    assert.ok(collisions >= 1, 'the offers really crossed at least once');
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});
