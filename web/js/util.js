// Small DOM and formatting helpers shared by the landing and room pages.

/** querySelector with a clear failure when the page and the script disagree. */
export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`peercall: element ${selector} is missing from the page`);
  return el;
}

/**
 * Creates an element: h('button', {class: 'btn', onclick: fn, 'aria-label': 'Mute'}, 'text', child).
 * Attributes starting with "on" become listeners; `false`/`null` attributes are skipped; strings are text.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'style') {
      // Through the CSSOM: the pages' Content-Security-Policy refuses inline style attributes.
      for (const decl of String(value).split(';')) {
        const i = decl.indexOf(':');
        if (i > 0) el.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
      }
    }
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An icon from the sprite embedded in the page (<symbol id="i-NAME">). */
export function icon(name, extraClass = '') {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', `icon ${extraClass}`.trim());
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

/** Replaces the icon inside `button` (the first svg.icon). */
export function setIcon(button, name) {
  const use = button.querySelector('svg.icon use');
  if (use) use.setAttribute('href', `#i-${name}`);
}

/** localStorage that never throws (private mode, disabled storage, quota). */
export const store = {
  get(key, fallback = null) {
    try {
      const v = localStorage.getItem(`peercall.${key}`);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`peercall.${key}`, JSON.stringify(value));
    } catch {
      /* storage unavailable: preferences are simply not remembered */
    }
  },
};

/** Room names follow docs/protocol.md: 1–64 characters of [A-Za-z0-9_-]. */
export const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Trims a display name and removes control characters; '' when nothing is left. Max 64 characters. */
export function cleanName(raw) {
  // eslint-disable-next-line no-control-regex
  return Array.from(String(raw ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim()).slice(0, 64).join('');
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

export function formatBitrate(bps) {
  if (!Number.isFinite(bps)) return '—';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

export function formatTime(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

let toastRoot = null;

/** A short message at the bottom of the screen, also read by screen readers. */
export function toast(text, { kind = 'info', timeout = 3500 } = {}) {
  toastRoot ??= document.getElementById('toasts');
  if (!toastRoot) return;
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  toastRoot.append(el);
  requestAnimationFrame(() => el.classList.add('show'));
  setTimeout(() => {
    el.classList.remove('show');
    setTimeout(() => el.remove(), 300);
  }, timeout);
}

/** Copies text; falls back to a selected temporary field when the Clipboard API is unavailable (http on a LAN). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const field = h('textarea', { class: 'offscreen', readonly: true }, text);
    document.body.append(field);
    field.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    field.remove();
    return ok;
  }
}

/** Random integer in [0, n) from the platform CSPRNG. */
export function randomInt(n) {
  // Uniform in [0, n) from the browser's CSPRNG: values in the incomplete last block of 2^32 are redrawn, so
  // there is no modulo bias (n is at most 2^32).
  const limit = 2 ** 32 - (2 ** 32 % n);
  const buf = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(buf);
    if (buf[0] < limit) return buf[0] % n;
  }
}
