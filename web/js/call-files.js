// Files in the call: each participant's file channel (files.js moves the bytes), sending (the picker, drag and
// drop), the target picker, the Files badge, and the Files panel (files-panel.js draws its rows; loaded when the
// panel first shows, since a call does not need it to start). Transfers with people who left stay listed, so a
// received file can still be saved.

import { $, h, keepFocus, toast } from './util.js';
import { FileChannel, checkFile, formatBytes } from './files.js';

/** Transfers kept from people who left. */
const KEEP_PAST = 50;

export class CallFiles {
  /**
   * @param {object} o
   * @param {import('./roster.js').Roster} o.roster
   * @param {() => string|null} o.panel          the side panel shown
   * @param {(name: string) => void} o.openPanel
   */
  constructor({ roster, panel, openPanel }) {
    this.roster = roster;
    this.panel = panel;
    this.openPanel = openPanel;
    /** Files offered to us while the Files panel was closed (the badge). */
    this.unseen = 0;
    /** {transfer, peerName, peerId} of people who left. */
    this.past = [];
    this.frame = 0;
    this.panelCode = null; // files-panel.js, once loaded
    this.loading = null;
  }

  bind() {
    $('#file-choose').addEventListener('click', () => $('#file-input').click());
    $('#file-input').addEventListener('change', (e) => {
      this.send([...e.target.files], $('#file-target').value);
      e.target.value = '';
    });
    this.#bindDrop();
  }

  /** `p`'s connection exists: its file channel gets a FileChannel. */
  wire(p) {
    if (p.files || !p.peer.fileDc) return;
    const files = new FileChannel(p.peer.fileDc);
    p.files = files;
    files.addEventListener('change', (e) => {
      const t = e.detail;
      if (t.state === 'done' && t.direction === 'in' && t.blob && !t.url) t.url = URL.createObjectURL(t.blob);
      this.scheduleRender();
    });
    files.addEventListener('incoming', (e) => {
      const t = e.detail;
      if (t.state === 'failed') {
        toast(`${p.name} tried to send ${t.name} (${formatBytes(t.size)}): refused, files up to 100 MB can be received.`, { kind: 'warn', timeout: 8000 });
      } else {
        toast(`${p.name} is sending you ${t.name} (${formatBytes(t.size)})`, { timeout: 5000 });
      }
      if (this.panel() !== 'files') this.unseen += 1;
      this.scheduleRender();
    });
  }

  /** `p` left: its transfers end, and stay listed. */
  close(p) {
    if (p.files) {
      p.files.close();
      this.past.push(...p.files.list().map((transfer) => ({ transfer, peerName: p.name, peerId: p.id })));
      this.past = this.past.slice(-KEEP_PAST);
    }
    this.render();
  }

  /** Sends files to one participant (`target` = its id) or to everyone connected (`target` = ''). */
  send(list, target = '') {
    if (list.length === 0) return;
    const peers = this.roster.links().filter((p) => !target || p.id === target);
    const ready = peers.filter((p) => p.files?.open);
    if (ready.length === 0) {
      toast(peers.length ? 'Not sent: the connection is not ready yet' : 'Not sent: nobody else is in the call', { kind: 'warn' });
      return;
    }
    for (const file of list) {
      const why = checkFile(file);
      if (why) {
        toast(`Not sent: ${why}`, { kind: 'warn', timeout: 8000 });
        continue;
      }
      for (const p of ready) {
        try {
          p.files.send(file);
        } catch (e) {
          toast(`Not sent to ${p.name}: ${e.message}`, { kind: 'warn' });
        }
      }
    }
    if (this.panel() !== 'files') this.openPanel('files');
    this.scheduleRender();
  }

  #bindDrop() {
    const call = $('#call');
    let depth = 0;
    const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
    call.addEventListener('dragenter', (e) => {
      if (!hasFiles(e)) return;
      depth += 1;
      call.classList.add('dropping');
    });
    call.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) call.classList.remove('dropping');
    });
    call.addEventListener('dragover', (e) => {
      if (hasFiles(e)) e.preventDefault();
    });
    call.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0;
      call.classList.remove('dropping');
      this.send([...e.dataTransfer.files], $('#file-target').value);
    });
  }

  /** "Everyone" and each participant, keeping the current choice while it is still here. */
  renderTargets() {
    const select = $('#file-target');
    const current = select.value;
    const options = [h('option', { value: '' }, 'Everyone'), ...this.roster.links().map((p) => h('option', { value: p.id }, p.name))];
    select.replaceChildren(...options);
    select.value = this.roster.get(current) ? current : '';
  }

  /** The panel was opened: what was offered is seen now. */
  opened() {
    this.unseen = 0;
    this.render();
  }

  scheduleRender() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const badge = $('#files-badge');
    badge.hidden = this.unseen === 0;
    badge.textContent = String(this.unseen);
    if (this.panel() !== 'files') return;
    if (!this.panelCode) {
      this.load();
      return;
    }
    const rows = this.roster.links().flatMap((p) => (p.files?.list() ?? []).map((t) => ({
      key: `${p.id}:${t.direction}:${t.id}`,
      transfer: t,
      peerName: p.name,
      url: t.url ?? null,
      started: t.started,
      onCancel: () => p.files.cancel(t.direction, t.id),
    })));
    for (const { transfer, peerName, peerId } of this.past) {
      rows.push({ key: `${peerId}:${transfer.direction}:${transfer.id}`, transfer, peerName, url: transfer.url ?? null, started: transfer.started, onCancel: () => {} });
    }
    rows.sort((a, b) => a.started - b.started);
    const list = $('#file-list');
    keepFocus(list, () => this.panelCode.renderFileRows(list, rows));
  }

  /** Loads the panel's drawing code (the room calls this once the call is up, or the panel asks when it shows
   *  first): a call does not need it to start. */
  load() {
    this.loading ??= import('./files-panel.js').then((code) => {
      this.panelCode = code;
      this.render();
    }, (e) => {
      this.loading = null;
      console.warn('peercall: cannot load the files panel', e);
    });
    return this.loading;
  }
}
