// Recording rules (web/js/recording.js): canvas boxes, fitting video, format, file name, who is recording.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recordingBoxes, containRect, pickMimeType, recordingFileName, RecordingBook, CANVAS_WIDTH, CANVAS_HEIGHT } from '../../web/js/recording.js';

const inside = (b) => b.x >= 0 && b.y >= 0 && b.x + b.w <= CANVAS_WIDTH && b.y + b.h <= CANVAS_HEIGHT;
const overlap = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

test('recordingBoxes: equal tiles on the canvas, no overlap, the last row centred', () => {
  assert.deepEqual(recordingBoxes(0), []);
  const one = recordingBoxes(1);
  assert.equal(one.length, 1);
  assert.ok(one[0].w >= CANVAS_WIDTH - 100 && inside(one[0]), JSON.stringify(one));
  for (let n = 2; n <= 9; n++) {
    const boxes = recordingBoxes(n);
    assert.equal(boxes.length, n);
    for (const b of boxes) assert.ok(inside(b), `${n}: ${JSON.stringify(b)}`);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.ok(!overlap(boxes[i], boxes[j]), `${n}: ${i} and ${j} overlap`);
    assert.ok(new Set(boxes.map((b) => `${b.w}x${b.h}`)).size === 1, 'all the same size');
  }
  const three = recordingBoxes(3); // 2 + 1: the lone tile of the last row sits in the middle
  if (three[2].y !== three[0].y) assert.ok(Math.abs(three[2].x + three[2].w / 2 - CANVAS_WIDTH / 2) <= 1);
});

test('containRect: whole picture, centred, aspect kept', () => {
  const box = { x: 100, y: 50, w: 400, h: 300 };
  assert.deepEqual(containRect(640, 480, box), { x: 100, y: 50, w: 400, h: 300 });
  assert.deepEqual(containRect(1280, 720, box), { x: 100, y: 88, w: 400, h: 225 });
  assert.deepEqual(containRect(480, 640, box), { x: 188, y: 50, w: 225, h: 300 });
  assert.deepEqual(containRect(0, 0, box), box, 'no picture yet: the whole box');
});

test('pickMimeType and recordingFileName', () => {
  assert.equal(pickMimeType(() => true), 'video/webm;codecs=vp8,opus');
  assert.equal(pickMimeType((t) => t === 'video/webm'), 'video/webm');
  assert.equal(pickMimeType(() => false), null);
  assert.equal(recordingFileName('standup', new Date(2026, 11, 6, 9, 5)), 'peercall-standup-2026-12-06-0905.webm');
  assert.equal(recordingFileName('../x y', new Date(2026, 0, 1, 0, 0)), 'peercall-xy-2026-01-01-0000.webm');
});

test('RecordingBook: who is recording, and the indicator text', () => {
  const book = new RecordingBook();
  assert.equal(book.text(), '');
  assert.equal(book.anyone, false);
  assert.equal(book.set('a', 'Ada', true), true);
  assert.equal(book.set('a', 'Ada', true), false, 'a repeated announcement changes nothing');
  assert.equal(book.text(), 'Ada is recording');
  book.self = true;
  assert.equal(book.text(), 'You and Ada are recording');
  book.set('b', 'Bob', true);
  assert.equal(book.text(), 'You, Ada and Bob are recording');
  book.self = false;
  book.rename('b', 'Robert');
  assert.equal(book.text(), 'Ada and Robert are recording');
  assert.equal(book.set('a', 'Ada', false), true);
  assert.equal(book.forget('b'), true);
  assert.equal(book.anyone, false);
  book.self = true;
  assert.equal(book.text(), 'You are recording');
});
