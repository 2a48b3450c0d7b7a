// The signaling client: one WebSocket to peercall (docs/protocol.md), with automatic reconnection.
//
// - Reconnects by itself with exponential backoff and jitter (0.5 s … 10 s) whenever the socket drops, sending
//   the `resume` token of the last `welcome` so the server can give the same peer id back.
// - Paces outgoing messages (token bucket, below the server's per-connection rate limit) so a burst of ICE
//   candidates never trips `rate-limited`.
// - Application keepalive: `ping` every 10 s; a socket silent for 25 s is considered dead and replaced.
//   `probe()` checks at once (a ping that must be answered within 1.5 s): the room calls it when a peer's media
//   stops, as a network change kills the socket too, silently, and the ICE restart needs signaling.
// - While disconnected, messages are queued (bounded) and sent after a resumed `welcome`; if the server did not
//   resume the session (new peer id), the queue addressed to the old session is dropped.
//
// Events (EventTarget, detail in `event.detail`):
//   state    {state, retryIn}      state: 'connecting' | 'connected' | 'reconnecting' | 'closed'
//   welcome  message               every welcome (first and after each reconnect)
//   signal   message               any other server message except pong and error
//   error    message               a refused message (the connection is kept)
//   fatal    {code, message}       the server refused us for good (room full, wrong password, ...)

import { mark } from './util.js';

export const PROTOCOL_VERSION = 1;

/** Errors after which the server closes the connection: reconnecting would not help. */
const FATAL = new Set([
  'room-full', 'wrong-password', 'bad-token', 'too-many-rooms', 'too-many-connections', 'too-many-joins', 'abuse',
  'unsupported-version',
]);

/** Close code of a draining cluster node: reconnect (and resume) elsewhere right away. */
const DRAINING = 4001;

const RATE_PER_SEC = 30; // server default limit: 50 messages per second per connection
const BURST = 30;
const MAX_QUEUE = 500;
const PING_EVERY_MS = 10_000;
const DEAD_AFTER_MS = 25_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const CONNECT_TIMEOUT_MS = 8_000;
const PROBE_MS = 1_500;

export function signalingUrl(loc = location) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

/** The `join` message of `options` (and of `resume`, the token of the session to resume, if any). */
function joinMessage(options, resume) {
  const join = { v: PROTOCOL_VERSION, type: 'join', room: options.room, name: options.name };
  if (options.password) join.password = options.password;
  if (options.token) join.token = options.token;
  if (resume) join.resume = resume;
  return join;
}

/**
 * The socket URL that joins by itself (`/ws?join=...`, docs/protocol.md): the server joins when the handshake
 * completes instead of when this page, busy loading, gets round to its open event and sends the join. Not with a
 * password or a resume token: secrets stay out of URLs (server and proxy logs keep them). Null: join by message.
 */
function joiningUrl(url, options, resume) {
  if (options.password || resume) return null;
  return `${url}${url.includes('?') ? '&' : '?'}join=${encodeURIComponent(JSON.stringify(joinMessage(options, null)))}`;
}

/**
 * Messages an early socket keeps for its Signaling; more than this and it is given up (Signaling connects anew).
 * Everyone in the room offers to a newcomer (docs/protocol.md), so before the page has loaded it may hold an
 * offer, a dozen candidates and a state message from each of them: room for a large room's worth.
 */
const EARLY_MESSAGES = 512;

/**
 * Opens the signaling socket and sends the join as soon as it opens, before the page that uses it has loaded
 * (web/js/boot.js, the room page's first module): the handshake and the welcome then run beside the rest of the
 * page instead of after it. What arrives is kept until `new Signaling({...options, early})` adopts the socket; a
 * Signaling whose options differ (another name, a password) closes it and connects on its own.
 * @param {{url: string, room: string, name: string, password?: string, token?: string}} options
 */
export function earlySignaling(options) {
  const joining = joiningUrl(options.url, options, null);
  // joined: the join is sent (or rides in the URL); open: the socket is open.
  const early = { options: { ...options }, ws: null, joined: Boolean(joining), open: false, messages: [], spoiled: false };
  try {
    early.ws = new WebSocket(joining ?? options.url);
  } catch {
    return null;
  }
  early.ws.onopen = () => {
    mark('ws-open');
    early.open = true;
    if (!early.joined) early.ws.send(JSON.stringify(joinMessage(options, null)));
    early.joined = true;
  };
  early.ws.onmessage = (event) => {
    if (early.messages.length >= EARLY_MESSAGES) early.spoiled = true;
    else early.messages.push(event.data);
  };
  return early;
}

export class Signaling extends EventTarget {
  /**
   * @param {{url: string, room: string, name: string, password?: string, token?: string, early?: object}} options
   *   early: a socket opened by earlySignaling, used for the first connection when it was opened for the same room,
   *   name, password and token and is still usable
   */
  constructor({ early = null, ...options }) {
    super();
    this.options = { ...options };
    this.early = early;
    this.state = 'idle';
    this.id = null;
    this.resumeToken = null;
    this.ws = null;
    this.attempt = 0;
    this.queue = [];
    this.tokens = BURST;
    this.lastRefill = performance.now();
    this.pumpTimer = null;
    this.retryTimer = null;
    this.retryAt = 0;
    this.pingTimer = null;
    this.connectTimer = null;
    this.probeTimer = null;
    this.lastRx = 0;
    this.stopped = false;
    this.joined = false; // a welcome was received on the current socket
    this.onOnline = () => {
      if (this.state === 'reconnecting') this.reconnectNow();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.#connect();
  }

  get connected() {
    return this.state === 'connected';
  }

  /** Sends a message, paced; queued while disconnected. */
  send(message) {
    if (this.stopped) return;
    if (this.queue.length >= MAX_QUEUE) this.queue.shift(); // oldest first: they are the most likely stale
    this.queue.push(message);
    this.#pump();
  }

  /** Pings now; a socket that does not answer within PROBE_MS is given up and replaced (no backoff wait). */
  probe() {
    const ws = this.ws;
    if (this.stopped || !ws || ws.readyState !== WebSocket.OPEN || !this.joined || this.probeTimer) return;
    const sent = performance.now();
    ws.send(JSON.stringify({ type: 'ping' }));
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.ws !== ws || this.lastRx >= sent) return;
      console.info('peercall: signaling did not answer a probe; reconnecting');
      this.#abandon(ws);
      this.#connect();
    }, PROBE_MS);
  }

  /** Drops `ws` now (without waiting for a closing handshake a dead socket never completes). */
  #abandon(ws) {
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close();
    } catch {
      /* closing anyway */
    }
    if (this.ws !== ws) return;
    clearTimeout(this.connectTimer);
    this.ws = null;
    this.joined = false;
    clearInterval(this.pingTimer);
  }

  /** Changes the display name (others get peer-updated); also used on the next join. */
  rename(name) {
    this.options.name = name;
    if (this.connected) this.send({ type: 'rename', name });
  }

  /** Leaves the room for good: no grace period, no reconnect. */
  leave() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.joined) {
      try {
        this.ws.send(JSON.stringify({ type: 'leave' }));
      } catch {
        /* closing anyway */
      }
    }
    this.#stop('closed');
  }

  /** Skips the backoff wait (the user pressed "Retry now", or the network came back). */
  reconnectNow() {
    if (this.stopped || this.state !== 'reconnecting') return;
    clearTimeout(this.retryTimer);
    this.#connect();
  }

  #setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, ...extra } }));
  }

  #connect() {
    clearTimeout(this.retryTimer);
    this.joined = false;
    this.#setState(this.attempt === 0 && !this.id ? 'connecting' : 'reconnecting', { retryIn: 0 });
    const early = this.#adoptEarly();
    let ws = early?.ws;
    // The join is in the URL (or sent already, by the early socket): the open event has nothing to send.
    let joinSent = Boolean(early?.joined);
    if (!ws) {
      const joining = joiningUrl(this.options.url, this.options, this.resumeToken);
      joinSent = Boolean(joining);
      try {
        ws = new WebSocket(joining ?? this.options.url);
      } catch (e) {
        this.dispatchEvent(new CustomEvent('fatal', { detail: { code: 'bad-url', message: String(e) } }));
        this.#stop('closed');
        return;
      }
    }
    this.ws = ws;
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && !this.joined) ws.close(); // a stalled handshake counts as a failed attempt
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      mark('ws-open');
      this.lastRx = performance.now();
      if (!joinSent) ws.send(JSON.stringify(joinMessage(this.options, this.resumeToken)));
      joinSent = true;
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastRx = performance.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('peercall: signaling sent invalid JSON', event.data);
        return;
      }
      if (!message || typeof message !== 'object' || typeof message.type !== 'string') return;
      this.#receive(ws, message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      clearTimeout(this.connectTimer);
      this.ws = null;
      this.joined = false;
      clearInterval(this.pingTimer);
      if (this.stopped) return;
      // 4001: the node is draining (docs/protocol.md); another node takes the resume at once.
      if (event?.code === DRAINING) this.attempt = 0;
      this.#scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows and schedules the reconnect */
    };
    if (early?.open) {
      // Open and joined already: what it received goes through the handlers above, after start() returns.
      this.lastRx = performance.now();
      const pending = early.messages;
      queueMicrotask(() => {
        for (const data of pending) if (this.ws === ws) ws.onmessage({ data });
      });
    }
  }

  /** The early socket (earlySignaling), once, if it fits this connection; otherwise it is closed. */
  #adoptEarly() {
    const early = this.early;
    this.early = null;
    if (!early?.ws) return null;
    const o = early.options;
    const same = o.url === this.options.url && o.room === this.options.room && o.name === this.options.name
      && (o.password ?? '') === (this.options.password ?? '') && (o.token ?? '') === (this.options.token ?? '');
    const usable = early.ws.readyState === WebSocket.OPEN || early.ws.readyState === WebSocket.CONNECTING;
    early.ws.onopen = null;
    early.ws.onmessage = null;
    if (same && usable && !early.spoiled && !this.resumeToken) return early;
    try {
      early.ws.close();
    } catch {
      /* closing anyway */
    }
    return null;
  }

  #receive(ws, message) {
    switch (message.type) {
      case 'welcome': {
        clearTimeout(this.connectTimer);
        const resumed = message.resumed === true && message.id === this.id;
        if (!resumed) this.queue = this.queue.filter((m) => !('to' in m)); // addressed to the old session
        this.id = message.id;
        this.resumeToken = typeof message.resume === 'string' ? message.resume : null;
        this.joined = true;
        this.attempt = 0;
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.#keepalive(ws), PING_EVERY_MS);
        this.#setState('connected');
        this.dispatchEvent(new CustomEvent('welcome', { detail: { ...message, resumed } }));
        this.#pump();
        return;
      }
      case 'pong':
        return;
      case 'error': {
        const code = String(message.code ?? 'unknown');
        if (code === 'unavailable') {
          // The cluster store is down for a moment: the server closes; reconnecting with back-off will do.
          this.dispatchEvent(new CustomEvent('error', { detail: message }));
          return;
        }
        if (FATAL.has(code)) {
          this.dispatchEvent(new CustomEvent('fatal', { detail: { code, message: message.message } }));
          this.#stop('closed');
          return;
        }
        if (!this.joined && message.ref === 'join') {
          if (this.resumeToken) {
            // The resume token was refused (server restarted, say): join afresh.
            this.resumeToken = null;
            ws.close();
            return;
          }
          this.dispatchEvent(new CustomEvent('fatal', { detail: { code, message: message.message } }));
          this.#stop('closed');
          return;
        }
        this.dispatchEvent(new CustomEvent('error', { detail: message }));
        return;
      }
      default:
        this.dispatchEvent(new CustomEvent('signal', { detail: message }));
    }
  }

  #keepalive(ws) {
    if (this.ws !== ws) return;
    if (performance.now() - this.lastRx > DEAD_AFTER_MS) {
      ws.close(); // half-open socket: onclose reconnects
      return;
    }
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
  }

  #scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.retryAt = performance.now() + delay;
    this.#setState('reconnecting', { retryIn: delay });
    this.retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Sends queued messages at most RATE_PER_SEC per second. */
  #pump() {
    if (this.pumpTimer) return;
    const now = performance.now();
    this.tokens = Math.min(BURST, this.tokens + ((now - this.lastRefill) / 1000) * RATE_PER_SEC);
    this.lastRefill = now;
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.joined) return;
    while (this.queue.length > 0 && this.tokens >= 1) {
      const message = this.queue.shift();
      this.tokens -= 1;
      try {
        ws.send(JSON.stringify(message));
      } catch (e) {
        console.warn('peercall: cannot send', e);
      }
    }
    if (this.queue.length > 0) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null;
        this.#pump();
      }, Math.ceil(1000 / RATE_PER_SEC));
    }
  }

  #stop(state) {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.pumpTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.probeTimer);
    clearInterval(this.pingTimer);
    this.pumpTimer = null;
    this.queue = [];
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
    this.#setState(state);
  }
}
