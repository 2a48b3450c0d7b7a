// Turns an RTCStatsReport into what the connection panel shows (and the browser tests read).

/**
 * @param {RTCStatsReport} report
 * @param {object|null} previous   the summary returned last time for this connection (for bitrates)
 * @returns {object} summary
 */
export function summarize(report, previous = null) {
  const byId = new Map();
  const all = [];
  report.forEach((s) => {
    byId.set(s.id, s);
    all.push(s);
  });
  const codecOf = (s) => {
    const c = s && byId.get(s.codecId);
    return c ? `${c.mimeType.replace(/^(audio|video)\//, '')}${c.clockRate ? ` ${c.clockRate / 1000} kHz` : ''}` : null;
  };

  // Transport and the candidate pair in use.
  // The DTLS session in use first (connected, both certificates known): a report can also hold a transport that
  // has a selected pair but no DTLS session yet, whose missing certificates would leave the safety code blank.
  const transports = all.filter((s) => s.type === 'transport');
  const transport = transports.find((s) => s.dtlsState === 'connected' && s.remoteCertificateId && s.localCertificateId)
    ?? transports.find((s) => s.selectedCandidatePairId) ?? transports[0];
  let pair = transport?.selectedCandidatePairId ? byId.get(transport.selectedCandidatePairId) : null;
  pair ??= all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') ?? null;
  const candidate = (s) =>
    s && {
      type: s.candidateType,
      protocol: s.protocol,
      address: s.address ?? s.ip,
      port: s.port,
      relayProtocol: s.relayProtocol ?? null,
      url: s.url ?? null,
    };
  const local = candidate(pair && byId.get(pair.localCandidateId));
  const remote = candidate(pair && byId.get(pair.remoteCandidateId));

  const certificate = (id) => {
    const c = id && byId.get(id);
    return c ? { algorithm: c.fingerprintAlgorithm, fingerprint: c.fingerprint } : null;
  };

  const inbound = all.filter((s) => s.type === 'inbound-rtp');
  const outbound = all.filter((s) => s.type === 'outbound-rtp');
  const audioIn = inbound.find((s) => s.kind === 'audio');
  const videoIn = inbound.find((s) => s.kind === 'video');
  const audioOut = outbound.find((s) => s.kind === 'audio');
  const videoOut = outbound.find((s) => s.kind === 'video');
  const remoteInbound = all.filter((s) => s.type === 'remote-inbound-rtp');

  const bytesReceived = transport?.bytesReceived ?? inbound.reduce((n, s) => n + (s.bytesReceived ?? 0), 0);
  const bytesSent = transport?.bytesSent ?? outbound.reduce((n, s) => n + (s.bytesSent ?? 0), 0);
  const timestamp = transport?.timestamp ?? all[0]?.timestamp ?? performance.now();
  let recvBitrate = null;
  let sendBitrate = null;
  if (previous && timestamp > previous.timestamp) {
    const dt = (timestamp - previous.timestamp) / 1000;
    recvBitrate = Math.max(0, ((bytesReceived - previous.bytesReceived) * 8) / dt);
    sendBitrate = Math.max(0, ((bytesSent - previous.bytesSent) * 8) / dt);
  }

  const lost = inbound.reduce((n, s) => n + Math.max(0, s.packetsLost ?? 0), 0);
  const received = inbound.reduce((n, s) => n + (s.packetsReceived ?? 0), 0);
  const remoteLoss = remoteInbound.length
    ? Math.max(...remoteInbound.map((s) => s.fractionLost ?? 0)) * 100
    : null;

  return {
    timestamp,
    bytesReceived,
    bytesSent,
    recvBitrate,
    sendBitrate,
    dtlsState: transport?.dtlsState ?? null,
    iceState: transport?.iceState ?? null,
    dtlsRole: transport?.dtlsRole ?? null,
    tlsVersion: transport?.tlsVersion ?? null,
    dtlsCipher: transport?.dtlsCipher ?? null,
    srtpCipher: transport?.srtpCipher ?? null,
    localCertificate: certificate(transport?.localCertificateId),
    remoteCertificate: certificate(transport?.remoteCertificateId),
    pair: pair
      ? {
          state: pair.state,
          rtt: pair.currentRoundTripTime ?? null,
          availableOutgoingBitrate: pair.availableOutgoingBitrate ?? null,
          local,
          remote,
        }
      : null,
    packetsLost: lost,
    packetsReceived: received,
    inboundLossPercent: lost + received > 0 ? (lost * 100) / (lost + received) : null,
    recentLossPercent: recentLoss(previous, lost, received),
    outboundLossPercent: remoteLoss,
    audioIn: audioIn && {
      codec: codecOf(audioIn),
      packetsReceived: audioIn.packetsReceived ?? 0,
      packetsLost: audioIn.packetsLost ?? 0,
      bytesReceived: audioIn.bytesReceived ?? 0,
      jitter: audioIn.jitter ?? null,
      totalSamplesReceived: audioIn.totalSamplesReceived ?? 0,
      concealedSamples: audioIn.concealedSamples ?? 0,
      totalAudioEnergy: audioIn.totalAudioEnergy ?? 0,
      audioLevel: audioIn.audioLevel ?? 0,
    },
    videoIn: videoIn && {
      codec: codecOf(videoIn),
      packetsReceived: videoIn.packetsReceived ?? 0,
      packetsLost: videoIn.packetsLost ?? 0,
      bytesReceived: videoIn.bytesReceived ?? 0,
      framesDecoded: videoIn.framesDecoded ?? 0,
      framesPerSecond: videoIn.framesPerSecond ?? null,
      frameWidth: videoIn.frameWidth ?? null,
      frameHeight: videoIn.frameHeight ?? null,
      decoder: videoIn.decoderImplementation ?? null,
    },
    audioOut: audioOut && { codec: codecOf(audioOut), bytesSent: audioOut.bytesSent ?? 0 },
    videoOut: videoOut && {
      codec: codecOf(videoOut),
      bytesSent: videoOut.bytesSent ?? 0,
      framesEncoded: videoOut.framesEncoded ?? 0,
      framesPerSecond: videoOut.framesPerSecond ?? null,
      frameWidth: videoOut.frameWidth ?? null,
      frameHeight: videoOut.frameHeight ?? null,
      qualityLimitationReason: videoOut.qualityLimitationReason ?? null,
    },
  };
}

function recentLoss(previous, lost, received) {
  if (!previous) return null;
  const dLost = lost - (previous.packetsLost ?? 0);
  const dReceived = received - (previous.packetsReceived ?? 0);
  return dLost + dReceived > 0 ? (Math.max(0, dLost) * 100) / (dLost + dReceived) : null;
}

/**
 * The route in words a person understands, then the raw candidate types: "Direct · host ↔ host",
 * "Direct through your router · srflx ↔ prflx", "Relayed by the server (TCP) · relay ↔ srflx". When only the
 * other side's candidate is a relay, its transport to the server is not known here.
 */
export function describeRoute(pair) {
  if (!pair?.local || !pair?.remote) return 'Not connected';
  const types = `${pair.local.type} ↔ ${pair.remote.type}`;
  if (pair.local.type === 'relay') {
    const transport = String(pair.local.relayProtocol ?? pair.local.protocol ?? '').toUpperCase();
    return `Relayed by the server${transport ? ` (${transport})` : ''} · ${types}`;
  }
  if (pair.remote.type === 'relay') return `Relayed by the server (the other side's relay) · ${types}`;
  if ([pair.local.type, pair.remote.type].some((t) => t === 'srflx' || t === 'prflx')) return `Direct through your router · ${types}`;
  return `Direct · ${types}`;
}

/** 0 (bad) … 3 (good) from round-trip time and loss; null when unknown. */
export function quality(summary) {
  if (!summary?.pair) return null;
  const rtt = summary.pair.rtt ?? 0;
  const loss = Math.max(summary.recentLossPercent ?? 0, summary.outboundLossPercent ?? 0);
  if (rtt > 0.6 || loss > 10) return 1;
  if (rtt > 0.3 || loss > 3) return 2;
  return 3;
}

/** "48 ms round trip · 0.4 % loss" for the tile's quality indicator; '' when unknown. */
export function qualityDetail(summary) {
  if (!summary?.pair) return '';
  const parts = [];
  if (Number.isFinite(summary.pair.rtt)) parts.push(`${Math.round(summary.pair.rtt * 1000)} ms round trip`);
  const loss = Math.max(summary.recentLossPercent ?? 0, summary.outboundLossPercent ?? 0);
  parts.push(`${loss.toFixed(loss < 1 ? 1 : 0)} % loss`);
  return parts.join(' · ');
}
