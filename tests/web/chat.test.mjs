// Chat rules (web/js/chat.js): what a message may be, which messages share a header, the closed-panel notification.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatText, continuesGroup, chatPreview, MAX_CHAT, GROUP_WITHIN_MS } from '../../web/js/chat.js';

test('chatText: trimmed, cut at MAX_CHAT, empty when only whitespace', () => {
  assert.equal(chatText('  hello \n'), 'hello');
  assert.equal(chatText(' \n\t '), '');
  assert.equal(chatText('x'.repeat(MAX_CHAT + 500)).length, MAX_CHAT);
  // Cut first, then trimmed: padding cannot smuggle a longer message past the limit.
  assert.equal(chatText(`${' '.repeat(MAX_CHAT)}hidden`), '');
  assert.equal(chatText(42), '42');
});

test('continuesGroup: same sender within two minutes; ids compared as strings', () => {
  const at = (ms) => new Date(1_000_000 + ms);
  const first = { from: 'a', at: at(0) };
  assert.equal(continuesGroup(undefined, { from: 'a', at: at(1) }), false);
  assert.equal(continuesGroup(first, { from: 'a', at: at(GROUP_WITHIN_MS - 1) }), true);
  assert.equal(continuesGroup(first, { from: 'a', at: at(GROUP_WITHIN_MS) }), false);
  assert.equal(continuesGroup(first, { from: 'b', at: at(1) }), false);
  assert.equal(continuesGroup({ from: null, at: at(0) }, { from: null, at: at(1) }), true, 'our own messages before we have an id');
  assert.equal(continuesGroup({ from: 7, at: at(0) }, { from: '7', at: at(1) }), true);
});

test('chatPreview: "name: text", cut after 80 characters', () => {
  assert.equal(chatPreview({ name: 'Ada', text: 'hi' }), 'Ada: hi');
  assert.equal(chatPreview({ name: 'Ada', text: 'y'.repeat(80) }), `Ada: ${'y'.repeat(80)}`);
  assert.equal(chatPreview({ name: 'Ada', text: 'z'.repeat(81) }), `Ada: ${'z'.repeat(80)}…`);
});
