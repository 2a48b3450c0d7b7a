// Accessible and keyboard-first (issue 15 item 8): axe-core finds no serious or critical violations on the landing,
// pre-join and call screens at desktop and phone sizes (the call with its panels and dialogs open too), and every
// control of the call screen is reachable with Tab.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { Cleanup, DESKTOP, PHONE, describe, join, launchBrowser, startServer, uniqueRoom, waitConnected, waitFor } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');

/** Serious and critical axe violations on the page as it is now: [{id, impact, help, targets}]. */
async function violations(page) {
  // Evaluated through the DevTools protocol: the page's Content-Security-Policy (no inline scripts) stays as it is.
  await page.evaluate(`${AXE}\n;0`);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }));
  });
}

async function check(page, where, found) {
  const list = await violations(page);
  for (const v of list) found.push(`${where}: ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
}

test('axe-core: no serious or critical violations; every call control reachable by keyboard', { timeout: 180_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const found = [];
  const room = uniqueRoom('a11y');
  const people = [];
  try {
    for (const [label, viewport, mobile] of [['desktop', DESKTOP, false], ['phone', PHONE, true]]) {
      const context = await browser.newContext({ viewport, isMobile: mobile, hasTouch: mobile, permissions: ['camera', 'microphone'] });
      cleanup.add(() => context.close());
      const page = await context.newPage();
      await page.goto(`${server.url}/`);
      await check(page, `landing (${label})`, found);
      await page.goto(`${server.url}/r/${room}`);
      await page.waitForSelector('#prejoin:not([hidden])');
      await check(page, `pre-join (${label})`, found);
    }

    const ada = await join(browser, server, room, 'Ada');
    const bob = await join(browser, server, room, 'Bob', { viewport: PHONE, mobile: true });
    people.push(ada, bob);
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    for (const p of people) {
      const label = p === ada ? 'desktop' : 'phone';
      await check(p.page, `call (${label})`, found);
      for (const tab of ['chat', 'people', 'files', 'stats']) {
        await p.page.evaluate((name) => document.querySelector(`#tab-${name}`) && document.querySelector('#side').hidden
          ? document.querySelector('#ctl-chat').click() : null, tab);
        await p.page.click(`#tab-${tab}`);
        await check(p.page, `call, ${tab} panel (${label})`, found);
      }
      await p.page.click('#side-close');
      await p.page.click('#ctl-settings');
      await check(p.page, `call, settings (${label})`, found);
      await p.page.click('#set-save');
    }
    await ada.page.click('#top-copy');
    await waitFor(() => ada.page.evaluate(() => document.querySelector('#invite-qr').complete), { timeout: 5000, what: 'the invite dialog' });
    await check(ada.page, 'call, invite (desktop)', found);
    await ada.page.keyboard.press('Escape');
    await ada.page.evaluate(() => document.activeElement?.blur());
    await ada.page.keyboard.press('Shift+Slash');
    await check(ada.page, 'call, shortcuts (desktop)', found);
    await ada.page.keyboard.press('Escape');
    assert.deepEqual(found, [], `axe-core found serious or critical violations:\n${found.join('\n')}`);

    // Keyboard: Tab from the top of the page reaches every visible control of the call screen, with the side panel
    // closed and with the Files panel (a select and a button of its own) open.
    for (const panel of [null, 'files']) {
      if (panel) await ada.page.click(`#ctl-${panel}`);
      const controls = await ada.page.evaluate(() => [...document.querySelectorAll('#call button, #call a[href], #call select, #call input')]
        .filter((el) => el.getClientRects().length > 0 && !el.closest('[hidden]') && !el.disabled)
        .map((el) => el.id || el.getAttribute('aria-label') || el.textContent.trim()));
      await ada.page.evaluate(() => document.activeElement?.blur());
      const reached = new Set();
      for (let i = 0; i < 80; i++) {
        await ada.page.keyboard.press('Tab');
        const id = await ada.page.evaluate(() => {
          const el = document.activeElement;
          return el && el !== document.body ? (el.id || el.getAttribute('aria-label') || el.textContent.trim()) : null;
        });
        if (id) reached.add(id);
      }
      const missed = controls.filter((c) => !reached.has(c));
      assert.deepEqual(missed, [], `${panel ?? 'no'} panel: controls Tab never reaches: ${missed.join(', ')}`);
      t.diagnostic(`${panel ?? 'no'} panel: ${controls.length} controls, all reachable with Tab`);
    }
    assert.deepEqual(people.flatMap((p) => p.errors), [], 'no page errors');
  } catch (e) {
    for (const p of people) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
