// Installable and honest offline: registers the service worker (web/sw.js) and, when the page was opened without
// a way to reach the server (served from the worker's cache), shows the "you are offline" screen instead of a call
// screen that can only fail. The screen goes away by itself when the server answers again.

const RETRY_MS = 5000;

/** Whether this server answers at all: any HTTP answer counts, only a network failure does not. */
export async function serverReachable(fetchImpl = fetch, online = navigator.onLine) {
  if (!online) return false;
  try {
    await fetchImpl('/healthz', { cache: 'no-store' });
    return true;
  } catch {
    return false;
  }
}

function offlineScreen() {
  const screen = document.getElementById('offline');
  if (!screen) return null;
  screen.querySelector('#offline-retry')?.addEventListener('click', () => check(screen));
  return screen;
}

let timer = null;
async function check(screen) {
  clearTimeout(timer);
  if (await serverReachable()) {
    if (!screen.hidden) location.reload(); // the page below never got its server; start it afresh
    return;
  }
  screen.hidden = false;
  // Everything under the screen is inert: no focus or click can reach a page that has no server behind it.
  for (const element of document.body.children) if (element !== screen) element.inert = true;
  screen.querySelector('#offline-retry')?.focus();
  timer = setTimeout(() => check(screen), RETRY_MS);
}

// After `load`, and on a room page a few seconds later still: the worker's first install fetches the whole shell
// (some 30 files), which should compete neither with the page's own files nor with the call it is starting
// (bench/call-setup.sh: the install ran beside the offer and answer).
const REGISTER_DELAY_MS = document.body?.classList.contains('room-page') ? 4000 : 0;
function registerWorker() {
  setTimeout(register, REGISTER_DELAY_MS);
}
function register() {
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((error) => {
    console.warn('peercall: the app could not be made available offline:', error);
  });
}
if ('serviceWorker' in navigator && window.isSecureContext) {
  if (document.readyState === 'complete') registerWorker();
  else window.addEventListener('load', registerWorker, { once: true });
}

// Only a page the worker may have answered from its cache needs the probe: without a controlling worker the page
// itself just came from the server.
const screen = offlineScreen();
if (screen && (!navigator.onLine || navigator.serviceWorker?.controller)) check(screen);
if (screen) window.addEventListener('online', () => check(screen));
