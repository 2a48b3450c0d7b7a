// The Files panel: one row per transfer (name, size, who, a progress bar, state, Cancel or Save). The transfers
// themselves are files.js; this module only builds the elements.

import { h, icon } from './util.js';
import { formatBytes, reasonText } from './files.js';

/** The state line of a transfer, for the user. */
export function transferText(t) {
  const pct = t.size ? Math.floor((t.bytes * 100) / t.size) : 100;
  switch (t.state) {
    case 'sending': return t.bytes ? `Sending… ${pct} %` : 'Waiting…';
    case 'receiving': return `Receiving… ${pct} %`;
    case 'done': return t.direction === 'out' ? 'Sent' : 'Received';
    default: return reasonText(t.reason, { mine: t.state === 'cancelled' && t.cancelledHere });
  }
}

/**
 * Fills `list` with rows: [{key, transfer, peerName, url, onCancel}] (url: the object URL of a received file).
 */
export function renderFileRows(list, rows) {
  if (rows.length === 0) {
    list.replaceChildren(h('li', { class: 'muted small file-empty' }, 'No files yet.'));
    return;
  }
  list.replaceChildren(...rows.map(({ key, transfer: t, peerName, url, onCancel }) => {
    const active = t.state === 'sending' || t.state === 'receiving';
    return h('li', { class: 'file-row', dataset: { key, state: t.state, direction: t.direction } },
      h('div', { class: 'file-head' },
        icon('file'),
        h('span', { class: 'file-name', title: t.name }, t.name),
        h('span', { class: 'muted small' }, formatBytes(t.size))),
      h('div', { class: 'muted small' }, t.direction === 'out' ? `To ${peerName}` : `From ${peerName}`),
      h('progress', { class: 'file-progress', max: String(t.size || 1), value: String(t.size ? t.bytes : 1), 'aria-label': `${t.name}: ${transferText(t)}` }),
      h('div', { class: 'file-foot' },
        h('span', { class: 'small file-state' }, transferText(t)),
        active ? h('button', { type: 'button', class: 'btn btn-ghost btn-sm file-cancel', onclick: onCancel, dataset: { focus: `cancel:${key}` }, 'aria-label': `Cancel ${t.name}` }, 'Cancel') : null,
        t.state === 'done' && url ? h('a', { class: 'btn btn-primary btn-sm file-save', href: url, download: t.name, dataset: { focus: `save:${key}` }, 'aria-label': `Save ${t.name}` }, 'Save') : null));
  }));
}
