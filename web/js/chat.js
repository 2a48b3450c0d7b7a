// The chat panel: the messages of this call (kept in the page only, never on the server), the unread badge on the
// chat button, and the rules for what a message may be. Delivery is the room's business (data channel, or
// signaling until the channel is up); this module only shows and counts.

import { h, toast, formatTime } from './util.js';
import { hueOf } from './names.js';

/** Longest message, in UTF-16 code units: longer ones are cut, ours before sending and others' on arrival. */
export const MAX_CHAT = 2000;
/** Messages kept in memory for the page's lifetime; the oldest go first. */
export const KEEP_MESSAGES = 500;
/** Messages from the same sender this close together share one name and time header. */
export const GROUP_WITHIN_MS = 120_000;

/** What a typed or received message says once clipped and trimmed; '' when there is nothing to show. */
export function chatText(raw) {
  return String(raw).slice(0, MAX_CHAT).trim();
}

/** Whether `entry` continues the group of `previous` (same sender, soon after): then it gets no header. */
export function continuesGroup(previous, entry) {
  return Boolean(previous) && String(previous.from) === String(entry.from) && entry.at - previous.at < GROUP_WITHIN_MS;
}

/** The notification for a message that arrives while the chat is closed: "Name: text", long texts cut at 80. */
export function chatPreview({ name, text }) {
  return `${name}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`;
}

export class ChatLog {
  /** @param {{log: HTMLElement, empty: HTMLElement, badge: HTMLElement}} elements  the list, its placeholder, the badge */
  constructor({ log, empty, badge }) {
    this.log = log;
    this.empty = empty;
    this.badge = badge;
    this.messages = [];
    this.unread = 0;
  }

  /**
   * Shows a message: {from, name, text, mine, via}. `seen`: the chat panel is open, so it is read at once;
   * otherwise someone else's message raises the badge and pops up a notification.
   */
  add(message, { seen }) {
    const entry = { ...message, at: new Date() };
    const grouped = continuesGroup(this.messages.at(-1), entry);
    this.messages.push(entry);
    if (this.messages.length > KEEP_MESSAGES) this.messages.shift();
    const item = h('li', { class: `msg${entry.mine ? ' mine' : ''}${grouped ? ' grouped' : ''}`, dataset: { from: String(entry.from), at: String(entry.at.getTime()) } },
      grouped ? null : h('div', { class: 'msg-head' },
        h('span', { class: 'msg-name', style: `--hue:${hueOf(entry.name)}` }, entry.mine ? 'You' : entry.name),
        h('time', { datetime: entry.at.toISOString() }, formatTime(entry.at))),
      h('p', { class: 'msg-text' }, entry.text));
    this.log.append(item);
    this.empty.hidden = true;
    this.scroll();
    if (!entry.mine && !seen) {
      this.unread += 1;
      this.#renderUnread();
      toast(chatPreview(entry), { kind: 'chat' });
    }
    return entry;
  }

  /** The panel was opened: everything is read. */
  markRead() {
    this.unread = 0;
    this.#renderUnread();
  }

  /** Keeps the newest message in view. */
  scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  #renderUnread() {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = this.unread > 9 ? '9+' : String(this.unread);
  }
}
