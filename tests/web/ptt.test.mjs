// Push-to-talk and shortcuts (web/js/ptt.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PushToTalk, shortcutOf, SHORTCUTS } from '../../web/js/ptt.js';

const space = (over = {}) => ({ code: 'Space', key: ' ', repeat: false, micOn: false, ...over });

test('push-to-talk: hold space to talk while muted; release, or losing focus, mutes again', () => {
  const ptt = new PushToTalk();
  assert.equal(ptt.down(space()), 'unmute');
  assert.equal(ptt.down(space({ repeat: true, micOn: true })), 'swallow', 'auto-repeat while held');
  assert.equal(ptt.up(space()), 'mute');
  assert.equal(ptt.up(space()), null, 'a second key-up does nothing');
  assert.equal(ptt.down(space()), 'unmute');
  assert.equal(ptt.blur(), 'mute');
  assert.equal(ptt.blur(), null);
});

test('push-to-talk: not when the microphone is on, while typing, on a control, or with modifiers', () => {
  const ptt = new PushToTalk();
  assert.equal(ptt.down(space({ micOn: true })), null, 'already talking');
  assert.equal(ptt.down(space({ typing: true })), null, 'a space in the chat is a space');
  assert.equal(ptt.down(space({ onControl: true })), null, 'space presses the focused button');
  for (const mod of ['ctrl', 'meta', 'alt', 'shift']) assert.equal(ptt.down(space({ [mod]: true })), null, mod);
  assert.equal(ptt.down({ code: 'KeyA', key: 'a' }), null);
  assert.equal(ptt.down(space({ repeat: true })), null, 'a repeat without a first press (focus came mid-press)');
  assert.equal(ptt.held, false);
  assert.equal(ptt.up(space()), null);
});

test('shortcutOf: the listed shortcuts', () => {
  assert.equal(shortcutOf({ key: 'd', ctrl: true }), 'mic');
  assert.equal(shortcutOf({ key: 'D', meta: true }), 'mic');
  assert.equal(shortcutOf({ key: 'e', ctrl: true }), 'cam');
  assert.equal(shortcutOf({ key: 'c', ctrl: true, alt: true }), 'chat');
  assert.equal(shortcutOf({ key: 'ç', code: 'KeyC', ctrl: true, alt: true }), 'chat', 'a Mac option-key character');
  assert.equal(shortcutOf({ key: 'l', ctrl: true, alt: true }), 'leave');
  assert.equal(shortcutOf({ key: '?', shift: true }), 'help');
  assert.equal(shortcutOf({ key: '?', typing: true }), null, 'a question mark in the chat');
  assert.equal(shortcutOf({ key: 'd' }), null);
  assert.equal(shortcutOf({ key: 'c', ctrl: true }), null, 'Ctrl+C stays copy');
  assert.equal(SHORTCUTS.length, 6);
});
