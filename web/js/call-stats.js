// Each second of the call: every connection's getStats() summarized (stats.js), the tiles' quality bars, the
// safety codes (safety.js, from the certificates of the DTLS session in use), the uplink budget (bitrate.js: each
// outgoing video gets its share, speakers first) and, while it shows, the Connection panel (stats-panel.js draws
// it; loaded once the call is up, since a call does not need it to start).

import { $, keepFocus, store, toast } from './util.js';
import { summarize, quality, qualityDetail } from './stats.js';
import { safetyCode, SafetyBook, memoryStorage } from './safety.js';
import { planVideo, sameEncoding, uplinkFromKbps, isSpeaking } from './bitrate.js';

/** Connection states of a connection being set up (its first ICE and DTLS handshakes). */
const SETTING_UP = new Set(['new', 'connecting']);

/** The safety codes verified in this tab's session (sessionStorage; in memory when that is unavailable). */
function sessionCodes() {
  const key = 'peercall.verifiedCodes';
  try {
    sessionStorage.getItem(key);
  } catch {
    return memoryStorage();
  }
  return {
    get() {
      try {
        const v = JSON.parse(sessionStorage.getItem(key) ?? '[]');
        return Array.isArray(v) ? v.filter((c) => typeof c === 'string') : [];
      } catch {
        return [];
      }
    },
    set(codes) {
      try {
        sessionStorage.setItem(key, JSON.stringify(codes));
      } catch {
        /* full or unavailable: verification is not remembered */
      }
    },
  };
}

export class CallStats {
  /**
   * @param {object} o
   * @param {import('./roster.js').Roster} o.roster
   * @param {import('./media.js').LocalMedia} o.media
   * @param {() => number} o.lastSpokeAt  when our microphone last said we speak
   * @param {() => string|null} o.panel   the side panel shown
   * @param {string|null} o.uplinkParam   ?uplink=KBPS of the page address
   */
  constructor({ roster, media, lastSpokeAt, panel, uplinkParam }) {
    this.roster = roster;
    this.media = media;
    this.lastSpokeAt = lastSpokeAt;
    this.panel = panel;
    this.uplinkParam = uplinkParam;
    /** Safety codes seen per participant, and the codes verified in this tab's session. */
    this.safety = new SafetyBook(sessionCodes());
    this.panelCode = null; // stats-panel.js, once loaded
    this.loading = null;
  }

  /** Loads the panel's drawing code (the room calls this once the call is up, or the panel asks). */
  load() {
    this.loading ??= import('./stats-panel.js').then((code) => {
      this.panelCode = code;
      if (this.panel() === 'stats') this.render();
    }, (e) => {
      this.loading = null;
      console.warn('peercall: cannot load the connection panel', e);
    });
    return this.loading;
  }

  /** The budget in bits/s: ?uplink=KBPS, else Settings, else a typical home uplink. */
  uplinkBudget() {
    return uplinkFromKbps(this.uplinkParam ?? store.get('uplinkKbps', null));
  }

  async poll() {
    // Not a connection still being set up (unless the Connection panel shows it): getStats() then only competes
    // with ICE and DTLS for the browser's WebRTC thread, and there is no quality, safety code or video budget yet.
    const panelOpen = this.panel() === 'stats';
    const polled = this.roster.links().filter((p) => p.peer.pc && (panelOpen || !SETTING_UP.has(p.peer.connectionState)));
    await Promise.all(polled.map(async (p) => {
      try {
        const report = await p.peer.pc.getStats();
        const s = summarize(report, p.state.stats);
        p.state.stats = s;
        p.tile.setQuality(p.peer.connectionState === 'connected' ? quality(s) : 0, qualityDetail(s));
        await this.#updateSafety(p);
        await this.applyVideoBudget(p);
      } catch {
        /* closed meanwhile */
      }
    }));
    if (this.panel() === 'stats') this.render();
  }

  render() {
    if (!this.panelCode) {
      this.load();
      return;
    }
    const cards = $('#stats-cards');
    keepFocus(cards, () => this.panelCode.renderStatsCards(cards, this.roster.links().map((p) => ({
      id: p.id,
      name: p.name,
      connectionState: p.peer.connectionState,
      stats: p.state.stats,
      safety: this.safety.status(p),
      onVerify: (verified) => {
        if (verified) this.safety.verify(p);
        else this.safety.unverify(p);
        this.renderSafety(p);
        this.render();
      },
    }))));
  }

  /** Safety code from the certificates of the DTLS session in use; warns when it changes mid-call. */
  async #updateSafety(p) {
    const local = p.state.stats?.localCertificate;
    const remote = p.state.stats?.remoteCertificate;
    const input = p.state.safetyFor(local, remote);
    if (!input) return;
    const result = await safetyCode(local, remote);
    if (!result) return; // fingerprints not readable yet: try again at the next stats tick
    p.state.safetyDone(input);
    if (this.safety.update(p, result.code) === 'changed') {
      const { changedWhileVerified } = this.safety.status(p);
      toast(changedWhileVerified
        ? `Warning: the verified safety code with ${p.name} changed. Compare it again before you trust this call.`
        : `The safety code with ${p.name} changed (new certificates). Compare it again.`,
      { kind: 'warn', timeout: 10_000 });
      console.warn(`peercall: safety code with ${p.id} changed`);
    }
    this.renderSafety(p);
  }

  renderSafety(p) {
    const s = this.safety.status(p);
    p.tile.setSafety(s?.verified ? 'verified' : s?.changed ? 'changed' : null);
  }

  /** `p` left: what was seen goes (verified codes stay for the session). */
  forget(p) {
    this.safety.forget(p);
  }

  /** Our video to `p` gets its share of the uplink budget (bitrate.js). */
  async applyVideoBudget(p) {
    const sender = p.peer.senders.video;
    // Only between negotiations: parameters set while an offer is pending (and maybe rolled back) can leave the
    // encoder stopped in Chromium.
    if (!sender || p.peer.connectionState !== 'connected' || p.peer.pc?.signalingState !== 'stable') return;
    const plan = planVideo({
      budget: this.uplinkBudget(),
      peers: this.roster.size,
      speaking: isSpeaking(this.lastSpokeAt(), Date.now()),
      screen: this.media.sharing,
    });
    try {
      const parameters = sender.getParameters();
      const encoding = parameters.encodings?.[0];
      if (!encoding) return;
      if (sameEncoding(encoding, plan)) {
        p.state.videoPlan = plan;
        return;
      }
      encoding.maxBitrate = plan.maxBitrate;
      encoding.scaleResolutionDownBy = plan.scaleResolutionDownBy;
      if (plan.maxFramerate) encoding.maxFramerate = plan.maxFramerate;
      else delete encoding.maxFramerate;
      encoding.priority = plan.priority;
      encoding.networkPriority = plan.priority;
      await sender.setParameters(parameters);
      p.state.videoPlan = plan;
    } catch (e) {
      console.warn(`peercall: video budget for ${p.id}`, e);
    }
  }
}
