// Who is in the call, by signaling id, and the bookkeeping that keeps one entry per person while ids change.
//
// Pure: no DOM, no WebRTC, no page state. The room passes in its effects (open or close a connection, show a
// rename, send our id over a data channel, tell how a connection is doing) and a timer; the roster decides. So
// every transition (join, leave, resume, a new session, deferred ids, orphans, re-keying) can be driven by the
// unit tests in tests/web/roster.test.mjs with fake effects and a fake clock.
//
// Why ids change: the server gives each signaling session an id. When our WebSocket drops and comes back within
// the server's grace period the session resumes and the ids stay. When it does not (the server restarted, or the
// grace period ran out) everybody on that server gets a new session and a new id, but the peer-to-peer
// connections are still up and media keeps flowing. We then:
//   - tell each live connection our new id over its data channel (authenticated end to end by DTLS, unlike
//     anything relayed by the server), and mark those not listed under their old id as orphans: up, but known by
//     an id that no longer exists;
//   - hold back ("defer") ids we have not seen for a moment, since an orphan may claim one of them;
//   - when an orphan claims an id ("re-key"), move its entry to that id; when a deferred id goes unclaimed,
//     admit it as a new person (dropping a stale orphan of the same name whose connection is down).

import { cleanName } from './names.js';

/** How long a new id waits for an orphan to claim it, and how long an orphan may stay disconnected. */
export const ORPHAN_WAIT_MS = 2500;
/** Longest id an orphan may claim (the server's ids are far shorter). */
export const MAX_CLAIMED_ID = 128;

/**
 * One person in the call.
 * @typedef {object} Entry
 * @property {string} id       their signaling id (changes when they re-key)
 * @property {string} name     cleaned display name
 * @property {boolean} orphan  their signaling session was lost; waiting to learn their new id
 * @property {*} link          the room's connection to them (set by effects.open; opaque to the roster)
 */

/**
 * @typedef {object} Effects
 * @property {(entry: Entry, o: {offer: boolean}) => void} open   start a connection; sets entry.link. offer: we
 *           make the first offer (they are new to the room, or joined while we were away); otherwise we wait
 *           for theirs
 * @property {(entry: Entry, o: {announce: boolean}) => void} close  end it (announce: tell the user they left)
 * @property {(entry: Entry) => void} renamed
 * @property {(entry: Entry, oldId: string) => void} rekeyed     entry.id is now the new id
 * @property {(entry: Entry, id: string) => void} sendId         tell them our new id over the data channel
 * @property {(entry: Entry) => {state: string, channelOpen: boolean}} link  how the connection is doing
 *           (state: RTCPeerConnection.connectionState)
 */

export class Roster {
  /**
   * @param {Effects} effects
   * @param {{timers?: {set: (fn: () => void, ms: number) => *, clear: (handle: *) => void}, orphanWaitMs?: number}} o
   */
  constructor(effects, { timers = { set: (fn, ms) => setTimeout(fn, ms), clear: (t) => clearTimeout(t) }, orphanWaitMs = ORPHAN_WAIT_MS } = {}) {
    this.effects = effects;
    this.timers = timers;
    this.orphanWaitMs = orphanWaitMs;
    /** Our own signaling id; null before the first welcome and after leaving. */
    this.myId = null;
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
    /** id → {timer, name}: ids held back while orphans may claim them. */
    this.deferred = new Map();
  }

  get size() {
    return this.entries.size;
  }

  get(id) {
    return this.entries.get(id);
  }

  has(id) {
    return this.entries.has(id);
  }

  isDeferred(id) {
    return this.deferred.has(id);
  }

  /** The room's links (what effects.open attached), in join order. */
  links() {
    return [...this.entries.values()].map((entry) => entry.link);
  }

  /**
   * The server welcomed us: {id, resumed, peers: [{id, name}]}. Returns what kind of welcome it was ('first',
   * 'resumed' or 'new') and the well-formed peers it listed.
   */
  welcome(welcome) {
    const listed = Array.isArray(welcome.peers) ? welcome.peers.filter((p) => p && typeof p.id === 'string') : [];
    if (this.myId === null) {
      // First join: we are the newcomer. Everyone present heard of us (peer-joined) and offers: their pages are
      // loaded and idle, their offers are on their way before this page has even run (docs/protocol.md).
      this.myId = welcome.id;
      for (const p of listed) this.#add(p.id, p.name, { offer: false });
      return { kind: 'first', listed };
    }
    if (welcome.resumed) {
      // Same session: reconcile whoever came or went while we were away.
      const present = new Set(listed.map((p) => p.id));
      for (const entry of [...this.entries.values()]) {
        if (!present.has(entry.id) && !entry.orphan) this.remove(entry.id, { announce: true });
      }
      for (const p of listed) {
        if (this.entries.has(p.id)) this.rename(p.id, p.name);
        // Joined while we were away: their welcome listed us, so they wait for our offer.
        else if (!this.deferred.has(p.id)) this.#add(p.id, p.name, { offer: true });
      }
      return { kind: 'resumed', listed };
    }
    // New session: new id. Connections still up keep flowing peer to peer; we tell those peers our new id and wait
    // a moment for theirs before treating a listed id as someone new.
    this.myId = welcome.id;
    const listedIds = new Set(listed.map((p) => p.id));
    for (const entry of [...this.entries.values()]) {
      const link = this.effects.link(entry);
      if (link.state === 'connected' && link.channelOpen) {
        entry.orphan = !listedIds.has(entry.id); // already known by its new id when it told us first
        this.effects.sendId(entry, welcome.id);
      } else {
        this.remove(entry.id, { announce: false });
      }
    }
    // Our new id reached them as peer-joined: they offer, as to any newcomer.
    for (const p of listed) this.#admit(p.id, p.name, { offer: false });
    return { kind: 'new', listed };
  }

  /** peer-joined {id, name}: someone new (we offer). True when the room should say they joined. */
  peerJoined(peer) {
    if (!peer || typeof peer.id !== 'string' || peer.id === this.myId) return false;
    const wasDeferred = this.deferred.has(peer.id);
    this.#admit(peer.id, peer.name, { offer: true });
    return !wasDeferred && this.entries.has(peer.id);
  }

  /** peer-left {id}: they are gone (said by the server). */
  peerLeft(id) {
    if (typeof id !== 'string') return;
    this.#undefer(id);
    this.remove(id, { announce: true });
  }

  /** An offer, answer or candidate from `from`: the entry it is for, created for an offer from someone unknown. */
  signalFrom(from, type) {
    if (typeof from !== 'string') return null;
    const known = this.entries.get(from);
    if (known) return known;
    if (type !== 'offer') return null;
    // Someone we held back (or never heard of) is offering: they are here, whatever orphans may claim.
    const pending = this.deferred.get(from);
    this.#undefer(from);
    return this.#add(from, pending?.name ?? 'Guest', { offer: false });
  }

  /**
   * `entry` told us over its data channel that its id is now `newId`. Returns what happened: 'rekeyed',
   * 'same' (nothing to do), 'dropped' (it was a stale copy of a live connection), 'refused' (it claimed the id of
   * someone else who is connected), 'invalid' (not an id) or 'gone' (the entry was removed meanwhile).
   */
  claimId(entry, newId) {
    if (typeof newId !== 'string' || newId.length > MAX_CLAIMED_ID) return 'invalid';
    if (this.entries.get(entry.id) !== entry) return 'gone';
    if (entry.id === newId) return 'same';
    const duplicate = this.entries.get(newId);
    if (duplicate) {
      if (!duplicate.orphan && this.effects.link(duplicate).state === 'connected') {
        // A live connection already answers to that id. If the claimer is a stale copy (its session was lost),
        // drop it; otherwise it is claiming someone else's id: ignore it.
        if (entry.orphan) {
          this.remove(entry.id, { announce: false });
          return 'dropped';
        }
        return 'refused';
      }
      // A fresh entry was created for the new id before we learned who it is: keep the established connection.
      this.remove(newId, { announce: false });
    }
    this.#undefer(newId);
    const oldId = entry.id;
    this.entries.delete(oldId);
    entry.id = newId;
    entry.orphan = false;
    this.entries.set(newId, entry);
    this.effects.rekeyed(entry, oldId);
    return 'rekeyed';
  }

  /**
   * `entry`'s connection changed state. An orphan cannot be ICE-restarted (we cannot signal it): once its
   * connection fails it is gone, and if it stays disconnected for a while it is dropped; the person comes back
   * under their new id.
   */
  linkChanged(entry) {
    if (!entry.orphan || this.entries.get(entry.id) !== entry) return;
    const { state } = this.effects.link(entry);
    if (state === 'failed' || state === 'closed') {
      this.remove(entry.id, { announce: false });
    } else if (state === 'disconnected') {
      this.timers.set(() => {
        if (entry.orphan && this.entries.get(entry.id) === entry && this.effects.link(entry).state !== 'connected') {
          this.remove(entry.id, { announce: false });
        }
      }, this.orphanWaitMs);
    }
  }

  /** A new display name for `id` (cleaned; empty or unchanged names are ignored). */
  rename(id, name) {
    const entry = this.entries.get(id);
    const clean = cleanName(name);
    if (!entry || !clean || clean === entry.name) return;
    entry.name = clean;
    this.effects.renamed(entry);
  }

  /** Ends the connection with `id` (announce: tell the user they left). */
  remove(id, { announce }) {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    this.effects.close(entry, { announce });
  }

  /** We left (or were refused): everything goes, nobody is announced, and the next welcome is a first one. */
  clear() {
    for (const { timer } of this.deferred.values()) this.timers.clear(timer);
    this.deferred.clear();
    for (const id of [...this.entries.keys()]) this.remove(id, { announce: false });
    this.myId = null;
  }

  #add(id, name, { offer }) {
    const existing = this.entries.get(id);
    if (existing) return existing;
    const entry = { id, name: cleanName(name) || 'Guest', orphan: false, link: null };
    this.entries.set(id, entry);
    this.effects.open(entry, { offer });
    return entry;
  }

  /** An id we have not seen: admitted at once, or after a short wait while orphans may claim it. */
  #admit(id, name, { offer }) {
    const known = this.entries.get(id);
    if (known) {
      known.orphan = false;
      this.rename(id, name);
      return;
    }
    if (![...this.entries.values()].some((e) => e.orphan)) {
      this.#add(id, name, { offer });
      return;
    }
    this.#undefer(id);
    const timer = this.timers.set(() => {
      this.deferred.delete(id);
      if (this.entries.has(id)) return;
      // Nobody claimed this id: a stale copy of the same person (same name, connection down) gives way.
      for (const entry of [...this.entries.values()]) {
        if (entry.orphan && entry.name === cleanName(name) && this.effects.link(entry).state !== 'connected') {
          this.remove(entry.id, { announce: false });
        }
      }
      this.#add(id, name, { offer });
    }, this.orphanWaitMs);
    this.deferred.set(id, { timer, name });
  }

  #undefer(id) {
    const pending = this.deferred.get(id);
    if (!pending) return;
    this.timers.clear(pending.timer);
    this.deferred.delete(id);
  }
}
