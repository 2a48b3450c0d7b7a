// Display-name cleaning and room names (web/js/names.js), with the hostile input a peer or a pasted link can bring.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cleanName, initials, hueOf, parseRoomInput, parseRoomUrl, randomRoomName, ROOM_RE } from '../../web/js/names.js';

test('cleanName: control characters (C0, DEL, C1) are removed, whitespace around is trimmed', () => {
  assert.equal(cleanName('  Ada  '), 'Ada');
  assert.equal(cleanName('Ada\u0000Lovelace'), 'AdaLovelace');
  assert.equal(cleanName('Ada\nLovelace\r\t'), 'AdaLovelace');
  assert.equal(cleanName('\u001b[31mRed\u001b[0m'), '[31mRed[0m', 'terminal escapes lose their ESC');
  assert.equal(cleanName('a\u007fb\u0085c\u009bd'), 'abcd');
  assert.equal(cleanName('Zoë Ωmega 李'), 'Zoë Ωmega 李', 'letters of every script stay');
});

test('cleanName: nothing left means empty, and non-strings are stringified', () => {
  assert.equal(cleanName(''), '');
  assert.equal(cleanName('   \u0000\u0001\n'), '');
  assert.equal(cleanName(null), '');
  assert.equal(cleanName(undefined), '');
  assert.equal(cleanName(42), '42');
  assert.equal(cleanName({ toString: () => 'Obj' }), 'Obj');
});

test('cleanName: at most 64 characters, counted in code points (an emoji is never cut in half)', () => {
  assert.equal(cleanName('x'.repeat(500)), 'x'.repeat(64));
  const emoji = '😀'.repeat(70);
  const cleaned = cleanName(emoji);
  assert.equal(Array.from(cleaned).length, 64);
  assert.equal(cleaned, '😀'.repeat(64));
  assert.equal(cleaned.length, 128, 'UTF-16 length: 64 surrogate pairs');
});

test('cleanName: markup is kept as text (the page sets textContent; cleaning is not escaping)', () => {
  assert.equal(cleanName('<img src=x onerror=alert(1)>'), '<img src=x onerror=alert(1)>');
});

test('initials: one or two letters, uppercased, "?" when nothing is left', () => {
  assert.equal(initials('Ada Lovelace'), 'AL');
  assert.equal(initials('ada   byron lovelace'), 'AL');
  assert.equal(initials('bob'), 'B');
  assert.equal(initials('😀 smile'), '😀S');
  assert.equal(initials('\u0000 '), '?');
});

test('hueOf: stable and within 0..359', () => {
  assert.equal(hueOf('Ada'), hueOf('Ada'));
  assert.notEqual(hueOf('Ada'), hueOf('Bob'));
  for (const name of ['', 'Ada', '😀'.repeat(50), 'x'.repeat(1000)]) {
    const hue = hueOf(name);
    assert.ok(Number.isInteger(hue) && hue >= 0 && hue < 360, `${name.slice(0, 8)} → ${hue}`);
  }
});

test('room names: 1 to 64 of [A-Za-z0-9_-]', () => {
  assert.ok(ROOM_RE.test('brave-otter-42'));
  assert.ok(ROOM_RE.test('a'.repeat(64)));
  assert.ok(!ROOM_RE.test('a'.repeat(65)));
  assert.ok(!ROOM_RE.test(''));
  assert.ok(!ROOM_RE.test('../etc'));
  assert.ok(!ROOM_RE.test('room name'));
});

test('parseRoomInput: bare names, pasted links, spaces become dashes, anything else is refused', () => {
  assert.equal(parseRoomInput('brave-otter-42'), 'brave-otter-42');
  assert.equal(parseRoomInput('  https://call.example/r/brave-otter-42?name=Ada  '), 'brave-otter-42');
  assert.equal(parseRoomInput('call.example/r/team_7#x'), 'team_7');
  assert.equal(parseRoomInput('team standup'), 'team-standup');
  assert.equal(parseRoomInput(''), null);
  assert.equal(parseRoomInput(null), null);
  assert.equal(parseRoomInput('<script>'), null);
  assert.equal(parseRoomInput('https://call.example/r/../../admin'), null);
});

test('randomRoomName: adjective-animal and four digit groups, a valid room name', () => {
  for (let i = 0; i < 50; i++) {
    const name = randomRoomName();
    assert.match(name, /^[a-z]+-[a-z]+(-[0-9]{4}){4}$/);
    assert.ok(ROOM_RE.test(name));
  }
});

test('parseRoomUrl: the room page address as boot.js and room.js both read it', () => {
  assert.deepEqual(parseRoomUrl('/r/team-a', '?name=%20Ada%20&join=1&relay=1&token=T1&uplink=2000', 'Old'), {
    room: 'team-a', valid: true, name: 'Ada', autoJoin: true, relay: true, token: 'T1', uplink: '2000',
  });
  const plain = parseRoomUrl('/r/team-a', '', '');
  assert.deepEqual(plain, { room: 'team-a', valid: true, name: '', autoJoin: false, relay: false, token: undefined, uplink: null });
  assert.equal(parseRoomUrl('/r/team-a', '?name=', ' Grace\n').name, 'Grace', 'no name in the link: the stored one');
  assert.equal(parseRoomUrl('/r/team-a', '?name=%00%01', 'Grace').name, 'Grace', 'a name of control characters is none');
  assert.equal(parseRoomUrl('/r/team-a', '?join=true', 'Grace').autoJoin, false, 'only join=1 joins at once');
  assert.equal(parseRoomUrl('/r/team-a', '?relay=yes').relay, false);
  assert.equal(parseRoomUrl('/r/te%61m', '').room, 'team', 'the path is decoded');
});

test('parseRoomUrl: an address that is not a room is not valid, and never throws', () => {
  for (const path of ['/r/', '/r', '/', '', '/r/a%20b', '/r/..', `/r/${'x'.repeat(65)}`, '/r/%E0%A4%A', '/r/%']) {
    const { room, valid } = parseRoomUrl(path, '?name=Ada&join=1');
    assert.equal(valid, false, path);
    assert.equal(typeof room, 'string', path);
  }
  assert.equal(parseRoomUrl('/r/%', '').room, '', 'undecodable: no room');
  assert.equal(parseRoomUrl('/r/ok/extra', '').room, 'ok', 'the segment after /r/');
});
