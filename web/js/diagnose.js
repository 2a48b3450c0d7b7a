// Why a call cannot connect, in words a person understands. Pure: the room hands in what the browser gathered
// (getStats candidate entries) and the ICE servers it was given; unit-tested in tests/web/diagnose.test.mjs.

/** Whether the ICE servers include a TURN relay with credentials. */
export function hasRelay(iceServers) {
  return (iceServers ?? []).some((server) => {
    const urls = Array.isArray(server?.urls) ? server.urls : [server?.urls];
    return urls.some((u) => typeof u === 'string' && /^turns?:/.test(u)) && typeof server.username === 'string';
  });
}

/**
 * The likely reason every candidate pair failed.
 * @param {object} o
 * @param {Array} o.iceServers      what the page was given
 * @param {Array<{candidateType: string}>} o.local   our candidates (getStats "local-candidate")
 * @param {Array<{candidateType: string}>} o.remote  the other side's (getStats "remote-candidate")
 * @param {boolean} [o.relayOnly]  the page was told to use the relay only (relay=1): no direct candidates exist
 * @returns {string}
 */
export function explainFailure({ iceServers, local = [], remote = [], relayOnly = false }) {
  const types = (list) => new Set(list.map((c) => c?.candidateType));
  const mine = types(local);
  const theirs = types(remote);
  if (!hasRelay(iceServers)) {
    return 'no direct path between you works, and this server offers no relay (TURN) to fall back on';
  }
  if (!mine.has('relay')) {
    return mine.has('srflx') || relayOnly
      ? 'the relay server refused or did not answer this browser'
      : 'this network seems to block UDP, and the relay server could not be reached over TCP either';
  }
  if (remote.length === 0) return 'no network addresses arrived from the other side yet';
  if (!theirs.has('relay')) return 'the other side could not reach the relay server: its network may block it';
  return 'even the path through the relay server failed: it may refuse to relay between you';
}
