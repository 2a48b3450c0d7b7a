// Names: room names (the protocol's rules, readable random ones, parsing what a user pasted) and display names
// (cleaning what people type or send, initials and avatar hues). Pure: no DOM, no page state, so the same rules
// hold on the landing page, in the room and in the unit tests (tests/web/names.test.mjs).
//
// Random room names cannot be guessed yet stay readable: adjective-animal and four groups of four digits, e.g.
// "brave-otter-4821-0937-5512-8830". 64 adjectives × 64 animals × 10^16 ≈ 4.1 × 10^19 names, 65 bits: a
// server that answers 1,800 probes a second would need 700 million years to try half of them (and peercall
// throttles joins per address far below that). The digits read aloud and type easily on a phone.

/** Room names follow docs/protocol.md: 1–64 characters of [A-Za-z0-9_-]. */
export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Trims a display name and removes control characters; '' when nothing is left. Max 64 characters. */
export function cleanName(raw) {
  // eslint-disable-next-line no-control-regex
  return Array.from(String(raw ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim()).slice(0, 64).join('');
}

/**
 * What the room page's address (/r/<room>?name=NAME&join=1&relay=1&token=T&uplink=KBPS) asks for. boot.js (the
 * early join) and room.js read it through this one function, so they never disagree about whether the page joins
 * at once, as whom, or where. `storedName`: the name this browser used last (when the link carries none).
 * `room` is '' when the path does not decode (e.g. a stray "%"); `valid` says whether it is a room name at all.
 */
export function parseRoomUrl(pathname, search, storedName = '') {
  const params = new URLSearchParams(search);
  let room = '';
  try {
    room = decodeURIComponent(String(pathname ?? '').split('/')[2] ?? '');
  } catch {
    room = '';
  }
  return {
    room,
    valid: ROOM_RE.test(room),
    name: cleanName(params.get('name') ?? '') || cleanName(storedName),
    autoJoin: params.get('join') === '1',
    relay: params.get('relay') === '1',
    token: params.get('token') ?? undefined,
    uplink: params.get('uplink'),
  };
}

/** Extracts a room name from what a user typed: a bare name or a pasted invite link. */
export function parseRoomInput(raw) {
  const text = String(raw ?? '').trim();
  if (!text) return null;
  const fromLink = text.match(/\/r\/([A-Za-z0-9_-]{1,64})(?:[/?#]|$)/);
  if (fromLink) return fromLink[1];
  const slug = text.replace(/\s+/g, '-');
  return ROOM_RE.test(slug) ? slug : null;
}

/** "Ada Lovelace" → "AL"; one or two letters for the avatar. */
export function initials(name) {
  const parts = cleanName(name).split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  const first = Array.from(parts[0])[0] ?? '?';
  const last = parts.length > 1 ? (Array.from(parts[parts.length - 1])[0] ?? '') : '';
  return (first + last).toUpperCase();
}

/** A stable pleasant hue for a name, for avatars. */
export function hueOf(text) {
  let hash = 0;
  for (const ch of String(text)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

const ADJECTIVES = [
  'amber', 'bold', 'brave', 'bright', 'calm', 'clever', 'cosy', 'crisp', 'curious', 'daring', 'eager', 'fancy',
  'fast', 'fearless', 'fierce', 'friendly', 'gentle', 'glad', 'golden', 'grand', 'happy', 'hardy', 'honest',
  'jolly', 'keen', 'kind', 'lively', 'lucky', 'merry', 'mighty', 'misty', 'modest', 'noble', 'patient', 'peppy',
  'plucky', 'polite', 'proud', 'quick', 'quiet', 'rapid', 'ready', 'rosy', 'rustic', 'shiny', 'silent', 'silver',
  'smart', 'snowy', 'sunny', 'swift', 'tidy', 'tiny', 'upbeat', 'vivid', 'warm', 'wild', 'wise', 'witty',
  'zesty', 'breezy', 'cheery', 'dapper', 'frosty',
];

const ANIMALS = [
  'otter', 'badger', 'beaver', 'bison', 'camel', 'cat', 'cheetah', 'crane', 'deer', 'dolphin', 'eagle', 'falcon',
  'ferret', 'finch', 'fox', 'gecko', 'gazelle', 'heron', 'hedgehog', 'ibis', 'jaguar', 'koala', 'lemur', 'lion',
  'llama', 'lynx', 'marten', 'meerkat', 'moose', 'narwhal', 'newt', 'ocelot', 'orca', 'owl', 'panda', 'panther',
  'parrot', 'pelican', 'penguin', 'puffin', 'quail', 'rabbit', 'raven', 'robin', 'salmon', 'seal', 'shark',
  'sparrow', 'squid', 'stork', 'swan', 'tapir', 'tiger', 'toucan', 'turtle', 'walrus', 'whale', 'wolf', 'wombat',
  'yak', 'zebra', 'alpaca', 'bobcat', 'coyote',
];

/** Random bits in a room name made by randomRoomName (log2 of 64 × 64 × 10^16). */
export const ROOM_NAME_BITS = Math.log2(ADJECTIVES.length * ANIMALS.length) + 16 * Math.log2(10);

export function randomRoomName() {
  const adjective = ADJECTIVES[randomInt(ADJECTIVES.length)];
  const animal = ANIMALS[randomInt(ANIMALS.length)];
  const groups = Array.from({ length: 4 }, () => String(randomInt(10_000)).padStart(4, '0'));
  return `${adjective}-${animal}-${groups.join('-')}`;
}

/** Random integer in [0, n) from the platform CSPRNG. */
export function randomInt(n) {
  // Values in the incomplete last block of 2^32 are redrawn, so there is no modulo bias (n is at most 2^32).
  const limit = 2 ** 32 - (2 ** 32 % n);
  const buf = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(buf);
    if (buf[0] < limit) return buf[0] % n;
  }
}
