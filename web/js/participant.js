// The room's side of one person (their roster entry's link): the connection (peer.js), the tile (tile.js) and
// the bookkeeping beside them (peer-state.js), and how the tile shows the connection.

import { mark } from './util.js';
import { Peer } from './peer.js';
import { Tile } from './tile.js';
import { PeerState } from './peer-state.js';

export class Participant {
  /**
   * @param {import('./roster.js').Entry} entry
   * @param {object} o
   * @param {object} o.host     what every Peer asks of the room (peer.js); isOrphan and remoteMedia are added here
   * @param {() => void} o.onInfo  the tile's info button
   * @param {() => {iceServers: object[], relayOnly: boolean}} o.ice  for explaining a failure
   * @param {() => void} [o.onFirstFrame]  their first video frame is shown
   */
  constructor(entry, { host, onInfo, ice, onFirstFrame = () => {} }) {
    this.entry = entry;
    this.state = new PeerState();
    this.peer = new Peer({
      id: entry.id,
      host: { ...host, isOrphan: () => entry.orphan, remoteMedia: () => this.state.remote },
    });
    this.tile = new Tile({ id: entry.id, name: entry.name, onInfo });
    this.ice = ice;
    this.onFirstFrame = onFirstFrame;
    this.files = null; // FileChannel (files.js), once the connection exists (call-files.js)
  }

  get id() {
    return this.entry.id;
  }

  get name() {
    return this.entry.name;
  }

  /** The roster moved this person to a new id: their signaling goes there from now on. */
  rekeyed() {
    this.peer.id = this.entry.id;
    this.tile.setId(this.entry.id);
  }

  /** Draws the tile from the connection and what they said; explains a connection that cannot be made. */
  render() {
    const { tile, peer } = this;
    const hasVideo = peer.stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
    const media = this.state.media(hasVideo);
    tile.setCam(media.cam);
    tile.setMic(media.mic);
    tile.setScreen(media.screen);
    // Every candidate pair failed: say why it is likely, instead of spinning (the ICE restart that follows goes on;
    // the words go once the call connects).
    const { diagnose, text } = this.state.connection(peer.connectionState, peer.stuck, performance.now());
    if (diagnose) this.#diagnose();
    tile.setState(text);
  }

  /** Reads the candidates the browser gathered and explains the failure on the tile. */
  async #diagnose() {
    this.state.diagnoseStarted(performance.now());
    let failure;
    try {
      // Only a call that cannot connect needs it: loaded then, not with the page.
      const { explainFailure } = await import('./diagnose.js');
      const report = await this.peer.pc?.getStats();
      const local = [];
      const remote = [];
      report?.forEach((r) => {
        if (r.type === 'local-candidate') local.push(r);
        if (r.type === 'remote-candidate') remote.push(r);
      });
      failure = explainFailure({ ...this.ice(), local, remote });
      console.warn(`peercall: cannot connect to ${this.id}: ${failure}`);
    } catch (e) {
      console.warn('peercall: cannot read the candidates', e);
    }
    this.state.diagnoseDone(failure);
    this.render();
  }

  /** Marks (peercall:first-frame) when the first remote video frame is shown on the tile. */
  watchFirstFrame() {
    if (!this.state.watchFrame(this.peer.stream.getVideoTracks().length > 0)) return;
    const id = this.id;
    const video = this.tile.video;
    const shown = () => {
      mark('first-frame', id);
      this.onFirstFrame();
    };
    if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(shown);
    else video.addEventListener('loadeddata', shown, { once: true });
  }

  /** Lights the tile while they speak. */
  renderSpeaking() {
    this.tile.setSpeaking(this.state.speaking(this.peer.audioLevel()));
  }
}
