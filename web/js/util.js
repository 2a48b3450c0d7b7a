// Small DOM, storage and formatting helpers shared by the landing and room pages (names live in names.js).

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

/**
 * Re-renders `container` with `render()` and gives the keyboard focus back to the new element with the same
 * `data-focus` key (panels that re-render every second must not throw a keyboard user's focus away).
 */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset?.focus : null;
  render();
  if (key) container.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
}

/**
 * A User Timing mark named `peercall:NAME` (detail: which peer, when it concerns one), for the call-setup
 * benchmark (bench/call-setup.sh) and the browser's performance panel. Marks are cheap and stay in the page:
 * nothing is sent anywhere. Each name is marked once per peer (the first time is the one that counts).
 */
const marked = new Set();
export function mark(name, peer = null) {
  const key = `${name} ${peer ?? ''}`;
  if (marked.has(key) || typeof performance?.mark !== 'function') return;
  marked.add(key);
  try {
    performance.mark(`peercall:${name}`, { detail: peer ? { peer } : null });
  } catch {
    /* marks are best effort */
  }
}
