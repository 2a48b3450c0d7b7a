// A participant tile: video (or avatar when the camera is off), name, microphone state, connection quality.
// Where tiles go and how large they are is layout.js.

import { h, icon, setIcon } from './util.js';
import { initials, hueOf } from './names.js';

/** How long the speaking ring stays on after the last loud sample. */
const SPEAKING_HOLD_MS = 600;

export class Tile {
  /** @param {{id: string, name: string, local?: boolean, onInfo?: () => void}} o */
  constructor({ id, name, local = false, onInfo = null }) {
    this.local = local;
    this.speaking = false;
    this.spokeAt = -Infinity;
    this.video = h('video', { autoplay: true, playsinline: true, muted: true, class: 'tile-video' });
    this.video.muted = true; // the attribute alone does not mute a srcObject stream everywhere
    this.audio = local ? null : h('audio', { autoplay: true, class: 'visually-hidden' });
    this.avatar = h('div', { class: 'avatar' });
    this.nameEl = h('span', { class: 'tile-name' });
    this.micEl = h('span', { class: 'tile-mic', title: 'Microphone off', 'aria-label': 'Microphone off' }, icon('mic-off'));
    this.stateEl = h('span', { class: 'tile-state', hidden: true });
    this.verifiedEl = h('span', { class: 'tile-verified', hidden: true, title: 'Safety code verified', 'aria-label': 'Safety code verified' }, icon('shield'));
    this.qualityEl = h('span', { class: 'quality', 'data-level': '0', title: 'Connection quality', 'aria-hidden': 'true' },
      h('i'), h('i'), h('i'));
    this.infoBtn = onInfo
      ? h('button', { type: 'button', class: 'tile-info', onclick: onInfo }, icon('info'))
      : null;
    this.el = h(
      'article',
      { class: `tile${local ? ' tile-local' : ''}`, dataset: { peer: id, mic: 'on', cam: 'on' } },
      this.video,
      this.audio,
      h('div', { class: 'tile-avatar' }, this.avatar),
      h('div', { class: 'tile-top' }, this.stateEl, this.infoBtn),
      h('div', { class: 'tile-bottom' }, this.micEl, this.nameEl, this.verifiedEl, local ? null : this.qualityEl),
    );
    this.setName(name);
    this.setCam(false);
    this.setState(local ? null : 'Connecting…');
  }

  setId(id) {
    this.el.dataset.peer = id;
  }

  setName(name) {
    this.name = name;
    const label = this.local ? `${name} (you)` : name;
    this.nameEl.textContent = label;
    this.el.setAttribute('aria-label', label);
    this.avatar.textContent = initials(name);
    this.avatar.style.setProperty('--hue', String(hueOf(name)));
    if (this.infoBtn) this.infoBtn.setAttribute('aria-label', `Connection details for ${name}`);
  }

  /** Shows a stream; the video element stays muted, remote sound plays through the audio element. */
  setStream(stream) {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    if (this.audio && this.audio.srcObject !== stream) this.audio.srcObject = stream;
    this.video.play().catch(() => {});
  }

  /** Plays remote sound; resolves false when the browser's autoplay policy blocked it. */
  async playAudio() {
    if (!this.audio?.srcObject) return true;
    try {
      await this.audio.play();
      return true;
    } catch {
      return false;
    }
  }

  setMic(on) {
    this.el.dataset.mic = on ? 'on' : 'off';
  }

  setCam(on) {
    this.el.dataset.cam = on ? 'on' : 'off';
  }

  setScreen(on) {
    this.el.classList.toggle('tile-screen', on);
  }

  setMirror(on) {
    this.el.classList.toggle('mirror', on);
  }

  /**
   * The speaking ring: on at once, off only after SPEAKING_HOLD_MS without a loud sample. Speech has gaps between
   * syllables; a ring that followed each would flicker and redraw the tile many times a second (measured: a
   * call alone in its room spent 30 % of a core on that with Chromium's test tone).
   */
  setSpeaking(on, now = performance.now()) {
    if (on) this.spokeAt = now;
    const lit = on || now - this.spokeAt < SPEAKING_HOLD_MS;
    if (lit === this.speaking) return;
    this.speaking = lit;
    this.el.classList.toggle('speaking', lit);
  }

  /** A short state over the video ("Connecting…", "Reconnecting…"), or null. */
  setState(text) {
    this.stateEl.hidden = !text;
    this.stateEl.textContent = text ?? '';
    this.el.classList.toggle('tile-pending', Boolean(text));
  }

  /** The safety code with this peer: 'verified' (a shield by the name), 'changed' (a warning) or null. */
  setSafety(state) {
    this.verifiedEl.hidden = !state;
    this.el.dataset.safety = state ?? '';
    setIcon(this.verifiedEl, state === 'changed' ? 'warn' : 'shield');
    const label = state === 'changed' ? 'Safety code changed: compare it again' : 'Safety code verified';
    this.verifiedEl.title = label;
    this.verifiedEl.setAttribute('aria-label', label);
  }

  /** 0 (unknown) … 3 (good), from loss and round trip (stats.js quality); `detail` the numbers, for the tooltip. */
  setQuality(level, detail = '') {
    this.qualityEl.dataset.level = String(level ?? 0);
    const label = ['Connection quality unknown', 'Poor connection', 'Fair connection', 'Good connection'][level ?? 0];
    this.qualityEl.title = detail ? `${label}: ${detail}` : label;
  }

  remove() {
    this.video.srcObject = null;
    if (this.audio) this.audio.srcObject = null;
    this.el.remove();
  }
}
