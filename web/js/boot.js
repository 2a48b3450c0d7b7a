// The room page's first module (loaded with `async`, ahead of room.js and its modules): when the page will join
// at once (join=1 and a name), the camera starts and the signaling socket opens with the join now, so the camera,
// the welcome and the others' offers are there when the rest of the page has loaded and laid itself out, instead
// of starting after that.
// room.js hands `early` to its Signaling, which adopts the socket (signaling.js, earlySignaling). Both read the
// address with names.js parseRoomUrl, so they agree on whether, where and as whom the page joins.

import { parseRoomUrl } from './names.js';
import { store } from './util.js';
import { earlySignaling, signalingUrl } from './signaling.js';
import { captureEarly } from './media.js';

function start() {
  const { room, valid, name, autoJoin, token } = parseRoomUrl(location.pathname, location.search, store.get('name', ''));
  if (!autoJoin || !name || !valid) return null;
  // The camera too (media.js captureEarly): it takes a while to start, and room.js's LocalMedia adopts it.
  captureEarly();
  return earlySignaling({ url: signalingUrl(), room, name, token });
}

// The test hook (tests only: room.js installs it where the testHook flag is set) starts loading now, beside
// room.js's module graph, so room.js finds it loaded instead of waiting for one more fetch before it starts.
if (store.get('testHook', false) === true) import('./test-hook.js').catch(() => {});

/** The early signaling socket, or null; taken once. */
let early = start();
export function takeEarly() {
  const e = early;
  early = null;
  return e;
}
