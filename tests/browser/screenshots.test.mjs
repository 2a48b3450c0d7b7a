// Screenshots of the product (tests/artifacts/*.png), on a desktop and on a phone, with layout checks a person
// would notice: nothing cut off, nothing overflowing sideways, controls large enough to tap.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  Cleanup, DESKTOP, describe, ensureArtifacts, join, launchBrowser, PHONE, sleep, startServer, tilesOf, uniqueRoom,
  waitConnected, waitFor, waitMediaFlowing,
} from './harness.mjs';

/** Layout facts of the page as a user sees it. */
function layoutOf(participant) {
  return participant.page.evaluate(() => {
    const box = (el) => {
      if (!el) return null;
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, w: r.width, h: r.height, right: r.right, bottom: r.bottom };
    };
    const visibleControls = [...document.querySelectorAll('.controls .ctl')].filter((b) => b.offsetParent !== null);
    return {
      viewport: { w: innerWidth, h: innerHeight },
      scrollWidth: document.documentElement.scrollWidth,
      stage: box(document.querySelector('#stage')),
      controls: visibleControls.map((b) => ({ label: b.getAttribute('aria-label'), ...box(b) })),
      tiles: [...document.querySelectorAll('#stage .tile')].map((t) => ({ local: t.classList.contains('tile-local'), pip: t.classList.contains('pip'), ...box(t) })),
    };
  });
}

function assertFits(layout, who, { touch = false } = {}) {
  const { viewport } = layout;
  const min = touch ? 44 : 24; // finger-sized on phones, mouse-sized on desktops
  assert.ok(layout.scrollWidth <= viewport.w, `${who}: no sideways scrolling (${layout.scrollWidth} > ${viewport.w})`);
  for (const c of layout.controls) {
    assert.ok(c.x >= 0 && c.right <= viewport.w && c.bottom <= viewport.h, `${who}: control "${c.label}" is on screen: ${JSON.stringify(c)}`);
    assert.ok(c.w >= min && c.h >= min, `${who}: control "${c.label}" is large enough (${c.w}×${c.h}, min ${min})`);
  }
  for (const t of layout.tiles) {
    assert.ok(t.x >= 0 && t.right <= viewport.w + 0.5 && t.y >= 0 && t.bottom <= viewport.h + 0.5, `${who}: tile on screen: ${JSON.stringify(t)}`);
  }
}

async function shoot(participant, file) {
  const dir = ensureArtifacts();
  const target = path.join(dir, file);
  await participant.page.screenshot({ path: target });
  const size = statSync(target).size;
  assert.ok(size > 10_000, `${file} has content (${size} bytes)`);
  return target;
}

/** Waits until every remote tile on the page shows moving video. */
function waitVideosPlaying(participant, count) {
  return waitFor(async () => (await tilesOf(participant)).filter((x) => !x.local && x.videoWidth > 0).length === count,
    { timeout: 20_000, what: `${participant.name} to show ${count} playing remote videos` });
}

test('screenshots: two-party call on a desktop and on a phone, plus landing, pre-join and panels', { timeout: 180_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = 'brave-otter-4821-0937-5512-8830';
  const shots = [];
  const people = [];
  try {
    // Landing page, desktop and phone.
    for (const [label, viewport, mobile] of [['desktop', DESKTOP, false], ['phone', PHONE, true]]) {
      const context = await browser.newContext({ viewport, deviceScaleFactor: mobile ? 2 : 1, isMobile: mobile, hasTouch: mobile });
      const page = await context.newPage();
      await page.goto(server.url);
      await page.fill('#name', 'Ada');
      shots.push(await shoot({ page }, `landing-${label}.png`));
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
      assert.ok(overflow <= 0, `landing page fits the ${label} width`);
      // "New room" leads to a readable, unguessable room name and the pre-join screen.
      await page.click('#create');
      await page.waitForURL(/\/r\/[a-z]+-[a-z]+-\d{4}-\d{4}-\d{4}-\d{4}\?name=Ada$/, { timeout: 10_000 });
      await context.close();
    }

    // Pre-join screen with camera preview and microphone meter.
    {
      const context = await browser.newContext({ viewport: DESKTOP, permissions: ['camera', 'microphone'] });
      const page = await context.newPage();
      await page.goto(`${server.url}/r/${room}?name=Ada`);
      await waitFor(() => page.evaluate(() => document.querySelector('#preview-video').videoWidth > 0), { what: 'camera preview' });
      await waitFor(() => page.evaluate(() => document.querySelector('#pre-cam-select').options.length > 0), { what: 'camera picker' });
      assert.equal(await page.inputValue('#name-input'), 'Ada');
      await sleep(500);
      shots.push(await shoot({ page }, 'prejoin-desktop.png'));
      await context.close();
      const phone = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, permissions: ['camera', 'microphone'] });
      const phonePage = await phone.newPage();
      await phonePage.goto(`${server.url}/r/${room}?name=Ada`);
      await waitFor(() => phonePage.evaluate(() => document.querySelector('#preview-video').videoWidth > 0), { what: 'camera preview on the phone' });
      assert.ok(await phonePage.evaluate(() => document.documentElement.scrollWidth <= innerWidth), 'pre-join fits the phone width');
      shots.push(await shoot({ page: phonePage }, 'prejoin-phone.png'));
      await phone.close();
    }

    // Two-party call, desktop.
    const ada = await join(browser, server, room, 'Ada', { viewport: DESKTOP });
    people.push(ada);
    await waitFor(() => ada.page.isVisible('#empty-hint'), { what: 'the invite hint while alone' });
    assert.equal(await ada.page.textContent('#invite-url'), `${server.url}/r/${room}`);
    await sleep(500);
    shots.push(await shoot(ada, 'call-alone-desktop.png'));
    const bob = await join(browser, server, room, 'Bob', { viewport: DESKTOP });
    people.push(bob);
    await waitConnected(ada, 'Bob');
    await waitMediaFlowing(ada, bob.id);
    await waitVideosPlaying(ada, 1);
    await sleep(800);
    const desk = await layoutOf(ada);
    assertFits(desk, 'desktop');
    const remote = desk.tiles.find((x) => !x.local);
    assert.ok(remote.w * remote.h > 0.5 * desk.stage.w * desk.stage.h, 'the other person fills most of the stage');
    assert.ok(desk.tiles.find((x) => x.local)?.pip, 'you are shown as a small picture-in-picture');
    shots.push(await shoot(ada, 'call-desktop.png'));

    // Chat and connection panels.
    await bob.page.click('#ctl-chat');
    await bob.page.fill('#chat-input', 'Hi Ada! The link worked right away.');
    await bob.page.press('#chat-input', 'Enter');
    await ada.page.click('#ctl-chat');
    await waitFor(() => ada.page.evaluate(() => document.querySelectorAll('#chat-log .msg').length === 1), { what: 'chat message' });
    await ada.page.fill('#chat-input', 'Great — and it is peer to peer!');
    await ada.page.press('#chat-input', 'Enter');
    await sleep(300);
    assertFits(await layoutOf(ada), 'desktop with chat');
    shots.push(await shoot(ada, 'call-desktop-chat.png'));
    await ada.page.click('#ctl-stats');
    await waitFor(() => ada.page.evaluate(() => /([0-9A-F]{2}:){31}/.test(document.querySelector('#stats-cards')?.textContent ?? '')),
      { what: 'fingerprints in the connection panel' });
    await sleep(1200); // one more poll for bitrates
    const panel = await ada.page.textContent('#stats-cards');
    assert.match(panel, /Direct|Relayed/, 'the route is named');
    assert.match(panel, /kbit\/s|Mbit\/s/, 'bitrates are shown');
    assert.match(panel, /VP8|VP9|H264|AV1/, 'the video codec is shown');
    assert.match(panel, /opus/i, 'the audio codec is shown');
    shots.push(await shoot(ada, 'call-desktop-stats.png'));
    await ada.page.click('#tab-people');
    assert.deepEqual(await ada.page.$$eval('#people-list .person-name', (els) => els.map((e) => e.textContent)), ['Ada (you)', 'Bob']);
    shots.push(await shoot(ada, 'call-desktop-people.png'));
    await ada.page.click('#side-close');

    // Bob mutes: Ada's screenshot then shows the muted indicator.
    await bob.page.click('#ctl-mic');
    await waitFor(async () => (await tilesOf(ada)).some((x) => x.name === 'Bob' && x.mic === 'off'), { what: 'Bob muted' });

    // Phone: Cyd joins from a phone-sized screen; three people → grid.
    const cyd = await join(browser, server, room, 'Cyd', { viewport: PHONE, mobile: true });
    people.push(cyd);
    await waitConnected(cyd, 'Ada', { timeout: 30_000 });
    await waitConnected(cyd, 'Bob', { timeout: 30_000 });
    await waitVideosPlaying(cyd, 2);
    await waitVideosPlaying(ada, 2);
    await sleep(800);
    assertFits(await layoutOf(cyd), 'phone, three people', { touch: true });
    shots.push(await shoot(cyd, 'call-phone-three.png'));
    shots.push(await shoot(ada, 'call-desktop-three.png'));

    // Phone two-party call: Bob leaves, Cyd and Ada stay.
    await bob.page.click('#ctl-leave');
    await waitFor(async () => (await tilesOf(cyd)).filter((x) => !x.local).length === 1, { what: 'two-party layout on the phone' });
    await sleep(800);
    const phone = await layoutOf(cyd);
    assertFits(phone, 'phone', { touch: true });
    const phoneRemote = phone.tiles.find((x) => !x.local);
    assert.ok(phoneRemote.w >= phone.viewport.w * 0.9, 'on a phone the other person uses the full width');
    shots.push(await shoot(cyd, 'call-phone.png'));
    await cyd.page.click('#ctl-chat');
    await sleep(300);
    shots.push(await shoot(cyd, 'call-phone-chat.png'));
    await cyd.page.click('#side-close');
    await cyd.page.click('#ctl-settings');
    await sleep(300);
    shots.push(await shoot(cyd, 'call-phone-settings.png'));
    await cyd.page.keyboard.press('Escape');

    t.diagnostic(`screenshots: ${shots.map((s) => path.relative(process.cwd(), s)).join(', ')}`);
    assert.deepEqual(people.flatMap((p) => p.errors), [], 'no page errors');
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
