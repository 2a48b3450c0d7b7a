// The service worker: keeps the app shell (pages, scripts, styles, icons) so peercall installs as an app and opens
// without a network, where the page then says that it is offline instead of the browser's error page.
//
// Network first, cache as the fallback: online, every file comes from the server exactly as without a worker (so an
// upgraded server is never hidden behind old files); the cache only answers when the server cannot be reached.
// The server fills in BUILD (a hash over every embedded file) and SHELL (their paths) when it serves this file, so
// a new binary installs a new worker with a fresh cache and nobody maintains a file list by hand. Signaling, /qr,
// /healthz and /metrics are never cached or answered from the cache.

const BUILD = 'dev';
const SHELL = [];
const CACHE = `peercall-shell-${BUILD}`;
const PREFIX = 'peercall-shell-';

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // `no-cache`: revalidate with the server so the cache holds this build's files, not the HTTP cache's.
    await cache.addAll(SHELL.map((path) => new Request(path, { cache: 'no-cache' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith(PREFIX) && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

/** The cache entry that answers `url` offline, or null for what must always come from the network. */
function shellKey(url) {
  if (url.origin !== self.location.origin) return null;
  if (url.pathname.startsWith('/r/')) return '/room.html'; // every room opens the same page
  if (url.pathname === '/') return '/';
  return SHELL.includes(url.pathname) ? url.pathname : null;
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const key = shellKey(new URL(request.url));
  if (!key) return;
  event.respondWith((async () => {
    try {
      const response = await fetch(request);
      if (response.status === 200) {
        const copy = response.clone();
        event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)));
      }
      return response;
    } catch (error) {
      const cached = await caches.match(key, { cacheName: CACHE });
      if (cached) return cached;
      throw error;
    }
  })());
});
