// The room page's screens and which one shows (its phase): the pre-join check (name, password, preview), the
// call, and the ended screen (left, or refused by the server, with Rejoin / Try again). The call screen itself is
// room.js and call-ui.js.

import { $, setIcon, store, mark } from './util.js';
import { cleanName, hueOf } from './names.js';

/** The server refused us: what the page says, per refusal (docs/protocol.md error codes): [title, text, icon]. */
const REFUSALS = {
  'room-full': ['This room is full', 'Calls in peercall go directly between browsers, so rooms are small. Try again when someone leaves, or start a new room.', 'people'],
  'bad-token': ['You are not invited to this room', 'Your invitation is missing, expired or meant for another room. Ask for a new link.', 'lock'],
  'too-many-rooms': ['The server is busy', 'Too many calls are running right now. Try again in a minute.', 'warn'],
  'too-many-connections': ['The server is busy', 'Too many calls are running right now. Try again in a minute.', 'warn'],
  // Throttled (too many joins or failed passwords from this address): the server says how long to wait.
  'too-many-joins': ['Too many attempts', 'Too many join attempts from your network. Wait a little and try again.', 'warn'],
  'unsupported-version': ['Please reload', 'This page is older than the server. Reload to get the new version.', 'refresh'],
};

export class Screens {
  /**
   * @param {object} o
   * @param {ReturnType<import('./names.js').parseRoomUrl>} o.page  the page's address
   * @param {import('./media.js').LocalMedia} o.media
   * @param {import('./controls.js').LocalControls} o.controls
   * @param {{name: string, password: string}} o.me  who we are (the pre-join form sets both)
   * @param {() => void} o.join
   */
  constructor({ page, media, controls, me, join }) {
    this.page = page;
    this.media = media;
    this.controls = controls;
    this.me = me;
    this.join = join;
    /** 'init' | 'prejoin' | 'call' | 'ended': the screen shown. */
    this.phase = 'init';
  }

  bind() {
    const nameInput = $('#name-input');
    nameInput.addEventListener('input', () => {
      $('#preview-avatar').textContent = (cleanName(nameInput.value) || '?').slice(0, 1).toUpperCase();
      $('#preview-avatar').style.setProperty('--hue', String(hueOf(cleanName(nameInput.value))));
    });
    $('#join-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const name = cleanName(nameInput.value);
      if (!name) {
        this.#prejoinError('Please enter your name.');
        nameInput.focus();
        return;
      }
      this.me.name = name;
      this.me.password = $('#password-input').value;
      store.set('name', name);
      this.join();
    });
    $('#ended-rejoin').addEventListener('click', () => this.#rejoin());
  }

  show(section) {
    this.phase = section;
    for (const id of ['prejoin', 'call', 'ended']) $(`#${id}`).hidden = id !== section;
  }

  async showPrejoin(error = null) {
    this.show('prejoin');
    const { media, controls } = this;
    const nameInput = $('#name-input');
    nameInput.value = this.me.name;
    nameInput.dispatchEvent(new Event('input'));
    this.#prejoinError(error);
    if (!media.audioTrack && !media.cameraTrack) {
      $('#preview-off-text').textContent = 'Starting camera…';
      await media.open();
      mark('camera');
      controls.reportMediaErrors(false);
    }
    controls.renderLocalMedia();
    controls.fillDevicePickers();
    (this.me.name ? $('#join-btn') : nameInput).focus();
  }

  #prejoinError(text) {
    const el = $('#prejoin-error');
    el.hidden = !text;
    el.textContent = text ?? '';
  }

  /** The server refused us (signaling `fatal`): a password to enter, or the ended screen saying why. */
  refused({ code, message }) {
    if (code === 'wrong-password') {
      $('#password-box').open = true;
      this.showPrejoin(this.me.password ? 'That password is not right for this room.' : 'This room has a password. Enter it to join.');
      $('#password-input').focus();
      return;
    }
    const refusal = Object.hasOwn(REFUSALS, code) ? REFUSALS[code] : null;
    if (!refusal) this.showEnded('Cannot join this room', message || code, 'warn');
    else if (code === 'too-many-joins') this.showEnded(refusal[0], message || refusal[1], refusal[2]);
    else this.showEnded(...refusal);
  }

  showEnded(title, text, iconName) {
    this.show('ended');
    $('#ended-title').textContent = title;
    $('#ended-text').textContent = text;
    setIcon($('#ended-icon'), iconName);
    $('#ended-icon').dataset.kind = iconName;
    $('#ended-rejoin').hidden = !this.page.valid;
    $('#ended-rejoin-label').textContent = iconName === 'leave' ? 'Rejoin' : 'Try again';
    $('#ended-rejoin').focus();
  }

  /** The room again, joining at once under the name in use (and the same relay choice and token). */
  #rejoin() {
    const { room, relay, token } = this.page;
    const next = new URLSearchParams();
    if (this.me.name) {
      next.set('name', this.me.name);
      next.set('join', '1');
    }
    if (relay) next.set('relay', '1');
    if (token) next.set('token', token);
    location.assign(`/r/${encodeURIComponent(room)}${next.size ? `?${next}` : ''}`);
  }
}
