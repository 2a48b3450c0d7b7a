// Recording in the call: our own recording (recorder.js draws and mixes; loaded once the call is up, since a call
// does not need it to start), saving it as a download, telling the others, and the indicator of who records
// (recording.js RecordingBook: us, and what peers announced over the data channel).

import { $, h, toast } from './util.js';
import { RecordingBook, pickMimeType, recordingFileName } from './recording.js';
import { formatBytes } from './files.js';

export class CallRecording {
  /**
   * @param {object} o
   * @param {string} o.room
   * @param {() => import('./participant.js').Participant[]} o.links  everyone else in the call
   * @param {() => Array<object>} o.sources  who to draw and hear (CallRecorder's sources), asked every frame
   * @param {() => boolean} o.inCall
   */
  constructor({ room, links, sources, inCall }) {
    this.room = room;
    this.links = links;
    this.sources = sources;
    this.inCall = inCall;
    this.book = new RecordingBook();
    this.recorder = null; // CallRecorder while we record
    this.starting = false;
    this.fileName = null;
    this.code = null; // the promise of recorder.js
  }

  /** Whether we record (a peer whose data channel opens is told so). */
  get active() {
    return Boolean(this.recorder);
  }

  /** Loads recorder.js ahead of the first click (the room calls this once the call is up). */
  load() {
    this.code ??= import('./recorder.js').catch((e) => {
      this.code = null;
      throw e;
    });
    return this.code;
  }

  toggle() {
    if (this.recorder) this.stop();
    else this.start();
  }

  /** Starts recording; resolves with whether it started. */
  async start() {
    if (this.recorder || this.starting || !this.inCall()) return false;
    const mimeType = window.MediaRecorder ? pickMimeType((t) => MediaRecorder.isTypeSupported(t)) : null;
    if (!mimeType) {
      toast('This browser cannot record WebM video', { kind: 'warn' });
      return false;
    }
    this.starting = true;
    try {
      const { CallRecorder } = await this.load();
      if (!this.inCall()) return false; // left while it loaded
      this.recorder = new CallRecorder({ sources: this.sources, mimeType });
      this.recorder.start();
    } catch (e) {
      this.recorder = null;
      toast(`Cannot record: ${e.message}`, { kind: 'error' });
      return false;
    } finally {
      this.starting = false;
    }
    this.fileName = recordingFileName(this.room, new Date());
    this.book.self = true;
    for (const p of this.links()) p.peer.sendData({ t: 'recording', on: true });
    this.render();
    toast('Recording. Everyone in the call sees that you are recording.', { timeout: 4000 });
    return true;
  }

  /** Stops, saves the file (a download), tells the others. Resolves with the file's size. */
  async stop() {
    const recorder = this.recorder;
    if (!recorder) return 0;
    this.recorder = null;
    this.book.self = false;
    for (const p of this.links()) p.peer.sendData({ t: 'recording', on: false });
    this.render();
    const blob = await recorder.stop();
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: this.fileName ?? recordingFileName(this.room, new Date()), class: 'offscreen' });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    toast(`Recording saved (${formatBytes(blob.size)})`, { kind: 'success' });
    return blob.size;
  }

  /** `p` said over the data channel that it started (on) or stopped recording. */
  peerSaid(p, on) {
    if (!this.book.set(p, p.name, on)) return;
    toast(on ? `${p.name} started recording this call` : `${p.name} stopped recording`, { kind: on ? 'warn' : 'info', timeout: 5000 });
    this.render();
  }

  renamed(p) {
    this.book.rename(p, p.name);
    this.render();
  }

  /** `p` left. */
  forget(p) {
    if (this.book.forget(p)) this.render();
  }

  render() {
    const text = this.book.text();
    $('#rec-indicator').hidden = !text;
    $('#rec-text').textContent = text;
    const mine = Boolean(this.recorder);
    const button = $('#ctl-record');
    button.setAttribute('aria-pressed', String(mine));
    button.setAttribute('aria-label', mine ? 'Stop recording' : 'Record the call');
    button.querySelector('.ctl-label').textContent = mine ? 'Stop' : 'Record';
    button.classList.toggle('ctl-recording', mine);
  }
}
