// What people do in a call: chat, mute, camera off, leave and come back.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import {
  Cleanup, describe, enableTestHook, ensureArtifacts, framesFrom, join, launchBrowser, sleep, startServer, statsOf,
  tilesOf, uniqueRoom, waitConnected, waitFor, waitMediaFlowing,
} from './harness.mjs';

/** The chat messages shown in `participant`'s chat log: [{name, text}] (grouped messages inherit the name). */
function chatShown(participant) {
  return participant.page.evaluate(() => {
    let name = '';
    return [...document.querySelectorAll('#chat-log .msg')].map((li) => {
      name = li.querySelector('.msg-name')?.textContent ?? name;
      return { name, text: li.querySelector('.msg-text')?.textContent ?? '' };
    });
  });
}

async function tileOf(viewer, peerId) {
  return (await tilesOf(viewer)).find((x) => x.peer === peerId) ?? null;
}

test('chat reaches the others; muting the microphone or camera shows on the other side', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('chat');
  const people = [];
  for (const name of ['Ada', 'Bob', 'Cyd']) people.push(await join(browser, server, room, name));
  const [ada, bob, cyd] = people;
  try {
    for (const viewer of people) {
      for (const other of people.filter((p) => p !== viewer)) await waitConnected(viewer, other.name, { timeout: 30_000 });
    }

    // --- Chat: Ada types, Bob and Cyd read it; Bob answers, Ada reads it.
    await ada.page.click('#ctl-chat');
    await ada.page.fill('#chat-input', 'Hello from Ada — can you hear me? 👋');
    await ada.page.press('#chat-input', 'Enter');
    for (const reader of [bob, cyd]) {
      await waitFor(async () => (await chatShown(reader)).some((m) => m.name === 'Ada' && m.text === 'Hello from Ada — can you hear me? 👋'),
        { timeout: 10_000, what: `${reader.name} to see Ada's message` });
      const unread = await reader.page.textContent('#chat-badge');
      assert.equal(unread, '1', `${reader.name} sees one unread message on the chat button`);
      const via = await reader.page.evaluate(() => window.peercall.chat().at(-1).via);
      assert.equal(via, 'datachannel', 'chat travels over the RTCDataChannel');
    }
    assert.deepEqual(await chatShown(ada), [{ name: 'You', text: 'Hello from Ada — can you hear me? 👋' }]);
    await bob.page.click('#ctl-chat');
    assert.equal(await bob.page.isVisible('#chat-badge'), false, 'opening the chat clears the badge');
    await bob.page.fill('#chat-input', 'Loud and clear');
    await bob.page.click('#chat-form button[type=submit]');
    await waitFor(async () => (await chatShown(ada)).some((m) => m.name === 'Bob' && m.text === 'Loud and clear'),
      { timeout: 10_000, what: 'Ada to see Bob\'s answer' });

    // --- Microphone: Ada mutes; Bob and Cyd see the muted icon and hear silence; unmute restores both.
    const energy = async (viewer) => (await statsOf(viewer, ada.id))?.audioIn?.totalAudioEnergy ?? 0;
    await waitMediaFlowing(bob, ada.id);
    await ada.page.click('#ctl-mic');
    assert.equal(await ada.page.getAttribute('#ctl-mic', 'aria-pressed'), 'false');
    for (const viewer of [bob, cyd]) {
      await waitFor(async () => (await tileOf(viewer, ada.id))?.mic === 'off', { timeout: 5000, what: `${viewer.name} to see Ada muted` });
    }
    await sleep(1500); // let in-flight audio drain (the jitter buffer holds more on a busy machine)
    const e0 = await energy(bob);
    await sleep(1500);
    const e1 = await energy(bob);
    // A muted track adds nothing, or a trace of the last buffered packets on a busy machine (1.6e-6 seen in a
    // full run); the fake microphone's beep adds orders of magnitude more.
    assert.ok(e1 - e0 < 1e-4, `Bob hears silence from muted Ada (energy +${e1 - e0})`);
    await ada.page.click('#ctl-mic');
    for (const viewer of [bob, cyd]) {
      await waitFor(async () => (await tileOf(viewer, ada.id))?.mic === 'on', { timeout: 5000, what: `${viewer.name} to see Ada unmuted` });
    }
    await waitFor(async () => {
      const a = await energy(bob);
      await sleep(1000);
      return (await energy(bob)) - a > 0;
    }, { timeout: 10_000, interval: 0, what: 'Bob to hear Ada again' });

    // --- Camera: Ada turns it off; the others see her avatar and no more frames; on again, video is back.
    await ada.page.click('#ctl-cam');
    assert.equal(await ada.page.getAttribute('#ctl-cam', 'aria-pressed'), 'false');
    for (const viewer of [bob, cyd]) {
      await waitFor(async () => (await tileOf(viewer, ada.id))?.cam === 'off', { timeout: 5000, what: `${viewer.name} to see Ada's camera off` });
    }
    await sleep(500);
    const f0 = await framesFrom(bob, ada.id);
    await sleep(1500);
    const f1 = await framesFrom(bob, ada.id);
    assert.ok(f1 - f0 <= 1, `no video from Ada while her camera is off (+${f1 - f0} frames)`);
    const cameraLight = await ada.page.evaluate(() => window.peercall.local());
    assert.equal(cameraLight.video, false, 'Ada sends no video');
    await ada.page.click('#ctl-cam');
    for (const viewer of [bob, cyd]) {
      await waitFor(async () => (await tileOf(viewer, ada.id))?.cam === 'on', { timeout: 8000, what: `${viewer.name} to see Ada's camera on` });
      await waitMediaFlowing(viewer, ada.id, { what: `${viewer.name} to receive Ada's video again` });
    }
    // Camera and microphone changes never renegotiated: still the one connection, still connected.
    for (const viewer of [bob, cyd]) assert.equal((await waitConnected(viewer, 'Ada')).id, ada.id);
    assert.deepEqual(people.flatMap((p) => p.errors), [], 'no page errors');
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});

test('leaving removes the tile for the others; rejoining works', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('leave');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    assert.equal(await bob.page.isVisible('#empty-hint'), false);

    // Ada presses Leave: she sees the "left" screen; Bob's tile for her disappears at once.
    const leftAt = Date.now();
    await ada.page.click('#ctl-leave');
    await waitFor(() => ada.page.isVisible('#ended'), { timeout: 5000, what: 'Ada to see the ended screen' });
    assert.equal(await ada.page.textContent('#ended-title'), 'You left the call');
    await ada.page.screenshot({ path: path.join(ensureArtifacts(), 'call-left.png') });
    await waitFor(async () => (await tilesOf(bob)).every((x) => x.name !== 'Ada'), { timeout: 5000, what: 'Ada\'s tile to disappear for Bob' });
    t.diagnostic(`Ada's tile disappeared for Bob after ${Date.now() - leftAt} ms`);
    assert.deepEqual(await bob.page.evaluate(() => window.peercall.peers()), []);
    assert.equal(await bob.page.isVisible('#empty-hint'), true, 'Bob is told he is alone and how to invite');
    const tracks = await ada.page.evaluate(() => window.peercall.local());
    assert.equal(tracks.audio || tracks.video, false, 'Ada\'s camera and microphone are released');

    // Ada rejoins from the same screen: a new session, and the call works again both ways.
    await ada.page.click('#ended-rejoin');
    await waitFor(() => ada.page.evaluate(() => window.peercall?.phase() === 'call' && window.peercall.status() === 'connected'),
      { timeout: 15_000, what: 'Ada to rejoin' });
    ada.id = await ada.page.evaluate(() => window.peercall.id);
    await waitConnected(bob, 'Ada');
    await waitConnected(ada, 'Bob');
    await waitMediaFlowing(bob, ada.id);
    await waitMediaFlowing(ada, bob.id);
    assert.equal((await tilesOf(bob)).filter((x) => x.name === 'Ada').length, 1, 'exactly one tile for Ada');

    // Closing the tab (no Leave button) also removes the tile for the others.
    await ada.page.close();
    await waitFor(async () => (await tilesOf(bob)).every((x) => x.name !== 'Ada'), { timeout: 10_000, what: 'closed tab to disappear for Bob' });
    assert.deepEqual(bob.errors, [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}`;
    throw e;
  }
});

test('refusals are explained in words: password needed, wrong password, room full, too many guesses', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer({ extraArgs: ['--room-capacity', '2'] });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('locked');
  const people = [];

  /** Opens the pre-join screen (no auto-join) and joins with `password` (or none). */
  async function prejoin(name, password) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, permissions: ['camera', 'microphone'] });
    await enableTestHook(context); // inCall reads window.peercall
    const page = await context.newPage();
    const participant = { name, context, page, errors: [], console: [] };
    page.on('pageerror', (e) => participant.errors.push(e.message));
    people.push(participant);
    await page.goto(`${server.url}/r/${room}?name=${name}`);
    await page.waitForSelector('#prejoin:not([hidden])', { timeout: 10_000 });
    await attempt(participant, password);
    return participant;
  }
  async function attempt(participant, password) {
    const { page } = participant;
    if (password !== null) {
      if (!(await page.evaluate(() => document.querySelector('#password-box').open))) await page.click('#password-box summary');
      await page.fill('#password-input', password);
    }
    await page.click('#join-btn');
  }
  const inCall = (p) => waitFor(() => p.page.evaluate(() => window.peercall.phase() === 'call' && window.peercall.status() === 'connected'),
    { timeout: 15_000, what: `${p.name} to be in the call` });
  const refusedWith = async (p, text) => {
    await waitFor(() => p.page.isVisible('#prejoin-error'), { timeout: 10_000, what: `${p.name} to be told why` });
    assert.equal(await p.page.textContent('#prejoin-error'), text);
    assert.equal(await p.page.evaluate(() => document.querySelector('#password-box').open), true, 'the password field is open');
  };
  try {
    const ada = await prejoin('Ada', 'sesame'); // the first one sets the password
    await inCall(ada);

    const bob = await prejoin('Bob', null);
    await refusedWith(bob, 'This room has a password. Enter it to join.');
    await attempt(bob, 'open-sesame');
    await refusedWith(bob, 'That password is not right for this room.');
    await bob.page.screenshot({ path: path.join(ensureArtifacts(), 'prejoin-wrong-password.png') });
    await attempt(bob, 'sesame');
    await inCall(bob);
    await waitConnected(bob, 'Ada');

    const cyd = await prejoin('Cyd', 'sesame');
    await waitFor(() => cyd.page.isVisible('#ended'), { timeout: 10_000, what: 'Cyd to be refused' });
    assert.equal(await cyd.page.textContent('#ended-title'), 'This room is full');
    await cyd.page.screenshot({ path: path.join(ensureArtifacts(), 'room-full.png') });
    assert.match(await cyd.page.textContent('#ended-text'), /Try again when someone leaves/);
    assert.deepEqual((await tilesOf(ada)).filter((x) => !x.local).map((x) => x.name), ['Bob'], 'Cyd never appeared for Ada');

    // Guessing: this address (127.0.0.1, Bob's too) has 2 failed joins; after the allowance of 5 it backs off
    // and the page says so, with the wait, instead of offering yet another try.
    const dan = await prejoin('Dan', 'guess-0');
    let tries = 1;
    for (;;) {
      const outcome = await waitFor(() => dan.page.evaluate(() => {
        if (window.peercall.phase() === 'ended') return 'ended';
        return document.querySelector('#prejoin-error').textContent ? 'refused' : null;
      }), { timeout: 10_000, what: 'Dan to be refused' });
      if (outcome === 'ended') break;
      assert.equal(await dan.page.textContent('#prejoin-error'), 'That password is not right for this room.');
      assert.ok(tries < 12, 'the back-off started');
      await dan.page.evaluate(() => { document.querySelector('#prejoin-error').textContent = ''; });
      await attempt(dan, `guess-${tries++}`);
    }
    assert.ok(tries >= 4, `three more wrong guesses were answered before the back-off (${tries} tries)`);
    assert.equal(await dan.page.textContent('#ended-title'), 'Too many attempts');
    assert.match(await dan.page.textContent('#ended-text'), /too many failed joins from your address: try again in \d+ s/);
    await dan.page.screenshot({ path: path.join(ensureArtifacts(), 'too-many-joins.png') });
    assert.deepEqual(people.flatMap((p) => p.errors), [], 'no page errors');
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
