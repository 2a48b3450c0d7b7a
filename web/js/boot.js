// The room page's first module (loaded with `async`, ahead of room.js and its ~20 modules): when the page will
// join at once (join=1 and a name), the signaling socket opens and the join goes out now, so the welcome (and with
// it the offers) is there when the rest of the page has loaded and laid itself out, instead of starting after that.
// room.js hands `early` to its Signaling, which adopts the socket (signaling.js, earlySignaling).

import { cleanName, ROOM_RE } from './names.js';
import { store } from './util.js';
import { earlySignaling, signalingUrl } from './signaling.js';

function start() {
  const params = new URLSearchParams(location.search);
  let room = '';
  try {
    room = decodeURIComponent(location.pathname.split('/')[2] ?? '');
  } catch {
    return null;
  }
  const name = cleanName(params.get('name') ?? '') || cleanName(store.get('name', ''));
  if (params.get('join') !== '1' || !name || !ROOM_RE.test(room)) return null;
  return earlySignaling({ url: signalingUrl(), room, name, token: params.get('token') ?? undefined });
}

/** The early signaling socket, or null; taken once. */
let early = start();
export function takeEarly() {
  const e = early;
  early = null;
  return e;
}
