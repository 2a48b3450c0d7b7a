// getStats summaries (web/js/stats.js) and the connection panel's wording (web/js/stats-panel.js), from fixtures
// shaped like Chromium's RTCStatsReport (a Map of id → stats object: forEach gives the values).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summarize, describeRoute, quality } from '../../web/js/stats.js';
import { hostPort, describeCandidate, statsLines } from '../../web/js/stats-panel.js';

const report = (...stats) => new Map(stats.map((s) => [s.id, s]));

/** A relayed call one second in: transport, selected pair, candidates, certificates, codecs, RTP streams. */
function relayedCall({ t = 1000, bytesSent = 100_000, bytesReceived = 200_000, audioLost = 2, audioReceived = 98, videoLost = 0, videoReceived = 900 } = {}) {
  return report(
    { id: 'T01', type: 'transport', timestamp: t, bytesSent, bytesReceived, selectedCandidatePairId: 'CP1', dtlsState: 'connected', iceState: 'connected',
      dtlsRole: 'client', tlsVersion: 'FEFD', dtlsCipher: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', srtpCipher: 'AEAD_AES_128_GCM',
      localCertificateId: 'CFlocal', remoteCertificateId: 'CFremote' },
    { id: 'CP0', type: 'candidate-pair', timestamp: t, state: 'failed', nominated: false, localCandidateId: 'Lhost', remoteCandidateId: 'Rhost' },
    { id: 'CP1', type: 'candidate-pair', timestamp: t, state: 'succeeded', nominated: true, localCandidateId: 'Lrelay', remoteCandidateId: 'Rsrflx',
      currentRoundTripTime: 0.042, availableOutgoingBitrate: 1_500_000 },
    { id: 'Lrelay', type: 'local-candidate', candidateType: 'relay', protocol: 'udp', address: '127.0.0.1', port: 50_001, relayProtocol: 'tcp',
      url: 'turn:127.0.0.1:3478?transport=tcp' },
    { id: 'Rsrflx', type: 'remote-candidate', candidateType: 'srflx', protocol: 'udp', ip: '2001:db8::7', port: 61_000 },
    { id: 'Lhost', type: 'local-candidate', candidateType: 'host', protocol: 'udp', address: '10.0.0.2', port: 40_000 },
    { id: 'Rhost', type: 'remote-candidate', candidateType: 'host', protocol: 'udp', address: '10.0.0.3', port: 40_001 },
    { id: 'CFlocal', type: 'certificate', fingerprintAlgorithm: 'sha-256', fingerprint: 'AA:BB' },
    { id: 'CFremote', type: 'certificate', fingerprintAlgorithm: 'sha-256', fingerprint: 'CC:DD' },
    { id: 'COpus', type: 'codec', mimeType: 'audio/opus', clockRate: 48_000 },
    { id: 'CVP8', type: 'codec', mimeType: 'video/VP8', clockRate: 90_000 },
    { id: 'IA', type: 'inbound-rtp', kind: 'audio', codecId: 'COpus', packetsReceived: audioReceived, packetsLost: audioLost, bytesReceived: 9000,
      jitter: 0.003, totalSamplesReceived: 48_000, concealedSamples: 480, totalAudioEnergy: 0.5, audioLevel: 0.1 },
    { id: 'IV', type: 'inbound-rtp', kind: 'video', codecId: 'CVP8', packetsReceived: videoReceived, packetsLost: videoLost, bytesReceived: 190_000,
      framesDecoded: 30, framesPerSecond: 29.97, frameWidth: 640, frameHeight: 480, decoderImplementation: 'libvpx' },
    { id: 'OA', type: 'outbound-rtp', kind: 'audio', codecId: 'COpus', bytesSent: 8000 },
    { id: 'OV', type: 'outbound-rtp', kind: 'video', codecId: 'CVP8', bytesSent: 92_000, framesEncoded: 30, framesPerSecond: 30,
      frameWidth: 640, frameHeight: 480, qualityLimitationReason: 'bandwidth' },
    { id: 'RIA', type: 'remote-inbound-rtp', kind: 'audio', fractionLost: 0.01 },
    { id: 'RIV', type: 'remote-inbound-rtp', kind: 'video', fractionLost: 0.05 },
  );
}

test('summarize: the selected pair, its candidates, DTLS and certificates', () => {
  const s = summarize(relayedCall());
  assert.deepEqual(s.pair, {
    state: 'succeeded',
    rtt: 0.042,
    availableOutgoingBitrate: 1_500_000,
    local: { type: 'relay', protocol: 'udp', address: '127.0.0.1', port: 50_001, relayProtocol: 'tcp', url: 'turn:127.0.0.1:3478?transport=tcp' },
    remote: { type: 'srflx', protocol: 'udp', address: '2001:db8::7', port: 61_000, relayProtocol: null, url: null },
  });
  assert.equal(s.dtlsState, 'connected');
  assert.equal(s.srtpCipher, 'AEAD_AES_128_GCM');
  assert.deepEqual(s.localCertificate, { algorithm: 'sha-256', fingerprint: 'AA:BB' });
  assert.deepEqual(s.remoteCertificate, { algorithm: 'sha-256', fingerprint: 'CC:DD' });
});

test('summarize: codecs, media counters, loss both ways; no bitrates without a previous summary', () => {
  const s = summarize(relayedCall());
  assert.equal(s.audioIn.codec, 'opus 48 kHz');
  assert.equal(s.videoIn.codec, 'VP8 90 kHz');
  assert.equal(s.videoOut.codec, 'VP8 90 kHz');
  assert.equal(s.videoIn.frameWidth, 640);
  assert.equal(s.videoIn.decoder, 'libvpx');
  assert.equal(s.audioIn.totalSamplesReceived - s.audioIn.concealedSamples, 47_520);
  assert.equal(s.videoOut.qualityLimitationReason, 'bandwidth');
  assert.equal(s.packetsLost, 2);
  assert.equal(s.packetsReceived, 998);
  assert.equal(s.inboundLossPercent, 0.2);
  assert.equal(s.outboundLossPercent, 5, 'the worst remote-inbound fractionLost, in percent');
  assert.equal(s.recvBitrate, null);
  assert.equal(s.sendBitrate, null);
  assert.equal(s.recentLossPercent, null);
});

test('summarize: bitrates and recent loss against the previous summary', () => {
  const first = summarize(relayedCall());
  const second = summarize(relayedCall({ t: 3000, bytesSent: 350_000, bytesReceived: 200_000, audioLost: 12, audioReceived: 188 }), first);
  assert.equal(second.sendBitrate, ((350_000 - 100_000) * 8) / 2);
  assert.equal(second.recvBitrate, 0);
  // 10 lost and 90 received since last time.
  assert.equal(second.recentLossPercent, 10);
  // Counters that went backwards (a new connection) give no negative rates.
  const reset = summarize(relayedCall({ t: 4000, bytesSent: 10, bytesReceived: 10 }), second);
  assert.equal(reset.sendBitrate, 0);
  assert.equal(reset.recvBitrate, 0);
  // The same timestamp: no rate rather than a division by zero.
  assert.equal(summarize(relayedCall({ t: 4000 }), reset).sendBitrate, null);
});

test('summarize: without a selected pair, the nominated succeeded one; without a transport, bytes from RTP', () => {
  const s = summarize(report(
    { id: 'CP1', type: 'candidate-pair', timestamp: 5, state: 'succeeded', nominated: true, localCandidateId: 'L', remoteCandidateId: 'R' },
    { id: 'L', type: 'local-candidate', candidateType: 'host', protocol: 'udp', address: '10.0.0.2', port: 1 },
    { id: 'R', type: 'remote-candidate', candidateType: 'prflx', protocol: 'udp', address: '10.0.0.3', port: 2 },
    { id: 'I1', type: 'inbound-rtp', kind: 'audio', bytesReceived: 100, packetsReceived: 1 },
    { id: 'I2', type: 'inbound-rtp', kind: 'video', bytesReceived: 250, packetsReceived: 2 },
    { id: 'O1', type: 'outbound-rtp', kind: 'audio', bytesSent: 70 },
  ));
  assert.equal(s.pair.local.type, 'host');
  assert.equal(s.pair.remote.type, 'prflx');
  assert.equal(s.pair.rtt, null);
  assert.equal(s.bytesReceived, 350);
  assert.equal(s.bytesSent, 70);
  assert.equal(s.timestamp, 5);
  assert.equal(s.dtlsState, null);
  assert.equal(s.audioIn.codec, null, 'no codec entry');
});

test('summarize: an empty report (a connection not started) is all unknowns, not an error', () => {
  const s = summarize(report());
  assert.equal(s.pair, null);
  assert.equal(s.bytesSent, 0);
  assert.equal(s.inboundLossPercent, null);
  assert.equal(s.outboundLossPercent, null);
  assert.equal(s.audioIn, undefined);
  assert.equal(quality(s), null);
});

test('describeRoute: direct, through your router, relayed, in words then the candidate types', () => {
  const c = (type, protocol = 'udp', relayProtocol = null) => ({ type, protocol, relayProtocol });
  assert.equal(describeRoute({ local: c('host'), remote: c('host') }), 'Direct · host ↔ host');
  assert.equal(describeRoute({ local: c('srflx'), remote: c('host') }), 'Direct through your router · srflx ↔ host');
  assert.equal(describeRoute({ local: c('host', 'tcp'), remote: c('prflx', 'tcp') }), 'Direct through your router · host ↔ prflx');
  assert.equal(describeRoute({ local: c('relay', 'udp', 'tls'), remote: c('srflx') }), 'Relayed by the server (TLS) · relay ↔ srflx');
  assert.equal(describeRoute({ local: c('host'), remote: c('relay') }), "Relayed by the server (the other side's relay) · host ↔ relay");
  assert.equal(describeRoute(null), 'Not connected');
  assert.equal(describeRoute({ local: c('host') }), 'Not connected');
});

test('quality: 3 good, 2 fair, 1 poor, from round trip and the worse loss direction', () => {
  const q = (rtt, recentLossPercent = 0, outboundLossPercent = 0) => quality({ pair: { rtt }, recentLossPercent, outboundLossPercent });
  assert.equal(q(0.05), 3);
  assert.equal(q(0.31), 2);
  assert.equal(q(0.61), 1);
  assert.equal(q(0.05, 4), 2);
  assert.equal(q(0.05, 0, 11), 1);
  assert.equal(q(null), 3, 'unknown round trip alone is not bad');
  assert.equal(quality(summarize(relayedCall())), 2, 'the fixture loses 5 % outbound');
});

test('panel wording: candidates and addresses as one would type them', () => {
  assert.equal(hostPort({ address: '127.0.0.1', port: 3478 }), '127.0.0.1:3478');
  assert.equal(hostPort({ address: '2001:db8::1', port: 3478 }), '[2001:db8::1]:3478');
  assert.equal(hostPort({}), '?:?');
  assert.equal(describeCandidate(null), '—');
  const s = summarize(relayedCall());
  assert.equal(describeCandidate(s.pair.local), 'relay · udp (relay over tcp) · 127.0.0.1:50001');
  assert.equal(describeCandidate(s.pair.remote), 'srflx · udp · [2001:db8::7]:61000');
});

test('panel wording: every line of a card, before and after stats arrive', () => {
  const empty = Object.fromEntries(statsLines(null).map(([k, v]) => [k, v]));
  assert.equal(empty.Route, 'Not connected yet');
  assert.equal(empty['Packet loss'], 'in — · out —');
  for (const key of ['Local candidate', 'Round trip', 'Sending', 'Receiving', 'Video in', 'Codecs in', 'Encryption']) {
    assert.equal(empty[key], '—', key);
  }
  const first = summarize(relayedCall());
  const second = summarize(relayedCall({ t: 2000, bytesSent: 2_600_000, bytesReceived: 300_000 }), first);
  const lines = statsLines(second);
  const byKey = Object.fromEntries(lines.map(([k, v]) => [k, v]));
  assert.equal(byKey.Route, 'Relayed by the server (TCP) · relay ↔ srflx');
  assert.equal(lines.find(([k]) => k === 'Route')[2], 'warn', 'a relayed route is flagged');
  assert.equal(byKey['Round trip'], '42 ms');
  assert.equal(byKey.Sending, '20.00 Mbit/s');
  assert.equal(byKey.Receiving, '800 kbit/s');
  assert.equal(byKey['Packet loss'], 'in 0.20 % · out 5.0 %');
  assert.equal(byKey['Video in'], '640×480 @ 30 fps');
  assert.equal(byKey['Codecs in'], 'opus 48 kHz, VP8 90 kHz');
  assert.equal(byKey.Encryption, 'DTLS connected (FEFD) · AEAD_AES_128_GCM');
});

test('qualityDetail: round trip and loss for the tile tooltip', async () => {
  const { qualityDetail } = await import('../../web/js/stats.js');
  assert.equal(qualityDetail(null), '');
  assert.equal(qualityDetail({ pair: { rtt: 0.0484 }, recentLossPercent: 0.42, outboundLossPercent: null }), '48 ms round trip · 0.4 % loss');
  assert.equal(qualityDetail({ pair: { rtt: null }, recentLossPercent: 12.3, outboundLossPercent: 2 }), '12 % loss');
});
