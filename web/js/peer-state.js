// The room's bookkeeping for one person beside their connection: what they last said about their camera and
// microphone, when their connection's failure was last diagnosed and what it said, whether their first frame is
// watched, which certificates their safety code was computed from, the encoding chosen for our video to them.
// And which application messages from a peer are taken, over which path.
//
// Pure: no DOM, no WebRTC, no clock (the room passes `now`). participant.js holds one per person and draws the
// tile from it; tests/web/peer-state.test.mjs drives its transitions. Before this module these were fields the
// room hung on each participant as it went (frameWatched, failure, diagnosing, diagnosedAt).

/** A call that cannot connect: its candidates are read again at most this often (each read re-renders the tile). */
export const DIAGNOSE_EVERY_MS = 5000;

/**
 * An application message from a peer (data channel, or signaling before the channel opens), checked: a
 * `{kind, ...}` the room acts on, or null to ignore it.
 *   {kind: 'state', remote: {audio, video, screen, known: true}}  camera, microphone and screen (booleans)
 *   {kind: 'chat', text}          raw text (chat.js cleans it)
 *   {kind: 'id', id}              their new signaling id: only over the data channel, which DTLS authenticates
 *                                 end to end (the server could otherwise move a connection to another id)
 *   {kind: 'recording', on}       only over the data channel: the server must not be able to hide a recording
 *   {kind: 'bye'}                 they are leaving
 * @param {*} data  the parsed JSON
 * @param {'datachannel'|'signaling'} via
 */
export function parsePeerData(data, via) {
  if (!data || typeof data !== 'object' || typeof data.t !== 'string') return null;
  switch (data.t) {
    case 'state':
      return { kind: 'state', remote: { audio: data.audio === true, video: data.video === true, screen: data.screen === true, known: true } };
    case 'chat':
      return typeof data.text === 'string' ? { kind: 'chat', text: data.text } : null;
    case 'id':
      return via === 'datachannel' ? { kind: 'id', id: data.id } : null;
    case 'recording':
      return via === 'datachannel' ? { kind: 'recording', on: data.on === true } : null;
    case 'bye':
      return { kind: 'bye' };
    default:
      return null;
  }
}

/** What one person's tile shows about their connection, from its RTCPeerConnection.connectionState. */
export function connectionText(connectionState, failure) {
  if (connectionState === 'connected') return null;
  if (failure) return `Can't connect: ${failure} (still trying)`;
  if (connectionState === 'disconnected') return 'Reconnecting…';
  if (connectionState === 'failed') return 'Connection lost — retrying';
  return 'Connecting…';
}

export class PeerState {
  constructor() {
    /** What they last said they send; until they say (known: false) we assume audio and video. */
    this.remote = { audio: true, video: true, screen: false, known: false };
    /** The last getStats summary (stats.js; bitrates are computed against it). */
    this.stats = null;
    /** The fingerprints the current safety code was computed from. */
    this.safetyInput = null;
    /** The encoding bitrate.js chose for our video to them, once applied. */
    this.videoPlan = null;
    /** Why their connection cannot be made (diagnose.js), while it cannot. */
    this.failure = null;
    this.diagnosing = false;
    this.diagnosedAt = null;
    this.frameWatched = false;
  }

  /** They said what they send ({kind: 'state'} of parsePeerData). */
  said(remote) {
    this.remote = { ...remote };
  }

  /** What the tile shows of their media, given whether a live, unmuted video track arrives. */
  media(hasVideo) {
    const { known, audio, video, screen } = this.remote;
    return { cam: known ? video && hasVideo : hasVideo, mic: known ? audio : true, screen };
  }

  /** Whether their microphone light is on at this receive level (0..1). */
  speaking(level) {
    return this.remote.audio !== false && level > 0.06;
  }

  /**
   * Their connection's state changed (or the tile is drawn again). `stuck`: the connect watchdog fired
   * (peer.js). Returns whether to diagnose now (every candidate pair failed, or the watchdog fired; not while a
   * diagnosis runs, at most once per DIAGNOSE_EVERY_MS) and the tile's text. Connecting again clears the words.
   */
  connection(connectionState, stuck, now) {
    if (connectionState === 'connected') this.failure = null;
    const due = this.diagnosedAt === null || now - this.diagnosedAt > DIAGNOSE_EVERY_MS;
    const diagnose = (connectionState === 'failed' || stuck) && connectionState !== 'connected' && !this.diagnosing && due;
    return { diagnose, text: connectionText(connectionState, this.failure) };
  }

  /** A diagnosis starts (the room reads the candidates). */
  diagnoseStarted(now) {
    this.diagnosing = true;
    this.diagnosedAt = now;
  }

  /** It ended: `failure` is what it found (undefined when the candidates could not be read: the old words stay). */
  diagnoseDone(failure) {
    this.diagnosing = false;
    if (failure !== undefined) this.failure = failure;
  }

  /** True the first time their stream has video: the room watches for the first frame once. */
  watchFrame(hasVideo) {
    if (this.frameWatched || !hasVideo) return false;
    this.frameWatched = true;
    return true;
  }

  /**
   * The input of a new safety code from the certificates of the DTLS session in use, or null when there is none
   * yet or the code of this very pair is already known. The room computes the code and then calls safetyDone.
   */
  safetyFor(local, remote) {
    const input = `${local?.fingerprint}|${remote?.fingerprint}`;
    if (!local || !remote || input === this.safetyInput) return null;
    return input;
  }

  /** The code for `input` was computed (a code whose fingerprints were not readable is not: it is tried again). */
  safetyDone(input) {
    this.safetyInput = input;
  }
}
