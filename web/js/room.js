// The room page (/r/<room>): pre-join check, then the call.
//
// URL parameters (names.js parseRoomUrl): name=NAME (display name), join=1 (skip the pre-join screen when a name
// is known), relay=1 (iceTransportPolicy "relay": media only through TURN), token=T (join token, when the server
// requires one), uplink=KBPS (the upload budget).
//
// This module is the wiring: local media, signaling, and one Participant (participant.js: connection, tile and
// the bookkeeping beside them, peer-state.js) per person. Who is in the call and how ids are reconciled is
// roster.js; the local media controls controls.js; the panels, dialogs, status and keyboard call-ui.js; chat
// chat.js; files call-files.js; recording call-recording.js; statistics, safety codes and the uplink budget
// call-stats.js; the stage layout layout.js. Each owns its state; what one needs of another is passed in.

import { $, store, toast, mark } from './util.js';
import { cleanName, parseRoomUrl } from './names.js';
import { Signaling, signalingUrl } from './signaling.js';
import { takeEarly } from './boot.js';
import { LocalMedia } from './media.js';
import { Tile } from './tile.js';
import { Roster } from './roster.js';
import { layoutStage } from './layout.js';
import { ChatLog, chatText } from './chat.js';
import { Participant } from './participant.js';
import { FIRST_OFFER_WAIT_MS } from './peer.js';
import { parsePeerData } from './peer-state.js';
import { LocalControls } from './controls.js';
import { CallUi } from './call-ui.js';
import { CallFiles } from './call-files.js';
import { CallRecording } from './call-recording.js';
import { CallStats } from './call-stats.js';
import { Screens } from './screens.js';

const page = parseRoomUrl(location.pathname, location.search, store.get('name', ''));
const ROOM = page.room;
const FORCE_RELAY = page.relay;
const STATS_EVERY_MS = 1000;
const SPEAKING_EVERY_MS = 200;
/** The modules a call needs only later (recorder, panels) load this long after joining at the latest. */
const LAZY_AFTER_MS = 3000;

const media = new LocalMedia();

// The DTLS certificate of this page's connections, made now, while the page and the camera start: otherwise
// each new RTCPeerConnection makes one while the offer or answer waits. One per page, as Chromium does itself
// (the safety code covers it like any other). Without it (not ready yet, or unsupported) the browser makes one.
let certificate = null;
try {
  RTCPeerConnection.generateCertificate?.({ name: 'ECDSA', namedCurve: 'P-256' })
    .then((c) => { certificate = c; }, () => {});
} catch {
  /* no WebRTC: the page says so when it joins */
}

/** Who we are (the pre-join form and Settings change it), and the call's own state; what belongs to one part of
 *  the call lives in that part. */
const me = { name: page.name, password: '' };
const state = {
  iceServers: [],
  signaling: null,
  startedAt: 0,
  localTile: null,
  timers: [],
};
const inCall = () => screens.phase === 'call';

/** Everyone else in the call; each entry's link is its Participant. */
const roster = new Roster({
  open: (entry, { offer }) => openParticipant(entry, { offer }),
  close: (entry, { announce }) => closeParticipant(entry.link, { announce }),
  renamed: (entry) => {
    entry.link.tile.setName(entry.name);
    recording.renamed(entry.link);
    ui.renderPresence();
  },
  rekeyed: (entry) => {
    entry.link.rekeyed();
    ui.renderPresence();
  },
  sendId: (entry, id) => entry.link.peer.sendData({ t: 'id', id }),
  link: (entry) => ({ state: entry.link.peer.connectionState, channelOpen: entry.link.peer.channelOpen }),
});

const chat = new ChatLog({ log: $('#chat-log'), empty: $('#chat-empty'), badge: $('#chat-badge') });
const controls = new LocalControls({ media, links: () => roster.links(), localTile: () => state.localTile });
const ui = new CallUi({
  roster,
  chat,
  controls,
  me: () => ({ name: me.name, password: me.password, inCall: inCall() }),
  localMedia: () => localState(),
  inviteUrl: `${location.origin}/r/${encodeURIComponent(ROOM)}`,
  layout: () => layout(),
});
const files = new CallFiles({ roster, panel: () => ui.panel, openPanel: (name) => ui.openPanel(name) });
const stats = new CallStats({ roster, media, lastSpokeAt: () => controls.lastSpokeAt, panel: () => ui.panel, uplinkParam: page.uplink });
const recording = new CallRecording({ room: ROOM, links: () => roster.links(), sources: () => recordingSources(), inCall });
const screens = new Screens({ page, media, controls, me, join: () => join() });
ui.files = files;
ui.stats = stats;

// ---------------------------------------------------------------------------------------------------------------
// Startup

function init() {
  mark('page-ready');
  if (!page.valid) {
    screens.showEnded('This room link is not valid', 'Room names are 1 to 64 letters, digits, "-" or "_".', 'warn');
    return;
  }
  document.title = `${ROOM} · peercall`;
  $('#room-name').textContent = ROOM;
  $('#call-room').textContent = ROOM;
  $('#invite-url').textContent = ui.inviteUrl;
  media.addEventListener('tracks', onLocalTracks);
  screens.bind();
  bindCall();
  if (page.autoJoin && me.name) {
    // Nothing waits for the camera: signaling (and with its welcome the ICE servers, the offers and the whole
    // connection set-up) starts now, beside getUserMedia. The tracks go onto the connections' senders when the
    // camera is ready (onLocalTracks → replaceTrack: no renegotiation), so the first frame waits only for the
    // slower of the two, never for both in a row.
    media.open().then(() => {
      mark('camera');
      controls.reportMediaErrors(true);
      controls.fillDevicePickers(); // device labels are known now that access was granted
    });
    join();
  } else {
    screens.showPrejoin();
  }
}

/** Local tracks changed: update the preview or own tile, swap tracks on every connection, tell the others. */
function onLocalTracks() {
  if (media.cameraTrack) mark('camera');
  controls.renderLocalMedia();
  if (!inCall()) return;
  for (const p of roster.links()) {
    p.peer.replaceTrack('audio', media.outgoingAudio);
    p.peer.replaceTrack('video', media.outgoingVideo);
  }
  broadcastState();
}

// ---------------------------------------------------------------------------------------------------------------
// Joining and signaling

function join() {
  screens.phase = 'call'; // the call screen shows once signaling has started
  state.startedAt = Date.now();
  // Signaling first: the socket's handshake runs while the call screen below is built and laid out (the first
  // layout of the page is the longest task the page has: a fresh renderer shapes its first text then).
  const signaling = new Signaling({
    url: signalingUrl(),
    room: ROOM,
    name: me.name,
    password: me.password,
    token: page.token, // HMAC join token, for deployments that embed peercall
    early: takeEarly(), // the socket boot.js opened (and joined with) while this page loaded
  });
  state.signaling = signaling;
  signaling.addEventListener('state', (e) => {
    const previous = $('#status').dataset.status;
    ui.renderStatus(e.detail);
    if (previous === 'connected' && e.detail.state === 'reconnecting') {
      toast('Lost the connection to the server. Your call goes on; reconnecting…', { kind: 'warn', timeout: 5000 });
    } else if (previous === 'reconnecting' && e.detail.state === 'connected') {
      toast('Reconnected to the server', { kind: 'success' });
    }
  });
  signaling.addEventListener('welcome', (e) => onWelcome(e.detail));
  signaling.addEventListener('signal', (e) => onSignal(e.detail));
  signaling.addEventListener('error', (e) => console.warn('peercall: signaling refused a message', e.detail));
  signaling.addEventListener('fatal', (e) => onFatal(e.detail));
  signaling.start();
  screens.show('call');
  if (!state.localTile) {
    state.localTile = new Tile({ id: 'local', name: me.name, local: true });
    $('#stage').append(state.localTile.el);
  }
  state.localTile.setName(me.name);
  $('#set-name').value = me.name;
  controls.renderLocalMedia();
  controls.fillDevicePickers();
  layout();
  ui.renderPresence();
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [
    setInterval(() => ui.renderClock(state.startedAt), 1000),
    setInterval(() => stats.poll(), STATS_EVERY_MS),
    setInterval(() => { for (const p of roster.links()) p.renderSpeaking(); }, SPEAKING_EVERY_MS),
  ];
  setTimeout(() => (typeof requestIdleCallback === 'function' ? requestIdleCallback(loadLater, { timeout: 1000 }) : loadLater()), LAZY_AFTER_MS);
}

let lazyLoaded = false;

/** The modules a call needs only once it is up (the recorder, the Files and Connection panels): loaded when the
 *  first remote frame is shown, or in idle time LAZY_AFTER_MS after joining (alone in the room), so they never
 *  compete with the call's set-up and are there before anyone clicks. */
function loadLater() {
  if (lazyLoaded) return;
  lazyLoaded = true;
  recording.load().catch((e) => console.warn('peercall: cannot load the recorder', e));
  stats.load();
  files.load();
}

/** What every Peer asks of the room (participant.js adds isOrphan and remoteMedia, from its own state). */
const host = {
  myId: () => roster.myId ?? '',
  sendSignal: (message) => state.signaling?.send(message),
  rtcConfig: () => ({
    iceServers: state.iceServers,
    iceTransportPolicy: FORCE_RELAY ? 'relay' : 'all',
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
    ...(certificate ? { certificates: [certificate] } : {}),
  }),
  localTrack: (kind) => (kind === 'audio' ? media.outgoingAudio : media.outgoingVideo),
  localStream: () => media.stream,
  signalingUp: () => Boolean(state.signaling?.connected),
  checkSignaling: () => state.signaling?.probe(),
};

function onWelcome(welcome) {
  mark('welcome');
  // Before the roster opens connections: they are created with these servers.
  state.iceServers = Array.isArray(welcome.iceServers) ? welcome.iceServers : [];
  const { kind, listed } = roster.welcome(welcome);
  if (kind === 'first' && listed.length) {
    toast(`${listed.length === 1 ? cleanName(listed[0].name) : `${listed.length} people`} already here`);
  }
  for (const p of roster.links()) {
    p.peer.setIceServers({ iceServers: state.iceServers });
    p.peer.onSignalingUp();
  }
  if (kind !== 'first') broadcastState();
  ui.renderPresence();
}

function onSignal(message) {
  switch (message.type) {
    case 'peer-joined':
      if (typeof message.peer?.id === 'string') mark('peer-joined', message.peer.id);
      if (roster.peerJoined(message.peer)) toast(`${cleanName(message.peer.name) || 'Someone'} joined`);
      return;
    case 'peer-left':
      roster.peerLeft(message.id);
      return;
    case 'peer-updated':
      if (message.peer) roster.rename(message.peer.id, message.peer.name);
      return;
    case 'offer':
    case 'answer':
    case 'candidate':
      roster.signalFrom(message.from, message.type)?.link.peer.handleSignal(message);
      return;
    case 'message': {
      const entry = typeof message.from === 'string' ? roster.get(message.from) : null;
      if (entry) onPeerData(entry.link, message.data, 'signaling');
      return;
    }
    case 'ice-servers': {
      if (!Array.isArray(message.iceServers)) return;
      state.iceServers = message.iceServers;
      for (const p of roster.links()) p.peer.setIceServers({ iceServers: state.iceServers });
      return;
    }
    default:
      return;
  }
}

function onFatal(refusal) {
  teardownCall();
  screens.refused(refusal);
}

// ---------------------------------------------------------------------------------------------------------------
// Peers

/** The roster admitted someone: their tile goes on the stage, their connection starts (we offer when `offer`). */
function openParticipant(entry, { offer }) {
  const p = new Participant(entry, {
    host,
    onInfo: () => ui.openPanel('stats'),
    ice: () => ({ iceServers: state.iceServers, relayOnly: FORCE_RELAY }),
    onFirstFrame: loadLater,
  });
  entry.link = p;
  const { peer } = p;
  $('#stage').insertBefore(p.tile.el, state.localTile?.el ?? null);
  peer.addEventListener('track', () => {
    p.tile.setStream(peer.stream);
    p.watchFirstFrame();
    p.render();
    controls.routeAudio(p).then(() => controls.playRemoteAudio(p));
  });
  peer.addEventListener('state', () => {
    p.render();
    roster.linkChanged(entry);
    ui.renderPresence();
  });
  peer.addEventListener('channel', () => {
    if (peer.channelOpen) sendState(p);
    if (peer.channelOpen && recording.active) peer.sendData({ t: 'recording', on: true });
    p.render();
  });
  peer.addEventListener('data', (e) => onPeerData(p, e.detail.data, 'datachannel'));
  peer.addEventListener('created', () => files.wire(p));
  if (offer) peer.startAsOfferer();
  else peer.prepare({ offerAfterMs: FIRST_OFFER_WAIT_MS }); // its offer is on its way: the connection exists when it arrives
  sendState(p);
  p.render();
  layout();
  ui.renderPresence();
}

/** The roster let someone go: close the connection, take the tile off the stage. */
function closeParticipant(p, { announce }) {
  stats.forget(p);
  recording.forget(p);
  files.close(p);
  p.peer.close();
  p.tile.remove();
  if (announce) toast(`${p.name} left`);
  layout();
  ui.renderPresence();
}

/** Application messages from a peer, over the data channel or (before it opens) signaling. */
function onPeerData(p, data, via) {
  const m = parsePeerData(data, via);
  switch (m?.kind) {
    case 'state':
      p.state.said(m.remote);
      p.render();
      ui.renderPresence();
      return;
    case 'chat': {
      const text = chatText(m.text);
      if (text) addChat({ from: p.id, name: p.name, text, mine: false, via });
      return;
    }
    case 'id':
      if (roster.claimId(p.entry, m.id) === 'refused') console.warn(`peercall: ${p.id} claimed the id of ${m.id}; ignored`);
      return;
    case 'recording':
      recording.peerSaid(p, m.on);
      return;
    case 'bye':
      roster.remove(p.id, { announce: true });
      return;
    default:
      return;
  }
}

function localState() {
  return {
    t: 'state',
    audio: Boolean(media.micOn && media.audioTrack),
    video: Boolean(media.outgoingVideo),
    screen: media.sharing,
  };
}

function sendState(p) {
  const data = localState();
  if (!p.peer.sendData(data)) state.signaling?.send({ type: 'message', to: p.id, data });
}

function broadcastState() {
  for (const p of roster.links()) sendState(p);
}

function recordingSources() {
  const remote = roster.links().map((p) => ({
    key: p.id,
    name: p.name,
    video: p.tile.video,
    showVideo: p.tile.el.dataset.cam === 'on',
    audio: p.peer.stream.getAudioTracks()[0] ?? null,
  }));
  const local = state.localTile
    ? [{ key: 'local', name: me.name, video: state.localTile.video, showVideo: Boolean(media.outgoingVideo), audio: media.micOn ? media.audioTrack : null }]
    : [];
  return [...remote, ...local];
}

// ---------------------------------------------------------------------------------------------------------------
// Call UI

function bindCall() {
  controls.bind();
  files.bind();
  ui.bind({ leave });
  $('#ctl-record').addEventListener('click', () => recording.toggle());
  if (!window.MediaRecorder || !HTMLCanvasElement.prototype.captureStream || !window.AudioContext) $('#ctl-record').hidden = true;
  $('#ctl-leave').addEventListener('click', () => leave());
  $('#status-retry').addEventListener('click', () => state.signaling?.reconnectNow());
  $('#chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendChat($('#chat-input').value);
  });
  $('#set-uplink').addEventListener('change', (e) => {
    store.set('uplinkKbps', e.target.value ? Number(e.target.value) : null);
    for (const p of roster.links()) stats.applyVideoBudget(p);
  });
  $('#settings').addEventListener('close', () => {
    const name = cleanName($('#set-name').value);
    if (name && name !== me.name) {
      me.name = name;
      store.set('name', name);
      state.localTile?.setName(name);
      state.signaling?.rename(name);
      ui.renderPresence();
    }
  });
  new ResizeObserver(() => layout()).observe($('#stage'));
  window.addEventListener('pagehide', () => {
    if (inCall()) sayGoodbye();
  });
}

// Layout (layout.js): one remote → it fills the stage, you float in a corner; otherwise a grid of equal tiles.
let layoutFrame = 0;

/** Lays the stage out in the next frame, once for any number of calls before it: layoutStage reads the stage's
 *  size, and reading it here would force a synchronous style and layout in the middle of whatever called (a join
 *  would wait for it before its messages are handled). */
function layout() {
  if (layoutFrame) return;
  layoutFrame = requestAnimationFrame(() => {
    layoutFrame = 0;
    const stage = document.getElementById('stage');
    if (!stage || !inCall()) return;
    layoutStage(stage, roster.links().map((p) => p.tile), state.localTile);
  });
}

// Chat (chat.js shows it; sending is here: over each data channel, or signaling until it is open)

function sendChat(raw) {
  const text = chatText(raw);
  if (!text) return;
  let delivered = 0;
  for (const p of roster.links()) {
    const data = { t: 'chat', text };
    if (p.peer.sendData(data)) delivered += 1;
    else if (state.signaling?.connected) {
      state.signaling.send({ type: 'message', to: p.id, data }); // until the data channel is up
      delivered += 1;
    }
  }
  addChat({ from: roster.myId, name: me.name, text, mine: true, via: 'local' });
  $('#chat-input').value = '';
  if (roster.size > 0 && delivered === 0) toast('Message not delivered: nobody is connected yet', { kind: 'warn' });
}

function addChat(message) {
  chat.add(message, { seen: ui.panel === 'chat' });
}

// ---------------------------------------------------------------------------------------------------------------
// Leaving

function sayGoodbye() {
  for (const p of roster.links()) p.peer.sendData({ t: 'bye' });
  state.signaling?.leave();
}

function teardownCall() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  roster.clear(); // also forgets our id: the next welcome is a first join
  state.localTile?.remove();
  state.localTile = null;
  state.signaling = null;
}

function leave() {
  if (recording.active) recording.stop();
  sayGoodbye();
  teardownCall();
  media.stopAll();
  controls.meter.stop();
  const minutes = Math.round((Date.now() - state.startedAt) / 60000);
  screens.showEnded('You left the call', minutes >= 1 ? `The call lasted ${minutes} minute${minutes === 1 ? '' : 's'}.` : '', 'leave');
}

// The test hook (window.peercall, test-hook.js) is opt-in: only where this origin's localStorage holds
// peercall.testHook = true. Ordinary pages do not even load it. boot.js has started loading it beside this
// module's graph, so the page starts (with the hook in place) without waiting for one more fetch.
if (store.get('testHook', false) === true) {
  const { installTestHook } = await import('./test-hook.js');
  installTestHook({
    room: ROOM,
    relay: FORCE_RELAY,
    roster, media, controls, ui, chat, stats, files, recording,
    phase: () => screens.phase,
    signaling: () => state.signaling,
    iceServers: () => state.iceServers,
    localState,
    sendChat,
    leave,
  });
}

init();
