// The call screen's chrome: the side panel and its tabs (chat, people, files, connection), the status pill, the
// clock, the people list and count, the invite, settings and shortcuts dialogs, and the keyboard (ptt.js says
// which key does what, and runs push-to-talk on the space bar). What happens in a panel is the module that owns
// it (chat.js, call-files.js, call-stats.js); this one opens and closes them.

import { $, h, icon, store, toast, copyText } from './util.js';
import { hueOf } from './names.js';
import { PushToTalk, shortcutOf, SHORTCUTS } from './ptt.js';

const PANELS = ['chat', 'people', 'files', 'stats'];

export class CallUi {
  /**
   * @param {object} o
   * @param {import('./roster.js').Roster} o.roster
   * @param {import('./chat.js').ChatLog} o.chat
   * @param {import('./call-files.js').CallFiles} o.files   set later (it asks this one for the panel)
   * @param {import('./call-stats.js').CallStats} o.stats   set later
   * @param {import('./controls.js').LocalControls} o.controls
   * @param {() => {name: string, password: string, inCall: boolean}} o.me  who we are, and whether in the call
   * @param {() => {audio: boolean, video: boolean}} o.localMedia  what we send
   * @param {string} o.inviteUrl
   * @param {() => void} o.layout
   */
  constructor({ roster, chat, controls, me, localMedia, inviteUrl, layout }) {
    this.roster = roster;
    this.chat = chat;
    this.controls = controls;
    this.me = me;
    this.localMedia = localMedia;
    this.inviteUrl = inviteUrl;
    this.layout = layout;
    this.files = null;
    this.stats = null;
    /** The side panel shown: 'chat' | 'people' | 'files' | 'stats' | null. */
    this.panel = null;
    /** Whether the space bar holds the microphone open. */
    this.pushToTalk = false;
  }

  /** Wires the panel tabs, the invite buttons and, through `actions` ({leave}), the keyboard. */
  bind({ leave }) {
    $('#ctl-mic-more').addEventListener('click', () => this.openSettings('#set-mic-select'));
    $('#ctl-cam-more').addEventListener('click', () => this.openSettings('#set-cam-select'));
    $('#ctl-settings').addEventListener('click', () => this.openSettings('#set-cam-select'));
    $('#ctl-chat').addEventListener('click', () => this.togglePanel('chat'));
    $('#ctl-stats').addEventListener('click', () => this.togglePanel('stats'));
    $('#ctl-files').addEventListener('click', () => this.togglePanel('files'));
    $('#side-close').addEventListener('click', () => this.openPanel(null));
    for (const name of PANELS) $(`#tab-${name}`).addEventListener('click', () => this.openPanel(name));
    $('#pre-copy').addEventListener('click', () => this.copyInvite());
    $('#empty-copy').addEventListener('click', () => this.copyInvite());
    $('#top-copy').addEventListener('click', () => this.openInvite());
    $('#invite-copy').addEventListener('click', () => this.copyInvite());
    $('#set-shortcuts').addEventListener('click', () => this.openShortcuts());
    this.#bindKeys(leave);
  }

  togglePanel(name) {
    this.openPanel(this.panel === name ? null : name);
  }

  openPanel(name) {
    this.panel = name;
    $('#side').hidden = !name;
    document.body.classList.toggle('side-open', Boolean(name));
    for (const tab of PANELS) {
      $(`#tab-${tab}`).setAttribute('aria-selected', String(tab === name));
      $(`#${tab}-panel`).hidden = tab !== name;
    }
    $('#ctl-chat').setAttribute('aria-pressed', String(name === 'chat'));
    $('#ctl-stats').setAttribute('aria-pressed', String(name === 'stats'));
    if (name === 'chat') {
      this.chat.markRead();
      $('#chat-input').focus({ preventScroll: true });
      this.chat.scroll();
    }
    $('#ctl-files').setAttribute('aria-pressed', String(name === 'files'));
    if (name === 'files') this.files.opened();
    if (name === 'stats') this.stats.poll();
    this.layout();
  }

  /** The status pill: how our connection to the signaling server is. */
  renderStatus({ state: s, retryIn }) {
    const pill = $('#status');
    pill.dataset.status = s;
    const text = {
      connecting: 'Connecting…',
      connected: 'Connected',
      reconnecting: retryIn ? `Reconnecting in ${Math.max(1, Math.round(retryIn / 1000))} s…` : 'Reconnecting…',
      closed: 'Offline',
    }[s] ?? s;
    $('#status-text').textContent = text;
    $('#status-retry').hidden = !(s === 'reconnecting' && retryIn > 1500);
    pill.title = s === 'reconnecting'
      ? 'Lost the connection to the peercall server. Calls already running keep going; reconnecting…'
      : '';
  }

  renderClock(startedAt) {
    const seconds = Math.floor((Date.now() - startedAt) / 1000);
    const hh = Math.floor(seconds / 3600);
    const mm = String(Math.floor((seconds % 3600) / 60)).padStart(2, '0');
    const ss = String(seconds % 60).padStart(2, '0');
    $('#call-clock').textContent = hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  /** Who is here: the count, the empty-room hint, the People panel and the file target picker. */
  renderPresence() {
    this.files.renderTargets();
    const { roster } = this;
    const { name, inCall } = this.me();
    const count = roster.size + 1;
    $('#call-count').textContent = `${count} ${count === 1 ? 'person' : 'people'}`;
    $('#empty-hint').hidden = roster.size > 0 || !inCall;
    const row = (who, you, audio, video, connection) =>
      h('li', { class: 'person' },
        h('span', { class: 'avatar avatar-sm', style: `--hue:${hueOf(who)}` }, (who[0] ?? '?').toUpperCase()),
        h('span', { class: 'person-name' }, you ? `${who} (you)` : who),
        connection ? h('span', { class: 'person-state' }, connection) : null,
        h('span', { class: `person-icon${audio ? '' : ' off'}`, title: audio ? 'Microphone on' : 'Microphone off' }, icon(audio ? 'mic' : 'mic-off')),
        h('span', { class: `person-icon${video ? '' : ' off'}`, title: video ? 'Camera on' : 'Camera off' }, icon(video ? 'cam' : 'cam-off')));
    const mine = this.localMedia();
    $('#people-list').replaceChildren(
      row(name, true, mine.audio, mine.video, null),
      ...roster.links().map((p) =>
        row(p.name, false, p.state.remote.audio, p.state.remote.video, p.peer.connectionState === 'connected' ? null : 'connecting…')),
    );
  }

  openShortcuts() {
    const keys = (list) => list.flatMap((k, i) => [i ? ' + ' : '', h('kbd', {}, k)]);
    $('#shortcut-list').replaceChildren(...SHORTCUTS.flatMap(({ keys: k, what }) => [h('dt', {}, ...keys(k)), h('dd', {}, what)]));
    const settings = $('#settings');
    if (settings.open) settings.close();
    const dialog = $('#shortcuts');
    if (!dialog.open) dialog.showModal();
  }

  openSettings(focus) {
    this.controls.fillDevicePickers();
    const kbps = String(store.get('uplinkKbps', '') ?? '');
    $('#set-uplink').value = [...$('#set-uplink').options].some((o) => o.value === kbps) ? kbps : '';
    $('#set-name').value = this.me().name;
    const dialog = $('#settings');
    if (!dialog.open) dialog.showModal();
    $(focus).focus();
  }

  /** The invite dialog: the room link, and its QR code rendered by the server (GET /qr, SVG) for phones nearby. */
  openInvite() {
    const url = this.inviteUrl;
    $('#invite-dialog-url').textContent = url;
    const qr = $('#invite-qr');
    const src = `/qr?${new URLSearchParams({ text: url })}`;
    if (qr.getAttribute('src') !== src) qr.src = src;
    $('#invite-password-note').hidden = !this.me().password;
    const dialog = $('#invite');
    if (!dialog.open) dialog.showModal();
    $('#invite-copy').focus();
  }

  async copyInvite() {
    const url = this.inviteUrl;
    const ok = await copyText(url);
    toast(ok ? 'Invite link copied' : `Copy this link: ${url}`, { kind: ok ? 'success' : 'info', timeout: ok ? 2500 : 8000 });
  }

  /** Shortcuts and push-to-talk on the space bar, while in the call. */
  #bindKeys(leave) {
    const ptt = new PushToTalk();
    const { controls } = this;
    const describe = (e) => {
      const el = e.target instanceof Element ? e.target : null;
      const typing = Boolean(el?.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
      return {
        key: e.key, code: e.code, repeat: e.repeat, ctrl: e.ctrlKey, meta: e.metaKey, alt: e.altKey, shift: e.shiftKey,
        typing,
        onControl: typing || Boolean(el?.closest('button, a[href], summary, [role="tab"], dialog[open]')),
        micOn: controls.media.micOn,
      };
    };
    document.addEventListener('keydown', (e) => {
      if (!this.me().inCall) return;
      const d = describe(e);
      const action = ptt.down(d);
      if (action) {
        e.preventDefault();
        if (action === 'unmute') this.#pushToTalk(true);
        return;
      }
      const shortcut = shortcutOf(d);
      if (!shortcut) return;
      e.preventDefault();
      if (shortcut === 'mic') controls.toggleMic();
      else if (shortcut === 'cam') controls.toggleCam();
      else if (shortcut === 'chat') this.togglePanel('chat');
      else if (shortcut === 'leave') leave();
      else if (shortcut === 'help') this.openShortcuts();
    });
    document.addEventListener('keyup', (e) => {
      if (ptt.up({ key: e.key, code: e.code }) === 'mute') this.#pushToTalk(false);
    });
    window.addEventListener('blur', () => {
      if (ptt.blur() === 'mute') this.#pushToTalk(false);
    });
  }

  async #pushToTalk(talking) {
    this.pushToTalk = talking;
    document.body.classList.toggle('push-to-talk', talking);
    if (this.controls.media.micOn !== talking) await this.controls.toggleMic();
  }
}
