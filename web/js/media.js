// Local media: camera, microphone, screen; device choice; the microphone level meter.
//
// The outgoing video track is the screen while sharing, else the camera while it is on, else none. Turning the
// camera off stops the track (the camera light goes off); muting the microphone disables its track (instant
// unmute). Every change of an outgoing track fires 'tracks' so the room can `replaceTrack` on every connection.

import { store } from './util.js';

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** The processing settings, from what was stored (anything missing or not a boolean: the default, on). */
export function audioProcessing(stored) {
  const out = {};
  for (const key of Object.keys(AUDIO)) out[key] = typeof stored?.[key] === 'boolean' ? stored[key] : AUDIO[key];
  return out;
}

/** A sentence a person understands, for a getUserMedia/getDisplayMedia failure. */
export function describeMediaError(error, what = 'camera and microphone') {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `Access to your ${what} is blocked. Allow it from the icon in the address bar, then reload — or join without it.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} found. Plug one in, or join without it.`;
    case 'NotReadableError':
    case 'AbortError':
      return `Your ${what} is busy: another application may be using it.`;
    case 'InsecureContext':
      return 'Camera and microphone need a secure page (https://). Ask whoever runs peercall to enable HTTPS.';
    default:
      return `Cannot use your ${what}${error?.message ? `: ${error.message}` : '.'}`;
  }
}

function insecure() {
  const e = new Error('insecure context');
  e.name = 'InsecureContext';
  return e;
}

/** The microphone's constraints: `processing`, on the device last used when there is one. */
function audioConstraints(deviceId, processing) {
  return deviceId ? { ...processing, deviceId: { ideal: deviceId } } : { ...processing };
}

/** The camera's constraints, on the device last used when there is one. */
function videoConstraints(deviceId) {
  return deviceId ? { ...VIDEO, deviceId: { ideal: deviceId } } : VIDEO;
}

/** The capture settings last used (remembered in the store): camera on or off, devices, microphone processing. */
function storedCapture() {
  return {
    camOn: store.get('camOn', true),
    audioDeviceId: store.get('audioDevice', null),
    videoDeviceId: store.get('videoDevice', null),
    processing: audioProcessing(store.get('audioProcessing', null)),
  };
}

/** What LocalMedia.open() asks getUserMedia for with these settings (storedCapture's fields). */
function captureConstraints({ camOn, audioDeviceId, videoDeviceId, processing }) {
  return { audio: audioConstraints(audioDeviceId, processing), video: camOn ? videoConstraints(videoDeviceId) : false };
}

/** The capture boot.js started while the page loads: {key, promise}, taken once by LocalMedia.open(). */
let earlyCapture = null;

/**
 * Starts the camera and microphone now, before the page's modules have loaded (web/js/boot.js): a camera takes
 * a few hundred milliseconds to start, and this way it starts beside the page instead of after it. The first
 * LocalMedia.open() whose constraints match takes the stream; anyone else's is stopped.
 */
export function captureEarly() {
  if (earlyCapture || !navigator.mediaDevices?.getUserMedia) return;
  const constraints = captureConstraints(storedCapture());
  const promise = navigator.mediaDevices.getUserMedia(constraints);
  promise.catch(() => {}); // open() sees the failure, and tries each device alone
  earlyCapture = { key: JSON.stringify(constraints), promise };
}

/** The early capture's stream promise when it was started with `constraints`; null otherwise (it is released). */
function takeEarlyCapture(constraints) {
  const early = earlyCapture;
  earlyCapture = null;
  if (!early) return null;
  if (early.key === JSON.stringify(constraints)) return early.promise;
  early.promise.then((stream) => { for (const t of stream.getTracks()) t.stop(); }, () => {});
  return null;
}

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream(); // what we send: ≤ 1 audio + ≤ 1 video track
    this.audioTrack = null;
    this.cameraTrack = null;
    this.screenTrack = null;
    this.micOn = store.get('micOn', true);
    // camOn, audioDeviceId, videoDeviceId, processing: as last used (the early capture read the same).
    Object.assign(this, storedCapture());
    this.errors = { audio: null, video: null };
    this.hasCamera = true;
    this.hasMic = true;
  }

  get available() {
    return Boolean(navigator.mediaDevices?.getUserMedia);
  }

  get sharing() {
    return Boolean(this.screenTrack);
  }

  /** The video track going out now: screen, else camera (when on), else null. */
  get outgoingVideo() {
    if (this.screenTrack) return this.screenTrack;
    return this.camOn ? this.cameraTrack : null;
  }

  get outgoingAudio() {
    return this.audioTrack;
  }

  #audioConstraints() {
    return audioConstraints(this.audioDeviceId, this.processing);
  }

  /**
   * Echo cancellation, noise suppression and automatic gain ({echoCancellation, noiseSuppression,
   * autoGainControl}, booleans): remembered, and applied by opening the microphone again with them (browsers do
   * not reliably change them on a running track); the new track replaces the old one on every connection.
   */
  async setProcessing(next) {
    this.processing = audioProcessing({ ...this.processing, ...next });
    store.set('audioProcessing', this.processing);
    if (!this.audioTrack) return;
    const deviceId = this.audioTrack.getSettings().deviceId ?? this.audioDeviceId;
    // Stopped first: while a capture of the device runs, Chromium hands out new tracks with its processing.
    this.audioTrack.stop();
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { ...this.processing, ...(deviceId ? { deviceId: { exact: deviceId } } : {}) },
      });
      this.#setAudio(stream.getAudioTracks()[0]);
    } catch (e) {
      this.#setAudio(null);
      this.errors.audio = e;
      throw e;
    } finally {
      this.#emit();
    }
  }

  #videoConstraints() {
    return videoConstraints(this.videoDeviceId);
  }

  /**
   * Opens the microphone (always, so it can be unmuted) and the camera (when on). Falls back to each device
   * alone, so one missing or blocked device never prevents the call: no camera means an audio-only call.
   */
  async open() {
    this.errors = { audio: null, video: null };
    if (!this.available) {
      this.errors = { audio: insecure(), video: insecure() };
      this.hasCamera = false;
      this.hasMic = false;
      this.#emit();
      return;
    }
    const wantVideo = this.camOn;
    const constraints = captureConstraints(this);
    let stream = null;
    try {
      stream = await (takeEarlyCapture(constraints) ?? navigator.mediaDevices.getUserMedia(constraints));
    } catch (both) {
      // One device may be missing or busy: try each alone.
      const tracks = [];
      try {
        tracks.push(...(await navigator.mediaDevices.getUserMedia({ audio: this.#audioConstraints() })).getTracks());
      } catch (e) {
        this.errors.audio = e;
      }
      if (wantVideo) {
        try {
          tracks.push(...(await navigator.mediaDevices.getUserMedia({ video: this.#videoConstraints() })).getTracks());
        } catch (e) {
          this.errors.video = e;
        }
      }
      if (tracks.length === 0 && !this.errors.audio) this.errors.audio = both;
      stream = new MediaStream(tracks);
    }
    this.#setAudio(stream.getAudioTracks()[0] ?? null);
    this.#setCamera(stream.getVideoTracks()[0] ?? null);
    this.hasMic = Boolean(this.audioTrack);
    if (wantVideo) this.hasCamera = Boolean(this.cameraTrack);
    if (!this.cameraTrack && wantVideo) this.camOn = false;
    // The tracks go out at once (the call may be waiting for them); which devices exist is known a moment later.
    this.#emit();
    const flags = [this.hasCamera, this.hasMic];
    await this.#refreshDeviceFlags();
    if (flags[0] !== this.hasCamera || flags[1] !== this.hasMic) this.#emit();
  }

  async #refreshDeviceFlags() {
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      if (!this.cameraTrack) this.hasCamera = devices.some((d) => d.kind === 'videoinput');
      if (!this.audioTrack) this.hasMic = devices.some((d) => d.kind === 'audioinput');
    } catch {
      /* keep what we know */
    }
  }

  #setAudio(track) {
    if (this.audioTrack && this.audioTrack !== track) this.audioTrack.stop();
    this.audioTrack = track;
    if (track) {
      track.enabled = this.micOn;
      const id = track.getSettings().deviceId;
      if (id) this.audioDeviceId = id;
    }
    this.#rebuildStream();
  }

  #setCamera(track) {
    if (this.cameraTrack && this.cameraTrack !== track) this.cameraTrack.stop();
    this.cameraTrack = track;
    if (track) {
      const id = track.getSettings().deviceId;
      if (id) this.videoDeviceId = id;
      track.onended = () => {
        // Unplugged or revoked: behave as "camera off".
        if (this.cameraTrack === track) {
          this.cameraTrack = null;
          this.camOn = false;
          this.#rebuildStream();
          this.#emit();
        }
      };
    }
    this.#rebuildStream();
  }

  #rebuildStream() {
    const want = [this.audioTrack, this.outgoingVideo].filter(Boolean);
    for (const t of this.stream.getTracks()) if (!want.includes(t)) this.stream.removeTrack(t);
    for (const t of want) if (!this.stream.getTracks().includes(t)) this.stream.addTrack(t);
  }

  #emit() {
    this.#rebuildStream();
    store.set('micOn', this.micOn);
    store.set('camOn', this.camOn);
    if (this.audioDeviceId) store.set('audioDevice', this.audioDeviceId);
    if (this.videoDeviceId) store.set('videoDevice', this.videoDeviceId);
    this.dispatchEvent(new Event('tracks'));
  }

  async setMic(on) {
    this.micOn = on;
    if (on && !this.audioTrack) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: this.#audioConstraints() });
        this.errors.audio = null;
        this.#setAudio(stream.getAudioTracks()[0]);
        this.hasMic = true;
      } catch (e) {
        this.errors.audio = e;
        this.micOn = false;
        this.#emit();
        throw e;
      }
    }
    if (this.audioTrack) this.audioTrack.enabled = on;
    this.#emit();
  }

  async setCamera(on) {
    if (on && !this.cameraTrack) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ video: this.#videoConstraints() });
        this.errors.video = null;
        this.camOn = true;
        this.hasCamera = true;
        this.#setCamera(stream.getVideoTracks()[0]);
      } catch (e) {
        this.errors.video = e;
        this.camOn = false;
        this.#emit();
        throw e;
      }
    } else if (!on && this.cameraTrack) {
      this.camOn = false;
      this.#setCamera(null); // stops it: the camera light goes off
    }
    this.camOn = on;
    this.#emit();
  }

  /** Switches to another camera; the new track replaces the old one on every connection. */
  async useCamera(deviceId) {
    this.videoDeviceId = deviceId;
    if (!this.camOn) {
      this.#emit();
      return;
    }
    const stream = await navigator.mediaDevices.getUserMedia({ video: { ...VIDEO, deviceId: { exact: deviceId } } });
    this.#setCamera(stream.getVideoTracks()[0]);
    this.#emit();
  }

  /** Switches to another microphone, keeping the mute state. */
  async useMicrophone(deviceId) {
    this.audioDeviceId = deviceId;
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { ...this.processing, deviceId: { exact: deviceId } } });
    this.#setAudio(stream.getAudioTracks()[0]);
    this.#emit();
  }

  async startScreen() {
    if (!navigator.mediaDevices?.getDisplayMedia) {
      const e = new Error('Screen sharing is not supported by this browser.');
      e.name = 'NotSupportedError';
      throw e;
    }
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    if ('contentHint' in track) track.contentHint = 'detail';
    track.onended = () => this.stopScreen(); // "Stop sharing" from the browser's own bar
    this.screenTrack?.stop();
    this.screenTrack = track;
    this.#emit();
  }

  stopScreen() {
    if (!this.screenTrack) return;
    this.screenTrack.onended = null;
    this.screenTrack.stop();
    this.screenTrack = null;
    this.#emit();
  }

  async devices() {
    if (!navigator.mediaDevices?.enumerateDevices) return { cameras: [], microphones: [], speakers: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    const label = (d, i, what) => d.label || `${what} ${i + 1}`;
    const cameras = all.filter((d) => d.kind === 'videoinput' && d.deviceId);
    const microphones = all.filter((d) => d.kind === 'audioinput' && d.deviceId);
    const speakers = all.filter((d) => d.kind === 'audiooutput' && d.deviceId);
    return {
      speakers: speakers.map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Speaker') })),
      cameras: cameras.map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Camera') })),
      microphones: microphones.map((d, i) => ({ id: d.deviceId, label: label(d, i, 'Microphone') })),
    };
  }

  stopAll() {
    for (const t of [this.audioTrack, this.cameraTrack, this.screenTrack]) t?.stop();
    this.audioTrack = this.cameraTrack = this.screenTrack = null;
    this.#rebuildStream();
  }
}

// How often the level meter samples the microphone: on a timer, not at every animation frame. 20 samples a second
// are as smooth as a bar meter needs, the speaking ring on one's own tile follows within 50 ms, and the page does
// a third of the work (the ring itself holds between syllables: tile.js setSpeaking).
const METER_EVERY_MS = 50;
// Share of the previous level kept at each sample when the level falls (the meter rises at once, falls smoothly:
// about 0.85 per frame at 60 frames a second before, the same fall per second).
const METER_FALL = 0.6;
const METER_WINDOW = 2048;

/** Microphone level, 0..1, computed from an AnalyserNode every METER_EVERY_MS while a track is attached. */
export class LevelMeter {
  constructor(onLevel) {
    this.onLevel = onLevel;
    this.ctx = null;
    this.source = null;
    this.analyser = null;
    this.buffer = null;
    this.timer = 0;
    this.track = null;
    this.smoothed = 0;
    this.resume = () => this.ctx?.resume().catch(() => {});
  }

  /** Measures `track` (null stops measuring). */
  attach(track) {
    if (track === this.track) return;
    this.track = track;
    this.source?.disconnect();
    this.source = null;
    if (!track) {
      clearInterval(this.timer);
      this.timer = 0;
      this.smoothed = 0;
      this.onLevel(0);
      return;
    }
    try {
      this.ctx ??= new AudioContext();
      if (this.ctx.state === 'suspended') {
        this.ctx.resume().catch(() => {});
        // Autoplay policy: an AudioContext may only run after a user gesture.
        document.addEventListener('pointerdown', this.resume, { once: true });
        document.addEventListener('keydown', this.resume, { once: true });
      }
      // Each sample reads the last METER_WINDOW samples of sound (about 43 ms at 48 kHz): nearly all of the time
      // since the sample before, so a short sound between two samples is not missed.
      this.analyser ??= Object.assign(this.ctx.createAnalyser(), { fftSize: METER_WINDOW, smoothingTimeConstant: 0.3 });
      this.buffer ??= new Float32Array(this.analyser.fftSize);
      this.source = this.ctx.createMediaStreamSource(new MediaStream([track]));
      this.source.connect(this.analyser);
    } catch (e) {
      console.warn('peercall: level meter unavailable', e);
      return;
    }
    if (!this.timer) this.timer = setInterval(() => this.#sample(), METER_EVERY_MS);
  }

  #sample() {
    if (!this.source || !this.track || !this.track.enabled || this.track.readyState !== 'live') {
      this.smoothed = 0;
      this.onLevel(0);
      return;
    }
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    const rms = Math.sqrt(sum / this.buffer.length);
    // Roughly perceptual: -60 dBFS → 0, 0 dBFS → 1.
    const db = 20 * Math.log10(rms || 1e-8);
    const level = Math.max(0, Math.min(1, (db + 60) / 60));
    this.smoothed = level > this.smoothed ? level : this.smoothed * METER_FALL + level * (1 - METER_FALL);
    this.onLevel(this.smoothed);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = 0;
    this.source?.disconnect();
    this.source = null;
    this.track = null;
    this.ctx?.close().catch(() => {});
    this.ctx = null;
    this.analyser = null;
    this.buffer = null;
  }
}
