// TURN over TLS on the HTTPS port: one TLS port serves the web client, signaling and TURN. A browser that may use
// only the relay (iceTransportPolicy "relay") and only the turns: URL of the HTTPS port — as behind a firewall
// that lets nothing out but HTTPS — loads the page from that port and relays a call through it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cleanup, describe, freePort, join, launchBrowser, sleep, startServer, uniqueRoom, waitConnected, waitMediaFlowing } from './harness.mjs';

/** Page script: every RTCPeerConnection gets iceTransportPolicy "relay" and, of the iceServers signaling hands
 *  out, only the URLs starting with `prefix` (credentials kept). What signaling handed out stays readable through
 *  the test hook (window.peercall.iceServers()). */
function onlyUrl(prefix) {
  return `(() => {
    const prefix = ${JSON.stringify(prefix)};
    const narrow = (config) => ({
      ...(config ?? {}),
      iceTransportPolicy: 'relay',
      iceServers: ((config ?? {}).iceServers ?? [])
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.startsWith(prefix)) }))
        .filter((s) => s.urls.length > 0),
    });
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(config, ...rest) { super(narrow(config), ...rest); }
      setConfiguration(config) { return super.setConfiguration(narrow(config)); }
    };
  })();`;
}

async function metric(metricsPort, prefix) {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(prefix)).reduce((n, l) => n + Number(l.split(/\s+/).pop()), 0);
}

test('a relay-only browser with only turns: on the HTTPS port relays a call through it', { timeout: 120_000 }, async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const metricsPort = await freePort();
  // --tls-self-signed and no certificate files: there is no TURNS port, TURN over TLS exists only on the HTTPS port.
  const server = await startServer({ tls: true, extraArgs: ['--tls-self-signed', '--metrics-listen', `127.0.0.1:${metricsPort}`] });
  cleanup.add(() => server.kill());
  const browser = await launchBrowser({ extraArgs: ['--ignore-certificate-errors'] });
  cleanup.add(() => browser.close());
  const room = uniqueRoom('turns443');
  const only = `turns:127.0.0.1:${server.httpPort}?transport=tcp`;

  // The page comes from the HTTPS port, signaling too (wss on it); media may use only the turns: URL on it.
  const ada = await join(browser, server, room, 'Ada', { relay: true, init: onlyUrl(only) });
  const bob = await join(browser, server, room, 'Bob', { relay: true, init: onlyUrl(only) });
  try {
    assert.ok(ada.page.url().startsWith(`https://127.0.0.1:${server.httpPort}/`), ada.page.url());
    const iceServers = await ada.page.evaluate(() => window.peercall.iceServers());
    const urls = iceServers.flatMap((s) => [].concat(s.urls));
    assert.ok(urls.includes(only), `signaling hands out the HTTPS port's turns: URL: ${JSON.stringify(urls)}`);
    assert.ok(urls.includes(`turn:127.0.0.1:${server.turnPort}?transport=udp`), JSON.stringify(urls));

    await waitConnected(ada, 'Bob', { timeout: 30_000 });
    await waitConnected(bob, 'Ada', { timeout: 30_000 });
    await waitMediaFlowing(ada, bob.id);
    await waitMediaFlowing(bob, ada.id);
    for (const [viewer, other] of [[ada, bob], [bob, ada]]) {
      const { pair } = await viewer.page.evaluate((id) => window.peercall.stats(id), other.id);
      assert.equal(pair?.local?.type, 'relay', `${viewer.name}'s local candidate: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.relayProtocol, 'tls', `${viewer.name} reaches the relay over TLS: ${JSON.stringify(pair)}`);
      assert.equal(pair.local.url, only, `${viewer.name} allocated through the HTTPS port: ${JSON.stringify(pair)}`);
    }
    // TURN serves these as TLS connections (the caps and metrics of the TURNS port), and media goes through it.
    assert.ok((await metric(metricsPort, 'peercall_turn_stream_connections')) >= 2, 'two TURN connections over the HTTPS port');
    const before = await metric(metricsPort, 'peercall_turn_relayed_bytes_total');
    await sleep(1500);
    const after = await metric(metricsPort, 'peercall_turn_relayed_bytes_total');
    t.diagnostic(`TURN relayed ${Math.round((after - before) / 1.5 / 1000)} kB/s through the HTTPS port`);
    assert.ok(after - before > 50_000, `TURN relayed ${after - before} bytes in 1.5 s`);
    assert.deepEqual([...ada.errors, ...bob.errors], [], 'no page errors');
  } catch (e) {
    e.message += `\n${await describe(ada)}\n${await describe(bob)}\n--- server ---\n${server.logs().slice(-3000)}`;
    throw e;
  }
});
