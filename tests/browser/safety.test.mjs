// Safety codes (web/js/safety.js): both ends of a call show the same code, derived from the DTLS certificates of
// the connection in use; marking it verified shows on the tile and survives nothing but this session.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, join, launchBrowser, startServer, statsOf, uniqueRoom, waitConnected, waitFor } from './harness.mjs';
import { safetyCode } from '../../web/js/safety.js';

/** The safety code shown in `participant`'s connection panel for the peer `peerId`. */
function shownCode(participant, peerId) {
  return participant.page.evaluate((id) => {
    const card = document.querySelector(`#stats-cards .stats-card[data-peer="${id}"]`);
    return card?.querySelector('.safety-code')?.textContent.replace(/\s+/g, '') ?? null;
  }, peerId);
}

test('both ends show the same safety code; marking it verified shows on the tile', { timeout: 90_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const server = await startServer();
  cleanup.add(() => server.kill());
  const browser = await launchBrowser();
  cleanup.add(() => browser.close());
  const room = uniqueRoom('safety');
  const ada = await join(browser, server, room, 'Ada');
  const bob = await join(browser, server, room, 'Bob');
  try {
    await waitConnected(ada, 'Bob');
    await waitConnected(bob, 'Ada');
    const codeOf = (viewer, name) => waitFor(async () => {
      const peer = (await viewer.page.evaluate(() => window.peercall.peers())).find((p) => p.name === name);
      return peer?.safety?.code ?? null;
    }, { timeout: 10_000, what: `${viewer.name}'s safety code with ${name}` });
    const atAda = await codeOf(ada, 'Bob');
    const atBob = await codeOf(bob, 'Ada');
    assert.match(atAda, /^\d{5}( \d{5}){5}$/, 'six groups of five digits');
    assert.equal(atAda, atBob, 'Ada and Bob see the same code');

    // It is the code of the DTLS session in use: Ada's certificate is the one Bob's transport sees as remote.
    const adaStats = await statsOf(ada, bob.id);
    const bobStats = await statsOf(bob, ada.id);
    assert.deepEqual(adaStats.localCertificate, bobStats.remoteCertificate);
    assert.deepEqual(adaStats.remoteCertificate, bobStats.localCertificate);
    assert.equal((await safetyCode(adaStats.localCertificate, adaStats.remoteCertificate)).code, atAda);

    // Shown in the connection panel, the same digits on both screens.
    for (const p of [ada, bob]) await p.page.click('#ctl-stats');
    const shownAda = await waitFor(() => shownCode(ada, bob.id), { timeout: 5000, what: 'the code in Ada\'s panel' });
    const shownBob = await waitFor(() => shownCode(bob, ada.id), { timeout: 5000, what: 'the code in Bob\'s panel' });
    assert.equal(shownAda, atAda.replace(/ /g, ''));
    assert.equal(shownAda, shownBob);

    // Ada marks Bob verified: the card and Bob's tile on Ada's stage say so; Bob's side is unchanged.
    await ada.page.click(`#stats-cards .stats-card[data-peer="${bob.id}"] .safety-verify`);
    await waitFor(() => ada.page.evaluate((id) =>
      document.querySelector(`#stats-cards .stats-card[data-peer="${id}"] .safety`)?.dataset.state === 'verified'
      && document.querySelector(`#stage .tile[data-peer="${id}"]`)?.dataset.safety === 'verified', bob.id),
    { timeout: 5000, what: 'Ada to show Bob as verified' });
    assert.equal(await ada.page.isVisible(`#stage .tile[data-peer="${bob.id}"] .tile-verified`), true);
    assert.equal((await bob.page.evaluate(() => window.peercall.peers()))[0].safety.verified, false);
    const stored = await ada.page.evaluate(() => JSON.parse(sessionStorage.getItem('peercall.verifiedCodes')));
    assert.deepEqual(stored, [atAda], 'kept in this tab\'s session storage, by code (that is, by certificate pair)');
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    for (const p of [ada, bob]) e.message += `\n${await describe(p)}`;
    throw e;
  }
});
