// The connection panel: one card per participant with the route, candidates, round trip, bitrates, loss, codecs
// and DTLS fingerprints, from the summaries stats.js makes of getStats(). The wording of each line is a pure
// function (unit-tested in tests/web/stats.test.mjs); renderStatsCards only builds the elements.

import { h, formatBitrate } from './util.js';
import { hueOf } from './names.js';
import { describeRoute } from './stats.js';

/** "203.0.113.7:3478", "[2001:db8::1]:3478": an address and port as one would type them. */
export function hostPort(c) {
  return `${String(c.address ?? '?').includes(':') ? `[${c.address}]` : (c.address ?? '?')}:${c.port ?? '?'}`;
}

/** "relay · udp (relay over tcp) · 127.0.0.1:50000", or "—" when there is no candidate. */
export function describeCandidate(c) {
  return c ? `${c.type} · ${c.protocol}${c.relayProtocol ? ` (relay over ${c.relayProtocol})` : ''} · ${hostPort(c)}` : '—';
}

/** The label/value lines of one card, from a summary (null before the first getStats answered). */
export function statsLines(s) {
  const ms = (x) => (x === null || x === undefined ? '—' : `${Math.round(x * 1000)} ms`);
  const pct = (p) => (p === null || p === undefined ? '—' : `${p.toFixed(p < 1 ? 2 : 1)} %`);
  const pair = s?.pair;
  const video = s?.videoIn?.frameWidth ? `${s.videoIn.frameWidth}×${s.videoIn.frameHeight} @ ${Math.round(s.videoIn.framesPerSecond ?? 0)} fps` : '—';
  const codecs = [s?.audioIn?.codec, s?.videoIn?.codec].filter(Boolean).join(', ') || '—';
  const sendCodecs = [s?.audioOut?.codec, s?.videoOut?.codec].filter(Boolean).join(', ') || '—';
  return [
    ['Route', pair ? describeRoute(pair) : 'Not connected yet', pair?.local?.type === 'relay' || pair?.remote?.type === 'relay' ? 'warn' : 'ok'],
    ['Local candidate', describeCandidate(pair?.local), 'mono'],
    ['Remote candidate', describeCandidate(pair?.remote), 'mono'],
    ['Round trip', ms(pair?.rtt)],
    ['Sending', s?.sendBitrate === null || !s ? '—' : formatBitrate(s.sendBitrate)],
    ['Receiving', s?.recvBitrate === null || !s ? '—' : formatBitrate(s.recvBitrate)],
    ['Packet loss', `in ${pct(s?.recentLossPercent ?? s?.inboundLossPercent)} · out ${pct(s?.outboundLossPercent)}`],
    ['Video in', video],
    ['Codecs in', codecs],
    ['Codecs out', sendCodecs],
    ['Encryption', s?.dtlsState ? `DTLS ${s.dtlsState}${s.tlsVersion ? ` (${s.tlsVersion})` : ''}${s.srtpCipher ? ` · ${s.srtpCipher}` : ''}` : '—'],
  ];
}

/**
 * The safety-code block of a card (web/js/safety.js): the code in groups, whether it is verified, a warning when
 * it changed during the call, and the button that marks it verified (or takes that back).
 * `safety`: SafetyBook.status() or null; `onVerify(verified)`: the button's action.
 */
function safetyBlock(name, safety, onVerify) {
  if (!safety) {
    return h('div', { class: 'safety', dataset: { state: 'pending' } },
      h('div', { class: 'fp-label' }, 'Safety code'),
      h('p', { class: 'muted small' }, 'Appears when the encrypted connection is up.'));
  }
  const state = safety.verified ? 'verified' : safety.changed ? 'changed' : 'unverified';
  return h('div', { class: 'safety', dataset: { state } },
    h('div', { class: 'fp-label' }, 'Safety code',
      safety.verified ? h('span', { class: 'safety-badge' }, ' · verified') : null),
    h('code', { class: 'safety-code', 'aria-label': `Safety code ${safety.code}` },
      ...safety.code.split(' ').map((g) => h('span', {}, g))),
    safety.changed
      ? h('p', { class: 'notice notice-warn safety-warning', role: 'alert' },
        safety.changedWhileVerified
          ? `The safety code with ${name} changed during the call, and the old one was verified. Compare the new code again before you trust this connection.`
          : `The safety code with ${name} changed during the call (new certificates). Compare it again.`)
      : null,
    h('p', { class: 'muted small' }, safety.verified
      ? `You confirmed that ${name} sees this same code.`
      : `Read it to ${name} over another channel (in person, by phone). When ${name} sees the same digits, nobody is in between.`),
    h('button', {
      type: 'button',
      class: `btn btn-sm ${safety.verified ? 'btn-ghost' : 'btn-primary'} safety-verify`,
      dataset: { focus: `verify:${name}` },
      onclick: () => onVerify?.(!safety.verified),
    }, safety.verified ? 'Mark as not verified' : `Mark ${name} as verified`));
}

/**
 * Fills `container` with one card per participant: [{id, name, connectionState, stats, safety, onVerify}], stats
 * being the last summary (or null), safety the safety-code status (or null).
 */
export function renderStatsCards(container, participants) {
  if (participants.length === 0) {
    container.replaceChildren(h('p', { class: 'muted' }, 'Nobody else is here yet.'));
    return;
  }
  const kv = (k, v, cls = '') => [h('dt', {}, k), h('dd', { class: cls }, v ?? '—')];
  const fingerprint = (label, c) => h('div', { class: 'fp' },
    h('div', { class: 'fp-label' }, label, c ? h('span', { class: 'muted' }, ` ${c.algorithm}`) : null),
    h('code', { class: 'fp-value' }, c?.fingerprint ?? 'not yet negotiated'));
  container.replaceChildren(...participants.map(({ id, name, connectionState, stats, safety, onVerify }) =>
    h('section', { class: 'stats-card', dataset: { peer: id } },
      h('header', { class: 'stats-head' },
        h('span', { class: 'avatar avatar-sm', style: `--hue:${hueOf(name)}` }, (name[0] ?? '?').toUpperCase()),
        h('strong', {}, name),
        h('span', { class: `chip chip-${connectionState}` }, connectionState)),
      safetyBlock(name, safety, onVerify),
      h('dl', { class: 'kv' }, ...statsLines(stats).map(([k, v, cls]) => kv(k, v, cls))),
      h('div', { class: 'fps' },
        fingerprint('Your fingerprint', stats?.localCertificate),
        fingerprint(`${name}'s fingerprint`, stats?.remoteCertificate)))));
}
