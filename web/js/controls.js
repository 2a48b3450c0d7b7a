// The room's local media controls, shared by the pre-join screen and the call: microphone, camera and screen
// toggles, the device pickers (camera, microphone, speaker), microphone processing, the level meter, how the
// preview, the control buttons and one's own tile show local media, and where remote sound plays (the speaker
// choice, and the banner when the browser's autoplay policy blocked it). media.js owns the tracks.

import { $, h, setIcon, store, toast } from './util.js';
import { LevelMeter, describeMediaError } from './media.js';

const CAN_PICK_SPEAKER = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

/** A toggle button: pressed = device on. */
function setToggle(button, on, kind, noun) {
  button.setAttribute('aria-pressed', String(on));
  button.classList.toggle('ctl-off', !on);
  setIcon(button, on ? kind : `${kind}-off`);
  const verb = kind === 'mic' ? (on ? 'Mute' : 'Unmute') : on ? 'Turn off' : 'Turn on';
  button.setAttribute('aria-label', `${verb} ${noun}`);
}

export class LocalControls {
  /**
   * @param {object} o
   * @param {import('./media.js').LocalMedia} o.media
   * @param {() => import('./participant.js').Participant[]} o.links  everyone else in the call
   * @param {() => import('./tile.js').Tile | null} o.localTile       one's own tile, while in the call
   */
  constructor({ media, links, localTile }) {
    this.media = media;
    this.links = links;
    this.localTile = localTile;
    /** When the microphone level last said we speak (bitrate.js: speakers get priority). */
    this.lastSpokeAt = 0;
    this.soundBlocked = false;
    this.meter = new LevelMeter((level) => this.#renderMeter(level));
  }

  /** Wires the buttons and pickers of the pre-join screen, the call's controls and the settings dialog. */
  bind() {
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.fillDevicePickers());
    for (const prefix of ['#pre', '#ctl']) {
      $(`${prefix}-mic`).addEventListener('click', () => this.toggleMic());
      $(`${prefix}-cam`).addEventListener('click', () => this.toggleCam());
    }
    $('#ctl-screen').addEventListener('click', () => this.toggleScreen());
    if (!navigator.mediaDevices?.getDisplayMedia) $('#ctl-screen').hidden = true;
    for (const prefix of ['#pre', '#set']) {
      $(`${prefix}-cam-select`).addEventListener('change', (e) => this.chooseCamera(e.target.value));
      $(`${prefix}-mic-select`).addEventListener('change', (e) => this.chooseMicrophone(e.target.value));
    }
    $('#set-speaker-select').addEventListener('change', (e) => this.chooseSpeaker(e.target.value));
    for (const id of ['#set-ec', '#set-ns', '#set-agc']) $(id).addEventListener('change', () => this.chooseProcessing());
    $('#sound-btn').addEventListener('click', async () => {
      this.soundBlocked = false;
      $('#sound-banner').hidden = true;
      for (const p of this.links()) this.playRemoteAudio(p);
    });
  }

  async toggleMic() {
    try {
      await this.media.setMic(!this.media.micOn);
    } catch (e) {
      toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
    }
  }

  /** While sharing, the camera toggle only changes what comes back after sharing. */
  async toggleCam() {
    try {
      await this.media.setCamera(!this.media.camOn);
    } catch (e) {
      toast(describeMediaError(e, 'camera'), { kind: 'error', timeout: 6000 });
    }
  }

  async toggleScreen() {
    const { media } = this;
    if (media.sharing) {
      media.stopScreen();
      return;
    }
    try {
      await media.startScreen();
      toast('You are sharing your screen');
    } catch (e) {
      if (e?.name !== 'NotAllowedError') toast(describeMediaError(e, 'screen'), { kind: 'error' });
    }
  }

  async chooseCamera(deviceId) {
    if (!deviceId) return;
    try {
      await this.media.useCamera(deviceId);
    } catch (e) {
      toast(describeMediaError(e, 'camera'), { kind: 'error', timeout: 6000 });
      this.fillDevicePickers();
    }
  }

  async chooseMicrophone(deviceId) {
    if (!deviceId) return;
    try {
      await this.media.useMicrophone(deviceId);
    } catch (e) {
      toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
      this.fillDevicePickers();
    }
  }

  /** Plays every remote participant's sound on the chosen output device. */
  async chooseSpeaker(deviceId) {
    store.set('speakerDevice', deviceId || null);
    await Promise.all(this.links().map((p) => this.routeAudio(p)));
  }

  async routeAudio(p) {
    const id = store.get('speakerDevice', null);
    const audio = p.tile.audio;
    if (!CAN_PICK_SPEAKER || !audio || !id || audio.sinkId === id) return;
    try {
      await audio.setSinkId(id);
    } catch (e) {
      console.warn('peercall: setSinkId', e);
      toast('Cannot use that speaker; sound stays on the default one', { kind: 'warn' });
    }
  }

  /** Plays `p`'s sound; when the browser blocks it, a banner asks for the click that lets it play. */
  async playRemoteAudio(p) {
    const ok = await p.tile.playAudio();
    if (!ok && !this.soundBlocked) {
      this.soundBlocked = true;
      $('#sound-banner').hidden = false;
    }
  }

  async chooseProcessing() {
    try {
      await this.media.setProcessing({
        echoCancellation: $('#set-ec').checked,
        noiseSuppression: $('#set-ns').checked,
        autoGainControl: $('#set-agc').checked,
      });
    } catch (e) {
      toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
    }
  }

  /** Shows what went wrong with the camera or microphone, in words. */
  reportMediaErrors(asToast) {
    const { media } = this;
    const { audio, video } = media.errors;
    let text = null;
    if (audio && video && audio.name === video.name) text = describeMediaError(audio, 'camera and microphone');
    else if (audio && video) text = `${describeMediaError(video, 'camera')} ${describeMediaError(audio, 'microphone')}`;
    else if (video) text = `${describeMediaError(video, 'camera')} You can still talk: the call will be audio-only.`;
    else if (audio) text = describeMediaError(audio, 'microphone');
    else if (!media.hasCamera && !media.cameraTrack && media.audioTrack) text = 'No camera found: you will join with audio only.';
    const el = $('#media-error');
    el.hidden = !text;
    el.textContent = text ?? '';
    if (asToast && text) toast(text, { kind: 'warn', timeout: 7000 });
  }

  async fillDevicePickers() {
    const { media } = this;
    const { cameras, microphones, speakers } = await media.devices();
    const fill = (select, list, current, none) => {
      select.replaceChildren(
        ...(list.length ? list : [{ id: '', label: none }]).map((d) =>
          h('option', { value: d.id, selected: d.id === current }, d.label)),
      );
      select.disabled = list.length === 0;
    };
    const camId = media.cameraTrack?.getSettings().deviceId ?? media.videoDeviceId;
    const micId = media.audioTrack?.getSettings().deviceId ?? media.audioDeviceId;
    fill($('#pre-cam-select'), cameras, camId, 'No camera found');
    fill($('#set-cam-select'), cameras, camId, 'No camera found');
    fill($('#pre-mic-select'), microphones, micId, 'No microphone found');
    fill($('#set-mic-select'), microphones, micId, 'No microphone found');
    // Speaker choice: where the browser can route audio (setSinkId) and tells us the outputs.
    $('#set-speaker-field').hidden = !CAN_PICK_SPEAKER || speakers.length === 0;
    fill($('#set-speaker-select'), speakers, store.get('speakerDevice', 'default') ?? 'default', 'Default speaker');
    $('#set-ec').checked = media.processing.echoCancellation;
    $('#set-ns').checked = media.processing.noiseSuppression;
    $('#set-agc').checked = media.processing.autoGainControl;
  }

  /** The pre-join preview, the toggle buttons and one's own tile, from the local tracks. */
  renderLocalMedia() {
    const { media } = this;
    const video = media.outgoingVideo;
    const micOn = media.micOn && Boolean(media.audioTrack);
    this.meter.attach(media.audioTrack);
    // Pre-join preview
    const preview = $('#preview-video');
    const previewStream = video ? new MediaStream([video]) : null;
    if (preview.srcObject?.getVideoTracks()[0] !== video) preview.srcObject = previewStream;
    $('#preview').classList.toggle('cam-off', !video);
    $('#preview-off-text').textContent = media.hasCamera ? 'Camera is off' : 'No camera found';
    setToggle($('#pre-mic'), micOn, 'mic', 'microphone');
    setToggle($('#pre-cam'), Boolean(media.camOn && media.cameraTrack), 'cam', 'camera');
    // In-call controls and own tile
    setToggle($('#ctl-mic'), micOn, 'mic', 'mic (microphone)'); // the accessible name holds the visible "Mic"
    setToggle($('#ctl-cam'), Boolean(media.camOn && media.cameraTrack), 'cam', 'camera');
    const screenBtn = $('#ctl-screen');
    screenBtn.setAttribute('aria-pressed', String(media.sharing));
    screenBtn.setAttribute('aria-label', media.sharing ? 'Stop sharing your screen' : 'Share your screen');
    screenBtn.classList.toggle('ctl-active', media.sharing);
    setIcon(screenBtn, media.sharing ? 'screen-off' : 'screen');
    screenBtn.querySelector('.ctl-label').textContent = media.sharing ? 'Stop' : 'Share';
    const tile = this.localTile();
    if (tile) {
      const stream = video ? new MediaStream([video]) : null;
      if (tile.video.srcObject?.getVideoTracks()[0] !== video) tile.setStream(stream);
      tile.setCam(Boolean(video));
      tile.setMic(micOn);
      tile.setScreen(media.sharing);
      tile.setMirror(!media.sharing);
    }
  }

  #renderMeter(level) {
    const lit = Math.round(level * 10);
    for (const id of ['#pre-meter', '#set-meter']) {
      const bars = document.querySelector(id)?.children ?? [];
      for (let i = 0; i < bars.length; i++) bars[i].classList.toggle('on', i < lit);
    }
    const speaking = level > 0.45 && this.media.micOn;
    if (speaking) this.lastSpokeAt = Date.now();
    this.localTile()?.setSpeaking(speaking);
  }
}
