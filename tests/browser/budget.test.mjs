// A mesh that adapts (web/js/bitrate.js): in a four-party call with a 900 kbit/s upload budget, every outbound
// video stays within budget/(N-1) = 300 kbit/s after 10 s, and video keeps decoding everywhere.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, framesFrom, join, launchBrowser, sleep, startServer, uniqueRoom, waitConnected } from './harness.mjs';

const BUDGET_KBPS = 900;

/** Video bytes sent to each peer, with the time they were read (the outbound-rtp entry of each connection). */
function videoSent(participant) {
  return participant.page.evaluate(async () => {
    const out = {};
    for (const peer of window.peercall.peers()) {
      const report = await window.peercall.pc(peer.id)?.getStats();
      report?.forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') out[peer.id] = { bytes: s.bytesSent, at: s.timestamp, height: s.frameHeight ?? null };
      });
    }
    return out;
  });
}

test('four-party call: each outbound video within budget/(N-1), video decoding everywhere', { timeout: 240_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('budget');
  const init = `localStorage.setItem('peercall.uplinkKbps', '${BUDGET_KBPS}')`;
  const people = [];
  for (const name of ['Ada', 'Bob', 'Cyd', 'Dan']) people.push(await join(browser, server, room, name, { init }));
  try {
    for (const viewer of people) {
      for (const other of people.filter((p) => p !== viewer)) await waitConnected(viewer, other.name, { timeout: 60_000 });
    }
    assert.equal(await people[0].page.evaluate(() => window.peercall.uplinkBudget()), BUDGET_KBPS * 1000);
    await sleep(10_000);

    const cap = (BUDGET_KBPS * 1000) / (people.length - 1);
    const before = await Promise.all(people.map(videoSent));
    const framesBefore = await Promise.all(people.map((v) => Promise.all(people.filter((o) => o !== v).map((o) => framesFrom(v, o.id)))));
    await sleep(4000);
    const after = await Promise.all(people.map(videoSent));
    const framesAfter = await Promise.all(people.map((v) => Promise.all(people.filter((o) => o !== v).map((o) => framesFrom(v, o.id)))));

    const lines = [];
    for (const [i, sender] of people.entries()) {
      let total = 0;
      for (const [peerId, b] of Object.entries(after[i])) {
        const a = before[i][peerId];
        const bps = ((b.bytes - a.bytes) * 8 * 1000) / (b.at - a.at);
        total += bps;
        lines.push(`${sender.name}→${peerId}: ${Math.round(bps / 1000)} kbit/s, ${b.height}p`);
        console.log(lines.at(-1));
        assert.ok(bps <= cap, `${sender.name}'s video to ${peerId}: ${Math.round(bps / 1000)} kbit/s ≤ ${cap / 1000} kbit/s`);
      }
      assert.ok(total <= BUDGET_KBPS * 1000, `${sender.name}'s video in total: ${Math.round(total / 1000)} kbit/s ≤ the budget`);
      // What the encoders were told (RTCRtpSender.getParameters), per connection.
      const encodings = await sender.page.evaluate(() => window.peercall.peers().map((p) => window.peercall.pc(p.id)
        .getSenders().find((x) => x.track?.kind === 'video')?.getParameters().encodings[0] ?? null));
      for (const e of encodings) assert.ok(e?.maxBitrate > 0 && e.maxBitrate <= cap && e.scaleResolutionDownBy >= 1, `${sender.name}: encoding ${JSON.stringify(e)}`);
      const plans = (await sender.page.evaluate(() => window.peercall.peers())).map((p) => p.videoPlan);
      for (const plan of plans) {
        assert.ok(plan && plan.maxBitrate <= cap, `${sender.name} applied a plan within the cap: ${JSON.stringify(plan)}`);
      }
    }
    for (const [v, viewer] of people.entries()) {
      people.filter((o) => o !== viewer).forEach((other, k) => {
        const frames = framesAfter[v][k] - framesBefore[v][k];
        assert.ok(frames >= 10, `${viewer.name} decodes ${other.name}'s video (+${frames} frames in 4 s)`);
      });
    }
    assert.deepEqual(people.flatMap((p) => p.errors), [], 'no page errors');
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
