// Recording, the parts with no DOM (unit-tested in tests/web/recording.test.mjs): where each participant goes on
// the recording canvas, how a video fits its box, which format to record in, the file name, and who in the call
// is recording (announced over the data channel, docs/protocol.md) with the indicator's wording.

import { bestGrid } from './layout.js';

export const CANVAS_WIDTH = 960;
export const CANVAS_HEIGHT = 540;
export const FRAME_RATE = 20;
const GAP = 8;

/** Boxes {x, y, w, h} for `count` equal tiles on the canvas, centred, in reading order. */
export function recordingBoxes(count, width = CANVAS_WIDTH, height = CANVAS_HEIGHT) {
  if (count < 1) return [];
  const { cols, rows, w, h } = bestGrid(width, height, count, GAP, { minAspect: 4 / 3, maxAspect: 16 / 9 });
  const boxes = [];
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / cols);
    const inRow = row === rows - 1 ? count - row * cols : cols; // the last row may be shorter: centred too
    const col = i - row * cols;
    const rowWidth = inRow * w + (inRow - 1) * GAP;
    const x0 = (width - rowWidth) / 2;
    const y0 = (height - (rows * h + (rows - 1) * GAP)) / 2;
    boxes.push({ x: Math.round(x0 + col * (w + GAP)), y: Math.round(y0 + row * (h + GAP)), w, h });
  }
  return boxes;
}

/** Where a videoWidth × videoHeight picture goes inside `box`, whole (letterboxed), centred. */
export function containRect(videoWidth, videoHeight, box) {
  if (!(videoWidth > 0 && videoHeight > 0)) return { ...box };
  const scale = Math.min(box.w / videoWidth, box.h / videoHeight);
  const w = Math.round(videoWidth * scale);
  const h = Math.round(videoHeight * scale);
  return { x: box.x + Math.round((box.w - w) / 2), y: box.y + Math.round((box.h - h) / 2), w, h };
}

/** The first WebM type MediaRecorder supports (`supported`: MediaRecorder.isTypeSupported), or null. */
export function pickMimeType(supported) {
  for (const type of ['video/webm;codecs=vp8,opus', 'video/webm;codecs=vp9,opus', 'video/webm']) {
    if (supported(type)) return type;
  }
  return null;
}

/** "peercall-standup-2026-12-06-0139.webm" (local time). */
export function recordingFileName(room, date) {
  const p = (n) => String(n).padStart(2, '0');
  const safe = String(room).replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64) || 'call';
  return `peercall-${safe}-${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}-${p(date.getHours())}${p(date.getMinutes())}.webm`;
}

/** Who is recording: our own recording and what each peer announced. */
export class RecordingBook {
  constructor() {
    this.self = false;
    this.peers = new Map(); // key → name
  }

  /** A peer said it started (on) or stopped recording; returns whether that changed anything. */
  set(key, name, on) {
    const was = this.peers.has(key);
    if (on) this.peers.set(key, name);
    else this.peers.delete(key);
    return was !== on;
  }

  rename(key, name) {
    if (this.peers.has(key)) this.peers.set(key, name);
  }

  forget(key) {
    return this.peers.delete(key);
  }

  get anyone() {
    return this.self || this.peers.size > 0;
  }

  /** The indicator's text: "You are recording", "Ada is recording", "You, Ada and Bob are recording"; '' when none. */
  text() {
    const names = [...(this.self ? ['You'] : []), ...this.peers.values()];
    if (names.length === 0) return '';
    const list = names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
    return `${list} ${names.length === 1 && names[0] !== 'You' ? 'is' : 'are'} recording`;
  }
}
