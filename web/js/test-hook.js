// Test and debugging hook: what the browser tests (tests/browser) read and drive, as window.peercall.
//
// Opt-in: room.js loads this module and installs the hook only when this origin's localStorage holds
// peercall.testHook = true (exactly). The browser tests set it before the page loads (tests/browser/harness.mjs,
// enableTestHook); to debug by hand, run localStorage.setItem('peercall.testHook', 'true') in the console and
// reload. Ordinary pages neither load this module nor carry a global handle on their connections, chat and
// controls. A stored flag rather than a URL parameter: it survives the page's own navigations (Rejoin, Try
// again), which build their URLs afresh.

import { summarize } from './stats.js';

/**
 * Installs window.peercall over the room's parts.
 * @param {object} room  {room, relay, roster, media, controls, ui, chat, stats, files, recording, phase(),
 *                       signaling(), iceServers(), localState(), sendChat, leave}
 */
export function installTestHook(room) {
  const { roster, media, controls, ui, chat, stats, files, recording } = room;
  window.peercall = {
    get id() {
      return roster.myId;
    },
    room: room.room,
    relay: room.relay,
    phase: () => room.phase(),
    status: () => room.signaling()?.state ?? 'idle',
    peers: () => roster.links().map((p) => ({
      id: p.id,
      name: p.name,
      connectionState: p.peer.connectionState,
      channel: p.peer.dc?.readyState ?? null,
      remote: { ...p.state.remote },
      orphan: p.entry.orphan,
      polite: p.peer.polite,
      collisions: p.peer.collisions,
      safety: stats.safety.status(p),
      videoPlan: p.state.videoPlan ?? null,
    })),
    uplinkBudget: () => stats.uplinkBudget(),
    pc: (id) => roster.get(id)?.link.peer.pc ?? null,
    async stats(id) {
      const pc = roster.get(id)?.link.peer.pc;
      if (!pc) return null;
      return summarize(await pc.getStats(), null);
    },
    files: () => roster.links().flatMap((p) => (p.files?.list() ?? []).map((t) => ({
      peer: p.id, peerName: p.name, id: t.id, direction: t.direction, name: t.name, size: t.size, bytes: t.bytes,
      state: t.state, reason: t.reason,
    }))),
    fileBuffered: () => roster.links().map((p) => ({ peer: p.id, maxBuffered: p.files?.maxBuffered ?? 0 })),
    chat: () => chat.messages.map(({ from, name, text, mine, via }) => ({ from, name, text, mine, via })),
    local: () => ({
      micOn: media.micOn, camOn: media.camOn, sharing: media.sharing, ...room.localState(),
      pushToTalk: ui.pushToTalk,
      processing: { ...media.processing },
      trackSettings: media.audioTrack ? (({ echoCancellation, noiseSuppression, autoGainControl, deviceId }) =>
        ({ echoCancellation, noiseSuppression, autoGainControl, deviceId }))(media.audioTrack.getSettings()) : null,
    }),
    sinkIds: () => roster.links().map((p) => p.tile.audio?.sinkId ?? null),
    iceServers: () => JSON.parse(JSON.stringify(room.iceServers())),
    /** The call-setup marks (util.js mark): [{name, at, peer}], `at` in ms since the epoch (performance.timeOrigin
     *  + startTime, so marks of two pages of one browser compare). */
    marks: () => performance.getEntriesByType('mark').filter((m) => m.name.startsWith('peercall:')).map((m) => ({
      name: m.name.slice('peercall:'.length), at: performance.timeOrigin + m.startTime, peer: m.detail?.peer ?? null,
    })),
    timeOrigin: performance.timeOrigin,
    /** Drops the signaling WebSocket as a network blip would (the client reconnects and resumes by itself). */
    dropSignaling: () => room.signaling()?.ws?.close(),
    /** Restarts ICE with one peer now (what a failed or stalled connection triggers by itself). */
    restartIce: (id) => roster.get(id)?.link.peer.restartIce('requested'),
    toggleMic: () => controls.toggleMic(),
    toggleCam: () => controls.toggleCam(),
    sendChat: room.sendChat,
    sendFiles: (list, target) => files.send(list, target),
    recording: () => ({ self: recording.active, text: recording.book.text(), frames: recording.recorder?.frames ?? 0 }),
    startRecording: () => recording.start(),
    stopRecording: () => recording.stop(),
    leave: room.leave,
  };
}
