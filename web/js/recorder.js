// Local recording of the call: every participant's video drawn onto a canvas (recording.js places them), all
// audio mixed with Web Audio, both recorded by MediaRecorder as WebM. Nothing leaves the browser: stop() hands
// back the file.

import { recordingBoxes, containRect, CANVAS_WIDTH, CANVAS_HEIGHT, FRAME_RATE } from './recording.js';
import { initials, hueOf } from './names.js';

/** Longest wait, when recording stops, for the encoder to finish the frames it was given. */
const DRAIN_MS = 8000;

export class CallRecorder {
  /**
   * @param {object} o
   * @param {() => Array<{key: string, name: string, video: HTMLVideoElement|null, showVideo: boolean,
   *                      audio: MediaStreamTrack|null}>} o.sources  who to draw and hear, asked every frame
   * @param {string} o.mimeType
   */
  constructor({ sources, mimeType }) {
    this.sources = sources;
    this.mimeType = mimeType;
    this.canvas = document.createElement('canvas');
    this.canvas.width = CANVAS_WIDTH;
    this.canvas.height = CANVAS_HEIGHT;
    this.g = this.canvas.getContext('2d');
    this.audio = new AudioContext();
    this.mix = this.audio.createMediaStreamDestination();
    this.inputs = new Map(); // audio track id → source node
    this.chunks = [];
    this.timer = 0;
    this.startedAt = 0;
    this.frames = 0; // drawn so far
  }

  start() {
    this.#frame();
    // Frame rate 0 and requestFrame() after each drawing: a frame per drawing, however busy the page's rendering is.
    this.video = this.canvas.captureStream(0).getVideoTracks()[0];
    const video = this.video;
    const stream = new MediaStream([video, ...this.mix.stream.getAudioTracks()]);
    this.recorder = new MediaRecorder(stream, { mimeType: this.mimeType, videoBitsPerSecond: 2_500_000, audioBitsPerSecond: 128_000 });
    this.recorder.ondataavailable = (e) => {
      if (e.data.size) this.chunks.push(e.data);
    };
    this.audio.resume().catch(() => {});
    this.recorder.start(1000);
    this.startedAt = Date.now();
    this.timer = setInterval(() => this.#frame(), 1000 / FRAME_RATE);
  }

  /** Stops; resolves with the recording (a WebM Blob). */
  stop() {
    clearInterval(this.timer);
    return new Promise((resolve) => {
      const done = () => {
        for (const track of this.recorder?.stream.getTracks() ?? []) track.stop();
        for (const node of this.inputs.values()) node.disconnect();
        this.audio.close().catch(() => {});
        resolve(new Blob(this.chunks, { type: 'video/webm' }));
      };
      if (!this.recorder || this.recorder.state === 'inactive') {
        done();
        return;
      }
      this.recorder.onstop = done;
      this.#drainThenStop();
    });
  }

  /**
   * The encoder may lag behind on a busy machine, and MediaRecorder.stop() drops the frames still queued in it: so
   * pause first (audio and video end at the same instant), ask for data until none comes (the queue is
   * drained: two empty answers in a row), then stop. At most DRAIN_MS.
   */
  #drainThenStop() {
    const recorder = this.recorder;
    try {
      recorder.pause();
    } catch {
      recorder.stop();
      return;
    }
    const deadline = Date.now() + DRAIN_MS;
    let empty = 0;
    const poll = () => {
      if (recorder.state === 'inactive') return;
      if (empty >= 2 || Date.now() > deadline) {
        recorder.stop();
        return;
      }
      recorder.addEventListener('dataavailable', (e) => {
        empty = e.data.size === 0 ? empty + 1 : 0;
        setTimeout(poll, 250);
      }, { once: true });
      recorder.requestData();
    };
    setTimeout(poll, 250);
  }

  /** Draws one frame and keeps the audio mix in step with who is in the call. */
  #frame() {
    const sources = this.sources();
    this.#mixAudio(sources);
    const g = this.g;
    g.fillStyle = '#0d0f14';
    g.fillRect(0, 0, CANVAS_WIDTH, CANVAS_HEIGHT);
    const boxes = recordingBoxes(sources.length);
    sources.forEach((s, i) => {
      const box = boxes[i];
      g.fillStyle = '#1b1f2a';
      g.fillRect(box.x, box.y, box.w, box.h);
      const v = s.video;
      if (s.showVideo && v && v.videoWidth > 0 && v.readyState >= 2) {
        const r = containRect(v.videoWidth, v.videoHeight, box);
        g.drawImage(v, r.x, r.y, r.w, r.h);
      } else {
        const radius = Math.min(box.w, box.h) * 0.18;
        g.fillStyle = `hsl(${hueOf(s.name)} 45% 42%)`;
        g.beginPath();
        g.arc(box.x + box.w / 2, box.y + box.h / 2, radius, 0, Math.PI * 2);
        g.fill();
        g.fillStyle = '#fff';
        g.font = `600 ${Math.round(radius * 0.8)}px system-ui, sans-serif`;
        g.textAlign = 'center';
        g.textBaseline = 'middle';
        g.fillText(initials(s.name), box.x + box.w / 2, box.y + box.h / 2);
      }
      g.font = '600 18px system-ui, sans-serif';
      g.textAlign = 'left';
      g.textBaseline = 'alphabetic';
      const label = s.name;
      const width = g.measureText(label).width + 20;
      g.fillStyle = 'rgba(0, 0, 0, .55)';
      g.fillRect(box.x + 10, box.y + box.h - 40, width, 30);
      g.fillStyle = '#fff';
      g.fillText(label, box.x + 20, box.y + box.h - 19);
    });
    this.video?.requestFrame?.();
    this.frames += 1;
  }

  #mixAudio(sources) {
    const live = new Set();
    for (const s of sources) {
      const track = s.audio;
      if (!track || track.readyState !== 'live') continue;
      live.add(track.id);
      if (this.inputs.has(track.id)) continue;
      try {
        const node = this.audio.createMediaStreamSource(new MediaStream([track]));
        node.connect(this.mix);
        this.inputs.set(track.id, node);
      } catch (e) {
        console.warn('peercall: cannot record this audio track', e);
      }
    }
    for (const [id, node] of this.inputs) {
      if (!live.has(id)) {
        node.disconnect();
        this.inputs.delete(id);
      }
    }
  }
}
