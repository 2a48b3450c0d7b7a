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
 * Fills `container` with one card per participant: [{id, name, connectionState, stats}], stats being the last
 * summary (or null).
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
  container.replaceChildren(...participants.map(({ id, name, connectionState, stats }) =>
    h('section', { class: 'stats-card', dataset: { peer: id } },
      h('header', { class: 'stats-head' },
        h('span', { class: 'avatar avatar-sm', style: `--hue:${hueOf(name)}` }, (name[0] ?? '?').toUpperCase()),
        h('strong', {}, name),
        h('span', { class: `chip chip-${connectionState}` }, connectionState)),
      h('dl', { class: 'kv' }, ...statsLines(stats).map(([k, v, cls]) => kv(k, v, cls))),
      h('div', { class: 'fps' },
        fingerprint('Your fingerprint', stats?.localCertificate),
        fingerprint(`${name}'s fingerprint`, stats?.remoteCertificate)))));
}
