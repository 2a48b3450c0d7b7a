// Audio and devices (issue 15 item 7): push-to-talk on the space bar, microphone processing toggles in Settings,
// speaker choice where the browser supports setSinkId, and the shortcuts behind "?".

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, join, launchBrowser, sleep, startServer, statsOf, tilesOf, uniqueRoom, waitConnected, waitFor, waitMediaFlowing } from './harness.mjs';

const micShown = async (viewer, peerId) => (await tilesOf(viewer)).find((x) => x.peer === peerId)?.mic;
const local = (p) => p.page.evaluate(() => window.peercall.local());

test('push-to-talk, processing toggles, speaker choice, shortcuts', { timeout: 150_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('audio');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    await waitMediaFlowing(bob, ada.id);
    const energy = async () => (await statsOf(bob, ada.id))?.audioIn?.totalAudioEnergy ?? 0;
    const hears = async () => {
      const a = await energy();
      await sleep(1200);
      return (await energy()) - a > 0;
    };

    // --- Push-to-talk: muted Ada holds the space bar and is heard; releases and is muted again.
    await ada.page.click('#ctl-mic');
    await waitFor(async () => (await micShown(bob, ada.id)) === 'off', { timeout: 5000, what: 'Bob to see Ada muted' });
    await ada.page.evaluate(() => document.activeElement?.blur());
    await ada.page.keyboard.down('Space');
    await waitFor(async () => (await local(ada)).micOn, { timeout: 3000, what: 'Ada unmuted while holding space' });
    assert.equal((await local(ada)).pushToTalk, true);
    await waitFor(async () => (await micShown(bob, ada.id)) === 'on', { timeout: 5000, what: 'Bob to see Ada talking' });
    await waitFor(hears, { timeout: 10_000, interval: 0, what: 'Bob to hear Ada while she holds space' });
    await ada.page.keyboard.up('Space');
    await waitFor(async () => !(await local(ada)).micOn, { timeout: 3000, what: 'Ada muted again on release' });
    await waitFor(async () => (await micShown(bob, ada.id)) === 'off', { timeout: 5000, what: 'Bob to see Ada muted again' });
    // In a text field the space bar types a space.
    await ada.page.click('#ctl-chat');
    await ada.page.focus('#chat-input');
    await ada.page.keyboard.press('Space');
    assert.equal((await local(ada)).micOn, false, 'no push-to-talk while typing');
    assert.equal(await ada.page.inputValue('#chat-input'), ' ');
    await ada.page.fill('#chat-input', '');
    await ada.page.click('#ctl-mic'); // unmuted for what follows
    await waitFor(async () => (await micShown(bob, ada.id)) === 'on', { timeout: 5000, what: 'Ada unmuted' });

    // --- Processing: noise suppression off in Settings: the microphone reopens with it off, Bob still hears Ada.
    const before = await local(ada);
    assert.deepEqual(before.processing, { echoCancellation: true, noiseSuppression: true, autoGainControl: true });
    await ada.page.click('#ctl-settings');
    assert.equal(await ada.page.isChecked('#set-ns'), true);
    await ada.page.uncheck('#set-ns');
    await waitFor(async () => (await local(ada)).trackSettings?.noiseSuppression === false,
      { timeout: 5000, what: 'the microphone track to run without noise suppression' });
    const after = await local(ada);
    assert.equal(after.trackSettings.echoCancellation, true, 'the others stay on');
    assert.deepEqual(await ada.page.evaluate(() => JSON.parse(localStorage.getItem('peercall.audioProcessing'))),
      { echoCancellation: true, noiseSuppression: false, autoGainControl: true }, 'remembered');
    await waitFor(hears, { timeout: 10_000, interval: 0, what: 'Bob to hear Ada\'s new microphone track' });

    // --- Speaker: where setSinkId exists and the browser lists outputs, the choice routes every remote's audio.
    const speakers = await ada.page.evaluate(() => ({
      supported: 'setSinkId' in HTMLMediaElement.prototype,
      shown: !document.querySelector('#set-speaker-field').hidden,
      options: [...document.querySelectorAll('#set-speaker-select option')].map((o) => o.value),
    }));
    console.log(`speaker choice: ${JSON.stringify(speakers)}`);
    assert.equal(speakers.supported, true, 'Chromium has setSinkId');
    if (speakers.shown && speakers.options.length > 0) {
      const pick = speakers.options.at(-1);
      await ada.page.selectOption('#set-speaker-select', pick);
      await waitFor(async () => (await ada.page.evaluate(() => window.peercall.sinkIds()))[0] === pick,
        { timeout: 5000, what: `Bob's audio on speaker ${pick}` });
    }
    await ada.page.click('#set-save');

    // --- "?" lists the shortcuts.
    await ada.page.evaluate(() => document.activeElement?.blur());
    await ada.page.keyboard.press('Shift+Slash');
    await waitFor(() => ada.page.evaluate(() => document.querySelector('#shortcuts').open), { timeout: 3000, what: 'the shortcuts dialog' });
    const listed = await ada.page.evaluate(() => [...document.querySelectorAll('#shortcut-list dd')].map((d) => d.textContent));
    assert.ok(listed.some((x) => /Microphone/.test(x)) && listed.some((x) => /chat/.test(x)) && listed.some((x) => /Leave/.test(x)) && listed.some((x) => /Camera/.test(x)), listed.join(' | '));
    await ada.page.keyboard.press('Escape');
    // Ctrl+Alt+C opens the chat.
    await ada.page.click('#side-close');
    await ada.page.keyboard.press('Control+Alt+KeyC');
    await waitFor(() => ada.page.evaluate(() => !document.querySelector('#chat-panel').hidden && !document.querySelector('#side').hidden),
      { timeout: 3000, what: 'Ctrl+Alt+C to open the chat' });
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    for (const p of [ada, bob]) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
