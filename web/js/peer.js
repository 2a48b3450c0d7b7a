// One remote participant: its RTCPeerConnection, data channel and negotiation state.
//
// Negotiation follows the "perfect negotiation" pattern (W3C WebRTC, §10.7 example): both sides may offer at any
// time; on a collision the polite side (the peer id that sorts lower, docs/protocol.md) rolls back and answers,
// the impolite side ignores the other's offer. The peer already in the room offers first, when it hears the
// newcomer joined (its page is loaded and idle; the newcomer's is still starting). The newcomer creates its
// connection on the welcome and adopts the offered transceivers, so both sides always have exactly one audio and
// one video transceiver plus one pre-negotiated data channel (id 0). Camera, microphone and screen changes are
// `replaceTrack` calls: no renegotiation. Renegotiation only happens for ICE restarts.
//
// Events: state (connection state changed), track (remote media changed), data (data channel message),
//         channel (data channel open/closed), created (the RTCPeerConnection and its data channels exist), closed.

import { mark } from './util.js';

const DISCONNECTED_GRACE_MS = 3_000; // "disconnected" this long → ICE restart
const CONNECT_WATCHDOG_MS = 15_000; // not connected this long after negotiating → ICE restart
const RESTART_RETRY_MS = 10_000;
// A peer that was sending and whose RTP stops for this long has lost its path (a network change, a NAT that
// forgot us): restart ICE now rather than after Chromium's "disconnected" (5-8 s) and the grace above.
const STALL_MS = 1_200;
const STALL_CHECK_MS = 250;
// Our offer has waited this long when the polite side's offer collides with it: the polite side would have
// answered it by now, so it never arrived (offers that merely cross in flight collide within milliseconds).
const LOST_OFFER_MS = 250;
// An offer still unanswered after this long is sent again (up to OFFER_RESENDS times): a lost offer would
// otherwise leave both sides waiting, as restartIce() cannot make a new offer until the old one is answered.
const OFFER_RESEND_MS = 1_500;
const OFFER_RESENDS = 3;
// A newcomer waits this long for the first offer before making one itself (a peer in the room that runs an
// older peercall, which waited for the newcomer's offer instead; the perfect negotiation settles any crossing).
export const FIRST_OFFER_WAIT_MS = 3_000;
const MAX_DATA_BYTES = 16 * 1024;

export class Peer extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.id        the remote peer id (signaling); the room updates it when the peer re-keys
   * @param {object} o.host      the room: myId(), sendSignal(msg), rtcConfig(), localTrack(kind), localStream(),
   *                             signalingUp(), isOrphan() (this peer's signaling id is unknown: its session was lost),
   *                             remoteMedia() (what the peer last said it sends: {audio, video, screen, known})
   */
  constructor({ id, host }) {
    super();
    this.id = id;
    this.host = host;
    this.pc = null;
    this.dc = null;
    this.fileDc = null;
    this.stream = new MediaStream();
    this.senders = { audio: null, video: null };
    this.canOffer = false;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.negotiated = false; // at least one offer/answer exchange completed
    this.chain = Promise.resolve();
    this.restartTimer = null;
    this.watchdog = null;
    this.stuck = false; // the connect watchdog fired and the connection has not come up since
    this.restarts = 0;
    this.collisions = 0; // offers that crossed ours (glare), resolved by the polite/impolite rule
    this.pendingRestart = false;
    this.closed = false;
    this.stalled = false; // its media stopped arriving; a restart for that is under way
    this.stallTimer = null;
    this.offerSentAt = 0;
    this.resentSdp = null; // the offer last sent twice (each offer is repeated at most once per cause)
    this.offerTimer = null;
    this.offers = 0; // offers made (each new one cancels the resend timer of the one before)
    this.firstOfferTimer = null;
    this.audioReceiver = null; // the audio RTCRtpReceiver of audioReceiverOf (audioLevel)
    this.audioReceiverOf = null;
  }

  /** Polite side of the pair: the lower id (plain string comparison). Re-evaluated: ids can change. */
  get polite() {
    return this.host.myId() < this.id;
  }

  get connectionState() {
    return this.pc?.connectionState ?? 'new';
  }

  /** Creates the connection as the offerer (they are the newcomer): transceivers and data channel now. */
  startAsOfferer() {
    this.#createPc();
    this.#offerFirst();
  }

  #offerFirst() {
    this.canOffer = true;
    const stream = this.host.localStream();
    for (const kind of ['audio', 'video']) {
      const track = this.host.localTrack(kind);
      const transceiver = this.pc.addTransceiver(track ?? kind, { direction: 'sendrecv', streams: [stream] });
      this.senders[kind] = transceiver.sender;
    }
    // The offer now, in this task: negotiationneeded would only run after everything else the page does for a new
    // participant (their tile, the layout) and the frame drawn after it; the event that follows finds the offer
    // under way (or made) and does nothing.
    this.#makeOffer();
  }

  /**
   * Creates the connection as the answerer ahead of the first offer (which then only has to be applied). With
   * `offerAfterMs`, offers itself if no offer has come by then.
   */
  prepare({ offerAfterMs = 0 } = {}) {
    this.#createPc();
    if (!offerAfterMs) return;
    clearTimeout(this.firstOfferTimer);
    this.firstOfferTimer = setTimeout(() => {
      const pc = this.pc;
      if (this.closed || !pc || this.canOffer || pc.remoteDescription || pc.signalingState !== 'stable') return;
      console.info(`peercall: no offer from ${this.id} after ${offerAfterMs} ms; offering`);
      this.#offerFirst();
    }, offerAfterMs);
  }

  #createPc() {
    if (this.pc) return;
    const pc = new RTCPeerConnection(this.host.rtcConfig());
    this.pc = pc;
    this.dc = pc.createDataChannel('peercall', { negotiated: true, id: 0, ordered: true });
    this.#wireDataChannel(this.dc);
    // Files (files.js): a channel of their own, so that chat and state messages never wait behind file data.
    this.fileDc = pc.createDataChannel('peercall-files', { negotiated: true, id: 1, ordered: true });
    this.dispatchEvent(new Event('created'));

    pc.onnegotiationneeded = () => this.#makeOffer();
    pc.onicecandidate = ({ candidate }) => {
      this.host.sendSignal({ type: 'candidate', to: this.id, candidate: candidate ? candidate.toJSON() : null });
    };
    pc.ontrack = ({ track }) => {
      if (!this.stream.getTracks().includes(track)) {
        for (const old of this.stream.getTracks().filter((t) => t.kind === track.kind)) this.stream.removeTrack(old);
        this.stream.addTrack(track);
      }
      track.onunmute = () => this.dispatchEvent(new Event('track'));
      track.onmute = () => this.dispatchEvent(new Event('track'));
      this.dispatchEvent(new Event('track'));
    };
    pc.onconnectionstatechange = () => this.#onConnectionState();
  }

  /** Makes and sends an offer (negotiationneeded, and the first offer to a newcomer). */
  async #makeOffer() {
    const pc = this.pc;
    // One offer at a time, from a stable state: the event that follows a direct call finds it made or under way
    // (the browser fires negotiationneeded again after the answer if something is still to negotiate).
    if (!pc || !this.canOffer || this.closed || this.makingOffer || pc.signalingState !== 'stable') return;
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      if (pc.localDescription?.type === 'offer') {
        this.host.sendSignal({ type: 'offer', to: this.id, sdp: pc.localDescription.sdp });
        mark('offer', this.id);
        this.offerSentAt = performance.now();
        this.#armOfferTimer(++this.offers, 1);
        this.#armWatchdog();
      }
    } catch (e) {
      console.warn(`peercall: offer to ${this.id} failed`, e);
    } finally {
      this.makingOffer = false;
    }
  }

  #onConnectionState() {
    const state = this.pc.connectionState;
    clearTimeout(this.restartTimer);
    if (state === 'connected') {
      mark('connected', this.id);
      this.restarts = 0;
      this.stuck = false;
      clearTimeout(this.watchdog);
      if (!this.stallTimer) this.stallTimer = setInterval(() => this.#checkStall(), STALL_CHECK_MS);
    } else if (state === 'disconnected') {
      this.restartTimer = setTimeout(() => {
        if (this.pc?.connectionState === 'disconnected') this.restartIce('disconnected');
      }, DISCONNECTED_GRACE_MS);
    } else if (state === 'failed') {
      this.restartIce('failed');
    }
    this.dispatchEvent(new Event('state'));
  }

  /**
   * Media watch: the newest RTP packet from any of this peer's sources (getSynchronizationSources: cheap, no
   * getStats). When the peer says it sends audio or video and nothing came for STALL_MS, the path is gone:
   * check the signaling socket (a network change kills it too, silently) and restart ICE at once.
   */
  #checkStall() {
    const state = this.pc?.connectionState;
    if (this.closed || (state !== 'connected' && state !== 'disconnected')) return;
    const remote = this.host.remoteMedia();
    if (remote.known && !remote.audio && !remote.video) return; // it sends nothing: nothing to miss
    let newest = 0;
    for (const receiver of this.pc.getReceivers()) {
      for (const source of receiver.getSynchronizationSources?.() ?? []) newest = Math.max(newest, source.timestamp);
    }
    if (!newest) return; // nothing received yet (or for over 10 s, when the sources expire)
    const silent = performance.timeOrigin + performance.now() - newest;
    if (silent < STALL_MS) {
      this.stalled = false;
      return;
    }
    if (this.stalled) return;
    this.stalled = true;
    this.host.checkSignaling?.();
    this.restartIce('stalled');
  }

  /** While negotiating: if the connection does not come up in time, restart ICE. */
  #armWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      const state = this.pc?.connectionState;
      if (this.closed || state === 'connected' || state === 'closed') return;
      // Not up in time: a path that cannot work often never reaches "failed" (a side without candidates keeps
      // the agent in "new"), so the room is told here too and can say why.
      this.stuck = true;
      this.restartIce('timeout');
      this.dispatchEvent(new Event('state'));
    }, CONNECT_WATCHDOG_MS);
  }

  /** ICE restart (new ufrag/pwd, fresh candidates); waits for signaling when it is down. */
  restartIce(reason) {
    if (this.closed || !this.pc || !this.negotiated) return;
    if (this.host.isOrphan()) return; // its signaling id is unknown until it tells us over the data channel
    if (!this.host.signalingUp()) {
      this.pendingRestart = true;
      return;
    }
    this.pendingRestart = false;
    this.restarts += 1;
    console.info(`peercall: ICE restart with ${this.id} (${reason}, #${this.restarts})`);
    this.canOffer = true;
    this.pc.restartIce();
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      const state = this.pc?.connectionState;
      if (state === 'failed' || state === 'disconnected' || state === 'connecting') this.restartIce('retry');
    }, RESTART_RETRY_MS * Math.min(this.restarts, 3));
  }

  /** Signaling came back: run the restart that had to wait, or resend an offer still waiting for its answer. */
  onSignalingUp() {
    if (this.pendingRestart) {
      this.restartIce('deferred');
      return;
    }
    this.#resendOffer('signaling back');
  }

  /**
   * Sends our pending offer again (with the candidates gathered since, which localDescription carries): one sent
   * into a socket that had silently died — the usual case right after a network change — never arrived, and the
   * other side would wait for it until a retry timer fires. A duplicate is harmless: applied again, it changes
   * nothing, and the second answer, arriving when we are stable again, is dropped.
   */
  #resendOffer(reason) {
    const pc = this.pc;
    if (this.closed || this.host.isOrphan() || !pc || pc.signalingState !== 'have-local-offer' || this.makingOffer) return;
    if (pc.localDescription?.type !== 'offer') return;
    const key = `${reason === 'glare' ? 'glare' : 'back'} ${pc.localDescription.sdp}`;
    if (this.resentSdp === key && !reason.startsWith('no answer')) return;
    this.resentSdp = key;
    console.info(`peercall: offer to ${this.id} sent again (${reason})`);
    this.host.sendSignal({ type: 'offer', to: this.id, sdp: pc.localDescription.sdp });
  }

  /** Resends offer number `offer` if it is still waiting for its answer after OFFER_RESEND_MS. */
  #armOfferTimer(offer, attempt) {
    clearTimeout(this.offerTimer);
    if (attempt > OFFER_RESENDS) return;
    this.offerTimer = setTimeout(() => {
      if (this.offers !== offer || this.pc?.signalingState !== 'have-local-offer') return;
      this.#resendOffer(`no answer, #${attempt}`);
      this.#armOfferTimer(offer, attempt + 1);
    }, OFFER_RESEND_MS);
  }

  /** Applies an offer, answer or candidate from the remote peer, one at a time, in arrival order. */
  handleSignal(message) {
    this.chain = this.chain
      .then(() => this.#handle(message))
      .catch((e) => console.warn(`peercall: signal ${message.type} from ${this.id}`, e));
    return this.chain;
  }

  async #handle(message) {
    if (this.closed) return;
    if (message.type === 'offer' || message.type === 'answer') {
      if (typeof message.sdp !== 'string') return;
      mark(message.type, this.id); // received (the answerer marks the offer here, the offerer the answer)
      if (!this.pc) {
        if (message.type === 'answer') return; // an answer to an offer we never made
        this.#createPc();
      }
      // An offer from another RTCPeerConnection than the one we negotiated with (the SDP session id differs; it
      // stays the same through renegotiations): the peer started over with us (it lost our connection, or learned
      // of our new session before our id claim reached it). Ours cannot be renegotiated into theirs: start over.
      if (message.type === 'offer' && this.pc.remoteDescription) {
        const [theirs, ours] = [sdpSessionId(message.sdp), sdpSessionId(this.pc.remoteDescription.sdp)];
        if (theirs && ours && theirs !== ours) this.#startOver();
      }
      const pc = this.pc;
      // A second answer to an offer already answered (we sent that offer twice: see #resendOffer).
      if (message.type === 'answer' && pc.signalingState === 'stable') return;
      const description = { type: message.type, sdp: message.sdp };
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      if (collision) this.collisions += 1;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) {
        // The polite side offers while we wait for its answer: it rolls back when our offer reaches it — unless
        // ours was lost (sent into a dead socket). If ours has waited too long for that, send it again, so the two
        // sides never wait for each other.
        if (performance.now() - this.offerSentAt >= LOST_OFFER_MS) this.#resendOffer('glare');
        return;
      }
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description); // rolls back our own offer when polite and colliding
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        // Our first offer crossed theirs and was rolled back: its transceivers were never negotiated and the offer
        // brought its own, so ours go (else they would be offered again, as extra media sections).
        if (collision && !this.negotiated) this.#dropUnnegotiated();
        this.#adoptTransceivers();
        await pc.setLocalDescription();
        this.host.sendSignal({ type: 'answer', to: this.id, sdp: pc.localDescription.sdp });
        mark('answer-sent', this.id);
        this.#armWatchdog();
        if (collision) await this.#reattachTracks();
      }
      this.negotiated = true;
      this.canOffer = true;
      return;
    }
    if (message.type === 'candidate') {
      if (!this.pc || !message.candidate || typeof message.candidate !== 'object') return; // null: end of candidates
      try {
        await this.pc.addIceCandidate(message.candidate);
      } catch (e) {
        if (!this.ignoreOffer) console.warn(`peercall: bad candidate from ${this.id}`, e);
      }
    }
  }

  #dropUnnegotiated() {
    for (const transceiver of this.pc.getTransceivers()) {
      if (transceiver.mid !== null || transceiver.currentDirection === 'stopped') continue;
      const kind = transceiver.receiver.track.kind;
      if (this.senders[kind] === transceiver.sender) this.senders[kind] = null;
      try {
        transceiver.stop();
      } catch {
        /* already stopped */
      }
    }
  }

  /** Replaces the connection with a fresh one (same Peer, same events), ready to answer. */
  #startOver() {
    console.info(`peercall: ${this.id} started a new connection; replacing ours`);
    const old = this.pc;
    for (const timer of [this.restartTimer, this.watchdog, this.offerTimer, this.firstOfferTimer]) clearTimeout(timer);
    clearInterval(this.stallTimer);
    this.stallTimer = null;
    for (const dc of [this.dc, this.fileDc]) if (dc) dc.onopen = dc.onclose = dc.onmessage = null;
    old.onnegotiationneeded = old.onicecandidate = old.ontrack = old.onconnectionstatechange = null;
    old.close();
    this.pc = null;
    this.senders = { audio: null, video: null };
    this.canOffer = false;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.negotiated = false;
    this.pendingRestart = false;
    this.stalled = false;
    this.stuck = false;
    this.#createPc();
    this.dispatchEvent(new Event('channel')); // the old channel is gone
  }

  /** Answerer: send our media on the transceivers the offer created (once). */
  #adoptTransceivers() {
    const stream = this.host.localStream();
    for (const transceiver of this.pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      if (this.senders[kind] || transceiver.currentDirection === 'stopped') continue;
      this.senders[kind] = transceiver.sender;
      transceiver.direction = 'sendrecv';
      transceiver.sender.replaceTrack(this.host.localTrack(kind)).catch((e) => console.warn(e));
      transceiver.sender.setStreams?.(stream);
    }
  }

  /**
   * After the polite side's implicit rollback (an offer applied over our own), Chromium (seen in 148) leaves the
   * senders detached from their tracks: nothing is encoded or sent any more, although sender.track is live.
   * Attaching the tracks again brings the media back.
   */
  async #reattachTracks() {
    for (const kind of ['audio', 'video']) {
      const sender = this.senders[kind];
      const track = this.host.localTrack(kind);
      if (!sender || !track) continue;
      try {
        await sender.replaceTrack(null);
        await sender.replaceTrack(track);
      } catch (e) {
        console.warn(`peercall: re-attaching ${kind} for ${this.id}`, e);
      }
    }
  }

  /** Swaps the outgoing track of one kind (camera ↔ screen, device change, off = null). No renegotiation. */
  async replaceTrack(kind, track) {
    const sender = this.senders[kind];
    if (!sender) return;
    try {
      await sender.replaceTrack(track);
    } catch (e) {
      console.warn(`peercall: replaceTrack(${kind}) for ${this.id}`, e);
    }
  }

  setIceServers(config) {
    if (!this.pc) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), ...config });
    } catch (e) {
      console.warn('peercall: setConfiguration', e);
    }
  }

  #wireDataChannel(dc) {
    dc.onopen = () => this.dispatchEvent(new Event('channel'));
    dc.onclose = () => this.dispatchEvent(new Event('channel'));
    dc.onmessage = (event) => {
      if (typeof event.data !== 'string' || event.data.length > MAX_DATA_BYTES) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatchEvent(new CustomEvent('data', { detail: { data, via: 'datachannel' } }));
    };
  }

  get channelOpen() {
    return this.dc?.readyState === 'open';
  }

  /** Sends an application message over the data channel; false when it is not open. */
  sendData(data) {
    if (!this.channelOpen) return false;
    try {
      this.dc.send(JSON.stringify(data));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Audio level (0..1) of the remote microphone, from the RTP receiver. Asked five times a second for every tile:
   * nothing is asked of the connection before it is up (each of these calls waits for the browser's WebRTC
   * thread, which is busiest while the connection is being set up), and the receiver is looked up once.
   */
  audioLevel() {
    const pc = this.pc;
    if (!pc || pc.connectionState !== 'connected') return 0;
    if (this.audioReceiverOf !== pc) {
      this.audioReceiverOf = pc;
      this.audioReceiver = pc.getReceivers().find((r) => r.track.kind === 'audio') ?? null;
    }
    const sources = this.audioReceiver?.getSynchronizationSources?.() ?? [];
    return sources.length ? (sources[0].audioLevel ?? 0) : 0;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.watchdog);
    clearInterval(this.stallTimer);
    clearTimeout(this.offerTimer);
    clearTimeout(this.firstOfferTimer);
    try {
      this.dc?.close();
      this.fileDc?.close();
      this.pc?.close();
    } catch {
      /* already closed */
    }
    for (const track of this.stream.getTracks()) track.stop();
    this.dispatchEvent(new Event('closed'));
  }
}

/** The session id of an SDP's o= line (RFC 8866 §5.2): one per RTCPeerConnection, kept through renegotiations. */
function sdpSessionId(sdp) {
  return /^o=\S+ (\S+) /m.exec(sdp)?.[1] ?? null;
}
