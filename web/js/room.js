// The room page (/r/<room>): pre-join check, then the call.
//
// URL parameters: name=NAME (display name), join=1 (skip the pre-join screen when a name is known),
// relay=1 (iceTransportPolicy "relay": media only through TURN), token=T (join token, when the server requires one).
//
// This module wires the page together: local media, signaling, and one Participant (connection + tile) per person.
// Who is in the call and how ids are reconciled is roster.js; the stage layout is layout.js; the chat panel
// chat.js; the connection panel stats-panel.js.

import { explainFailure } from './diagnose.js';
import { $, h, icon, setIcon, store, toast, copyText, keepFocus, mark } from './util.js';
import { cleanName, ROOM_RE, hueOf } from './names.js';
import { Signaling, signalingUrl } from './signaling.js';
import { takeEarly } from './boot.js';
import { Peer } from './peer.js';
import { LocalMedia, LevelMeter, describeMediaError } from './media.js';
import { Tile } from './tile.js';
import { summarize, quality, qualityDetail } from './stats.js';
import { Roster } from './roster.js';
import { layoutStage } from './layout.js';
import { ChatLog, chatText } from './chat.js';
import { renderStatsCards } from './stats-panel.js';
import { safetyCode, SafetyBook, memoryStorage } from './safety.js';
import { FileChannel, checkFile, formatBytes } from './files.js';
import { renderFileRows } from './files-panel.js';
import { RecordingBook, pickMimeType, recordingFileName } from './recording.js';
import { CallRecorder } from './recorder.js';
import { planVideo, sameEncoding, uplinkFromKbps, isSpeaking } from './bitrate.js';
import { PushToTalk, shortcutOf, SHORTCUTS } from './ptt.js';

const params = new URLSearchParams(location.search);
const ROOM = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const FORCE_RELAY = params.get('relay') === '1';
const AUTO_JOIN = params.get('join') === '1';
const STATS_EVERY_MS = 1000;
const DIAGNOSE_EVERY_MS = 5000; // a call that cannot connect: its candidates are read again this often

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
const state = {
  phase: 'init', // init | prejoin | call | ended
  name: '',
  password: '',
  iceServers: [],
  signaling: null,
  panel: null, // 'chat' | 'people' | 'stats' | null
  startedAt: 0,
  localTile: null,
  statsTimer: 0,
  clockTimer: 0,
  speakTimer: 0,
  soundBlocked: false,
  recorder: null, // CallRecorder while we record
  lastSpokeAt: 0, // when the microphone level last said we speak (bitrate.js: speakers get priority)
  unseenFiles: 0,
  pastFiles: [], // transfers with people who left: received files can still be saved // files offered to us while the Files panel was closed (the badge)
  fileRender: 0,
};

/** Everyone else in the call; each entry's link is its Participant. */
const roster = new Roster({
  open: (entry, { offer }) => openParticipant(entry, { offer }),
  close: (entry, { announce }) => closeParticipant(entry.link, { announce }),
  renamed: (entry) => {
    entry.link.tile.setName(entry.name);
    recordings.rename(entry.link, entry.name);
    renderRecording();
    renderPresence();
  },
  rekeyed: (entry) => {
    entry.link.peer.id = entry.id; // where its signaling goes from now on
    entry.link.tile.setId(entry.id);
    renderPresence();
  },
  sendId: (entry, id) => entry.link.peer.sendData({ t: 'id', id }),
  link: (entry) => ({ state: entry.link.peer.connectionState, channelOpen: entry.link.peer.channelOpen }),
});

/** Safety codes seen per participant, and the codes verified in this tab's session (sessionStorage). */
const safety = new SafetyBook(sessionCodes());

function sessionCodes() {
  const key = 'peercall.verifiedCodes';
  try {
    sessionStorage.getItem(key);
  } catch {
    return memoryStorage();
  }
  return {
    get() {
      try {
        const v = JSON.parse(sessionStorage.getItem(key) ?? '[]');
        return Array.isArray(v) ? v.filter((c) => typeof c === 'string') : [];
      } catch {
        return [];
      }
    },
    set(codes) {
      try {
        sessionStorage.setItem(key, JSON.stringify(codes));
      } catch {
        /* full or unavailable: verification is not remembered */
      }
    },
  };
}

/** Who in the call is recording (us, and what peers announced over the data channel). */
const recordings = new RecordingBook();

const chat = new ChatLog({ log: $('#chat-log'), empty: $('#chat-empty'), badge: $('#chat-badge') });
const meter = new LevelMeter((level) => renderMeter(level));

// ---------------------------------------------------------------------------------------------------------------
// Startup

function init() {
  mark('page-ready');
  if (!ROOM_RE.test(ROOM)) {
    showEnded('This room link is not valid', 'Room names are 1 to 64 letters, digits, "-" or "_".', 'warn');
    return;
  }
  document.title = `${ROOM} · peercall`;
  state.name = cleanName(params.get('name') ?? '') || cleanName(store.get('name', ''));
  $('#room-name').textContent = ROOM;
  $('#call-room').textContent = ROOM;
  $('#invite-url').textContent = inviteUrl();
  media.addEventListener('tracks', onLocalTracks);
  navigator.mediaDevices?.addEventListener?.('devicechange', () => fillDevicePickers());
  bindPrejoin();
  bindCall();
  if (AUTO_JOIN && state.name) {
    // Nothing waits for the camera: signaling (and with its welcome the ICE servers, the offers and the whole
    // connection set-up) starts now, beside getUserMedia. The tracks go onto the connections' senders when the
    // camera is ready (onLocalTracks → replaceTrack: no renegotiation), so the first frame waits only for the
    // slower of the two, never for both in a row.
    media.open().then(() => {
      mark('camera');
      reportMediaErrors(true);
      fillDevicePickers(); // device labels are known now that access was granted
    });
    join();
  } else {
    showPrejoin();
  }
}

function inviteUrl() {
  return `${location.origin}/r/${encodeURIComponent(ROOM)}`;
}

function show(section) {
  for (const id of ['prejoin', 'call', 'ended']) $(`#${id}`).hidden = id !== section;
}

// ---------------------------------------------------------------------------------------------------------------
// Pre-join

function bindPrejoin() {
  const nameInput = $('#name-input');
  nameInput.addEventListener('input', () => {
    $('#preview-avatar').textContent = (cleanName(nameInput.value) || '?').slice(0, 1).toUpperCase();
    $('#preview-avatar').style.setProperty('--hue', String(hueOf(cleanName(nameInput.value))));
  });
  $('#pre-mic').addEventListener('click', () => toggleMic());
  $('#pre-cam').addEventListener('click', () => toggleCam());
  $('#pre-cam-select').addEventListener('change', (e) => chooseCamera(e.target.value));
  $('#pre-mic-select').addEventListener('change', (e) => chooseMicrophone(e.target.value));
  $('#pre-copy').addEventListener('click', copyInvite);
  $('#join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = cleanName(nameInput.value);
    if (!name) {
      showPrejoinError('Please enter your name.');
      nameInput.focus();
      return;
    }
    state.name = name;
    state.password = $('#password-input').value;
    store.set('name', name);
    join();
  });
}

async function showPrejoin(error = null) {
  state.phase = 'prejoin';
  show('prejoin');
  const nameInput = $('#name-input');
  nameInput.value = state.name;
  nameInput.dispatchEvent(new Event('input'));
  showPrejoinError(error);
  if (!media.audioTrack && !media.cameraTrack) {
    $('#preview-off-text').textContent = 'Starting camera…';
    await media.open();
    mark('camera');
    reportMediaErrors(false);
  }
  renderLocalMedia();
  fillDevicePickers();
  (state.name ? $('#join-btn') : nameInput).focus();
}

function showPrejoinError(text) {
  const el = $('#prejoin-error');
  el.hidden = !text;
  el.textContent = text ?? '';
}

/** Shows what went wrong with the camera or microphone, in words. */
function reportMediaErrors(asToast) {
  const { audio, video } = media.errors;
  let text = null;
  if (audio && video && audio.name === video.name) text = describeMediaError(audio, 'camera and microphone');
  else if (audio && video) text = `${describeMediaError(video, 'camera')} ${describeMediaError(audio, 'microphone')}`;
  else if (video) text = `${describeMediaError(video, 'camera')} You can still talk: the call will be audio-only.`;
  else if (audio) text = describeMediaError(audio, 'microphone');
  else if (!media.hasCamera && !media.cameraTrack && media.audioTrack) text = 'No camera found: you will join with audio only.';
  const el = $('#media-error');
  el.hidden = !text;
  el.textContent = text ?? '';
  if (asToast && text) toast(text, { kind: 'warn', timeout: 7000 });
}

async function fillDevicePickers() {
  const { cameras, microphones, speakers } = await media.devices();
  const fill = (select, list, current, none) => {
    select.replaceChildren(
      ...(list.length ? list : [{ id: '', label: none }]).map((d) =>
        h('option', { value: d.id, selected: d.id === current }, d.label)),
    );
    select.disabled = list.length === 0;
  };
  const camId = media.cameraTrack?.getSettings().deviceId ?? media.videoDeviceId;
  const micId = media.audioTrack?.getSettings().deviceId ?? media.audioDeviceId;
  fill($('#pre-cam-select'), cameras, camId, 'No camera found');
  fill($('#set-cam-select'), cameras, camId, 'No camera found');
  fill($('#pre-mic-select'), microphones, micId, 'No microphone found');
  fill($('#set-mic-select'), microphones, micId, 'No microphone found');
  // Speaker choice: where the browser can route audio (setSinkId) and tells us the outputs.
  $('#set-speaker-field').hidden = !CAN_PICK_SPEAKER || speakers.length === 0;
  fill($('#set-speaker-select'), speakers, store.get('speakerDevice', 'default') ?? 'default', 'Default speaker');
  $('#set-ec').checked = media.processing.echoCancellation;
  $('#set-ns').checked = media.processing.noiseSuppression;
  $('#set-agc').checked = media.processing.autoGainControl;
}

const CAN_PICK_SPEAKER = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

/** Plays every remote participant's sound on the chosen output device. */
async function chooseSpeaker(deviceId) {
  store.set('speakerDevice', deviceId || null);
  await Promise.all(roster.links().map((p) => routeAudio(p)));
}

async function routeAudio(p) {
  const id = store.get('speakerDevice', null);
  const audio = p.tile.audio;
  if (!CAN_PICK_SPEAKER || !audio || !id || audio.sinkId === id) return;
  try {
    await audio.setSinkId(id);
  } catch (e) {
    console.warn('peercall: setSinkId', e);
    toast('Cannot use that speaker; sound stays on the default one', { kind: 'warn' });
  }
}

async function chooseProcessing() {
  try {
    await media.setProcessing({
      echoCancellation: $('#set-ec').checked,
      noiseSuppression: $('#set-ns').checked,
      autoGainControl: $('#set-agc').checked,
    });
  } catch (e) {
    toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Local media controls (shared by the pre-join screen and the call)

async function toggleMic() {
  try {
    await media.setMic(!media.micOn);
  } catch (e) {
    toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
  }
}

async function toggleCam() {
  if (media.sharing && media.camOn) {
    // While sharing, the camera toggle only changes what comes back after sharing.
  }
  try {
    await media.setCamera(!media.camOn);
  } catch (e) {
    toast(describeMediaError(e, 'camera'), { kind: 'error', timeout: 6000 });
  }
}

async function toggleScreen() {
  if (media.sharing) {
    media.stopScreen();
    return;
  }
  try {
    await media.startScreen();
    toast('You are sharing your screen');
  } catch (e) {
    if (e?.name !== 'NotAllowedError') toast(describeMediaError(e, 'screen'), { kind: 'error' });
  }
}

async function chooseCamera(deviceId) {
  if (!deviceId) return;
  try {
    await media.useCamera(deviceId);
  } catch (e) {
    toast(describeMediaError(e, 'camera'), { kind: 'error', timeout: 6000 });
    fillDevicePickers();
  }
}

async function chooseMicrophone(deviceId) {
  if (!deviceId) return;
  try {
    await media.useMicrophone(deviceId);
  } catch (e) {
    toast(describeMediaError(e, 'microphone'), { kind: 'error', timeout: 6000 });
    fillDevicePickers();
  }
}

/** Local tracks changed: update the preview or own tile, swap tracks on every connection, tell the others. */
function onLocalTracks() {
  if (media.cameraTrack) mark('camera');
  renderLocalMedia();
  if (state.phase !== 'call') return;
  for (const p of roster.links()) {
    p.peer.replaceTrack('audio', media.outgoingAudio);
    p.peer.replaceTrack('video', media.outgoingVideo);
  }
  broadcastState();
}

function renderLocalMedia() {
  const video = media.outgoingVideo;
  const micOn = media.micOn && Boolean(media.audioTrack);
  meter.attach(media.audioTrack);
  // Pre-join preview
  const preview = $('#preview-video');
  const previewStream = video ? new MediaStream([video]) : null;
  if (preview.srcObject?.getVideoTracks()[0] !== video) preview.srcObject = previewStream;
  $('#preview').classList.toggle('cam-off', !video);
  $('#preview-off-text').textContent = media.hasCamera ? 'Camera is off' : 'No camera found';
  setToggle($('#pre-mic'), micOn, 'mic', 'microphone');
  setToggle($('#pre-cam'), Boolean(media.camOn && media.cameraTrack), 'cam', 'camera');
  // In-call controls and own tile
  setToggle($('#ctl-mic'), micOn, 'mic', 'mic (microphone)'); // the accessible name holds the visible "Mic"
  setToggle($('#ctl-cam'), Boolean(media.camOn && media.cameraTrack), 'cam', 'camera');
  const screenBtn = $('#ctl-screen');
  screenBtn.setAttribute('aria-pressed', String(media.sharing));
  screenBtn.setAttribute('aria-label', media.sharing ? 'Stop sharing your screen' : 'Share your screen');
  screenBtn.classList.toggle('ctl-active', media.sharing);
  setIcon(screenBtn, media.sharing ? 'screen-off' : 'screen');
  screenBtn.querySelector('.ctl-label').textContent = media.sharing ? 'Stop' : 'Share';
  const tile = state.localTile;
  if (tile) {
    const stream = video ? new MediaStream([video]) : null;
    if (tile.video.srcObject?.getVideoTracks()[0] !== video) tile.setStream(stream);
    tile.setCam(Boolean(video));
    tile.setMic(micOn);
    tile.setScreen(media.sharing);
    tile.setMirror(!media.sharing);
  }
}

/** A toggle button: pressed = device on. */
function setToggle(button, on, kind, noun) {
  button.setAttribute('aria-pressed', String(on));
  button.classList.toggle('ctl-off', !on);
  setIcon(button, on ? kind : `${kind}-off`);
  const verb = kind === 'mic' ? (on ? 'Mute' : 'Unmute') : on ? 'Turn off' : 'Turn on';
  button.setAttribute('aria-label', `${verb} ${noun}`);
}

function renderMeter(level) {
  const lit = Math.round(level * 10);
  for (const id of ['#pre-meter', '#set-meter']) {
    const bars = document.querySelector(id)?.children ?? [];
    for (let i = 0; i < bars.length; i++) bars[i].classList.toggle('on', i < lit);
  }
  const speaking = level > 0.45 && media.micOn;
  if (speaking) state.lastSpokeAt = Date.now();
  state.localTile?.setSpeaking(speaking);
}

// ---------------------------------------------------------------------------------------------------------------
// Joining and signaling

function join() {
  state.phase = 'call';
  state.startedAt = Date.now();
  // Signaling first: the socket's handshake runs while the call screen below is built and laid out (the first
  // layout of the page is the longest task the page has: a fresh renderer shapes its first text then).
  const signaling = new Signaling({
    url: signalingUrl(),
    room: ROOM,
    name: state.name,
    password: state.password,
    token: params.get('token') ?? undefined, // HMAC join token, for deployments that embed peercall
    early: takeEarly(), // the socket boot.js opened (and joined with) while this page loaded
  });
  state.signaling = signaling;
  signaling.addEventListener('state', (e) => {
    const previous = $('#status').dataset.status;
    renderStatus(e.detail);
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
  show('call');
  if (!state.localTile) {
    state.localTile = new Tile({ id: 'local', name: state.name, local: true });
    $('#stage').append(state.localTile.el);
  }
  state.localTile.setName(state.name);
  $('#set-name').value = state.name;
  renderLocalMedia();
  fillDevicePickers();
  layout();
  renderPresence();
  clearInterval(state.clockTimer);
  state.clockTimer = setInterval(renderClock, 1000);
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(pollStats, STATS_EVERY_MS);
  clearInterval(state.speakTimer);
  state.speakTimer = setInterval(renderSpeaking, 200);
}

/** What every Peer asks of the room (each one also gets isOrphan, from its roster entry). */
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
  renderPresence();
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

function onFatal({ code, message }) {
  teardownCall();
  switch (code) {
    case 'wrong-password':
      $('#password-box').open = true;
      showPrejoin(state.password ? 'That password is not right for this room.' : 'This room has a password. Enter it to join.');
      $('#password-input').focus();
      return;
    case 'room-full':
      showEnded('This room is full', 'Calls in peercall go directly between browsers, so rooms are small. Try again when someone leaves, or start a new room.', 'people');
      return;
    case 'bad-token':
      showEnded('You are not invited to this room', 'Your invitation is missing, expired or meant for another room. Ask for a new link.', 'lock');
      return;
    case 'too-many-rooms':
    case 'too-many-connections':
      showEnded('The server is busy', 'Too many calls are running right now. Try again in a minute.', 'warn');
      return;
    case 'too-many-joins':
      // Throttled (too many joins or failed passwords from this address): the server says how long to wait.
      showEnded('Too many attempts', message || 'Too many join attempts from your network. Wait a little and try again.', 'warn');
      return;
    case 'unsupported-version':
      showEnded('Please reload', 'This page is older than the server. Reload to get the new version.', 'refresh');
      return;
    default:
      showEnded('Cannot join this room', message || code, 'warn');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Peers

/** The room's side of one person (their roster entry's link): the connection, the tile, what they last said
 *  about their camera and microphone, and the last getStats summary (bitrates are computed against it). */
class Participant {
  constructor(entry) {
    this.entry = entry;
    this.peer = new Peer({
      id: entry.id,
      host: { ...host, isOrphan: () => entry.orphan, remoteMedia: () => this.remote },
    });
    this.tile = new Tile({ id: entry.id, name: entry.name, onInfo: () => openPanel('stats') });
    this.remote = { audio: true, video: true, screen: false, known: false };
    this.stats = null;
    this.safetyInput = null; // the fingerprints the current safety code was computed from
    this.files = null; // FileChannel (files.js), once the connection exists
    this.videoPlan = null; // the encoding bitrate.js chose for our video to this peer, once applied
  }

  get id() {
    return this.entry.id;
  }

  get name() {
    return this.entry.name;
  }
}

/** The roster admitted someone: their tile goes on the stage, their connection starts (we offer when `offer`). */
function openParticipant(entry, { offer }) {
  const p = new Participant(entry);
  entry.link = p;
  const { peer } = p;
  $('#stage').insertBefore(p.tile.el, state.localTile?.el ?? null);
  peer.addEventListener('track', () => {
    p.tile.setStream(peer.stream);
    watchFirstFrame(p);
    renderPeer(p);
    routeAudio(p).then(() => playRemoteAudio(p));
  });
  peer.addEventListener('state', () => {
    renderPeer(p);
    roster.linkChanged(entry);
    renderPresence();
  });
  peer.addEventListener('channel', () => {
    if (peer.channelOpen) sendState(p);
    if (peer.channelOpen && state.recorder) peer.sendData({ t: 'recording', on: true });
    renderPeer(p);
  });
  peer.addEventListener('data', (e) => onPeerData(p, e.detail.data, 'datachannel'));
  peer.addEventListener('created', () => wireFiles(p));
  if (offer) peer.startAsOfferer();
  else peer.prepare(); // its offer is on its way: the connection exists when it arrives
  sendState(p);
  renderPeer(p);
  layout();
  renderPresence();
}

/** Marks (peercall:first-frame) when the first remote video frame is shown on `p`'s tile. */
function watchFirstFrame(p) {
  if (p.frameWatched || !p.peer.stream.getVideoTracks().length) return;
  p.frameWatched = true;
  const id = p.id;
  const video = p.tile.video;
  if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(() => mark('first-frame', id));
  else video.addEventListener('loadeddata', () => mark('first-frame', id), { once: true });
}

/** The roster let someone go: close the connection, take the tile off the stage. */
function closeParticipant(p, { announce }) {
  safety.forget(p);
  if (recordings.forget(p)) renderRecording();
  if (p.files) {
    p.files.close();
    state.pastFiles.push(...p.files.list().map((transfer) => ({ transfer, peerName: p.name, peerId: p.id })));
    state.pastFiles = state.pastFiles.slice(-50);
  }
  p.peer.close();
  renderFiles();
  p.tile.remove();
  if (announce) toast(`${p.name} left`);
  layout();
  renderPresence();
}

/** Application messages from a peer, over the data channel or (before it opens) signaling. */
function onPeerData(p, data, via) {
  if (!data || typeof data !== 'object' || typeof data.t !== 'string') return;
  switch (data.t) {
    case 'state':
      p.remote = { audio: data.audio === true, video: data.video === true, screen: data.screen === true, known: true };
      renderPeer(p);
      renderPresence();
      return;
    case 'chat': {
      if (typeof data.text !== 'string') return;
      const text = chatText(data.text);
      if (text) addChat({ from: p.id, name: p.name, text, mine: false, via });
      return;
    }
    case 'id':
      // Only trusted over the data channel: it is authenticated by DTLS, end to end.
      if (via === 'datachannel' && roster.claimId(p.entry, data.id) === 'refused') {
        console.warn(`peercall: ${p.id} claimed the id of ${data.id}; ignored`);
      }
      return;
    case 'recording': {
      // Only over the data channel (end to end): the indicator must not be something the server can switch off.
      if (via !== 'datachannel') return;
      const on = data.on === true;
      if (recordings.set(p, p.name, on)) {
        toast(on ? `${p.name} started recording this call` : `${p.name} stopped recording`, { kind: on ? 'warn' : 'info', timeout: 5000 });
        renderRecording();
      }
      return;
    }
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

function renderPeer(p) {
  const { tile, peer, remote } = p;
  const hasVideo = peer.stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
  tile.setCam(remote.known ? remote.video && hasVideo : hasVideo);
  tile.setMic(remote.known ? remote.audio : true);
  tile.setScreen(remote.screen);
  const s = peer.connectionState;
  if (s === 'connected') p.failure = null;
  // Every candidate pair failed: say why it is likely, instead of spinning (the ICE restart that follows
  // goes on; the words go once the call connects).
  // Reading the candidates re-renders the tile: at most once per DIAGNOSE_EVERY_MS, not in a loop.
  const due = !p.diagnosedAt || performance.now() - p.diagnosedAt > DIAGNOSE_EVERY_MS;
  if ((s === 'failed' || peer.stuck) && s !== 'connected' && !p.diagnosing && due) diagnose(p);
  tile.setState(
    s === 'connected' ? null
      : p.failure ? `Can't connect: ${p.failure} (still trying)`
        : s === 'disconnected' ? 'Reconnecting…'
          : s === 'failed' ? 'Connection lost — retrying'
            : 'Connecting…',
  );
}

/** Reads the candidates the browser gathered and explains the failure on the tile. */
async function diagnose(p) {
  p.diagnosing = true;
  p.diagnosedAt = performance.now();
  try {
    const report = await p.peer.pc?.getStats();
    const local = [];
    const remote = [];
    report?.forEach((r) => {
      if (r.type === 'local-candidate') local.push(r);
      if (r.type === 'remote-candidate') remote.push(r);
    });
    p.failure = explainFailure({ iceServers: state.iceServers, local, remote, relayOnly: FORCE_RELAY });
    console.warn(`peercall: cannot connect to ${p.id}: ${p.failure}`);
  } catch (e) {
    console.warn('peercall: cannot read the candidates', e);
  } finally {
    p.diagnosing = false;
  }
  renderPeer(p);
}

async function playRemoteAudio(p) {
  const ok = await p.tile.playAudio();
  if (!ok && !state.soundBlocked) {
    state.soundBlocked = true;
    $('#sound-banner').hidden = false;
  }
}

function renderSpeaking() {
  for (const p of roster.links()) {
    p.tile.setSpeaking(p.remote.audio !== false && p.peer.audioLevel() > 0.06);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Call UI

function bindCall() {
  $('#ctl-mic').addEventListener('click', () => toggleMic());
  $('#ctl-cam').addEventListener('click', () => toggleCam());
  $('#ctl-screen').addEventListener('click', () => toggleScreen());
  if (!navigator.mediaDevices?.getDisplayMedia) $('#ctl-screen').hidden = true;
  $('#ctl-mic-more').addEventListener('click', () => openSettings('#set-mic-select'));
  $('#ctl-cam-more').addEventListener('click', () => openSettings('#set-cam-select'));
  $('#ctl-settings').addEventListener('click', () => openSettings('#set-cam-select'));
  $('#ctl-chat').addEventListener('click', () => togglePanel('chat'));
  $('#ctl-stats').addEventListener('click', () => togglePanel('stats'));
  $('#ctl-files').addEventListener('click', () => togglePanel('files'));
  $('#ctl-record').addEventListener('click', () => toggleRecording());
  if (!window.MediaRecorder || !HTMLCanvasElement.prototype.captureStream || !window.AudioContext) $('#ctl-record').hidden = true;
  $('#file-choose').addEventListener('click', () => $('#file-input').click());
  $('#file-input').addEventListener('change', (e) => {
    sendFiles([...e.target.files], $('#file-target').value);
    e.target.value = '';
  });
  bindDrop();
  $('#ctl-leave').addEventListener('click', () => leave());
  $('#side-close').addEventListener('click', () => openPanel(null));
  for (const name of ['chat', 'people', 'files', 'stats']) $(`#tab-${name}`).addEventListener('click', () => openPanel(name));
  $('#empty-copy').addEventListener('click', copyInvite);
  $('#top-copy').addEventListener('click', openInvite);
  $('#invite-copy').addEventListener('click', copyInvite);
  $('#status-retry').addEventListener('click', () => state.signaling?.reconnectNow());
  $('#chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendChat($('#chat-input').value);
  });
  $('#set-cam-select').addEventListener('change', (e) => chooseCamera(e.target.value));
  $('#set-mic-select').addEventListener('change', (e) => chooseMicrophone(e.target.value));
  $('#set-speaker-select').addEventListener('change', (e) => chooseSpeaker(e.target.value));
  for (const id of ['#set-ec', '#set-ns', '#set-agc']) $(id).addEventListener('change', chooseProcessing);
  $('#set-shortcuts').addEventListener('click', () => openShortcuts());
  $('#set-uplink').addEventListener('change', (e) => {
    store.set('uplinkKbps', e.target.value ? Number(e.target.value) : null);
    for (const p of roster.links()) applyVideoBudget(p);
  });
  $('#settings').addEventListener('close', () => {
    const name = cleanName($('#set-name').value);
    if (name && name !== state.name) {
      state.name = name;
      store.set('name', name);
      state.localTile?.setName(name);
      state.signaling?.rename(name);
      renderPresence();
    }
  });
  $('#ended-rejoin').addEventListener('click', rejoin);
  $('#sound-btn').addEventListener('click', async () => {
    state.soundBlocked = false;
    $('#sound-banner').hidden = true;
    for (const p of roster.links()) playRemoteAudio(p);
  });
  bindKeys();
  new ResizeObserver(() => layout()).observe($('#stage'));
  window.addEventListener('pagehide', () => {
    if (state.phase === 'call') sayGoodbye();
  });
}

/** Shortcuts (ptt.js says which key is which) and push-to-talk on the space bar. */
function bindKeys() {
  const ptt = new PushToTalk();
  const describe = (e) => {
    const el = e.target instanceof Element ? e.target : null;
    const typing = Boolean(el?.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
    return {
      key: e.key, code: e.code, repeat: e.repeat, ctrl: e.ctrlKey, meta: e.metaKey, alt: e.altKey, shift: e.shiftKey,
      typing,
      onControl: typing || Boolean(el?.closest('button, a[href], summary, [role="tab"], dialog[open]')),
      micOn: media.micOn,
    };
  };
  document.addEventListener('keydown', (e) => {
    if (state.phase !== 'call') return;
    const d = describe(e);
    const action = ptt.down(d);
    if (action) {
      e.preventDefault();
      if (action === 'unmute') pushToTalk(true);
      return;
    }
    const shortcut = shortcutOf(d);
    if (!shortcut) return;
    e.preventDefault();
    if (shortcut === 'mic') toggleMic();
    else if (shortcut === 'cam') toggleCam();
    else if (shortcut === 'chat') togglePanel('chat');
    else if (shortcut === 'leave') leave();
    else if (shortcut === 'help') openShortcuts();
  });
  document.addEventListener('keyup', (e) => {
    if (ptt.up({ key: e.key, code: e.code }) === 'mute') pushToTalk(false);
  });
  window.addEventListener('blur', () => {
    if (ptt.blur() === 'mute') pushToTalk(false);
  });
}

async function pushToTalk(talking) {
  state.pushToTalk = talking;
  document.body.classList.toggle('push-to-talk', talking);
  if (media.micOn !== talking) await toggleMic();
}

function openShortcuts() {
  const keys = (list) => list.flatMap((k, i) => [i ? ' + ' : '', h('kbd', {}, k)]);
  $('#shortcut-list').replaceChildren(...SHORTCUTS.flatMap(({ keys: k, what }) => [h('dt', {}, ...keys(k)), h('dd', {}, what)]));
  const settings = $('#settings');
  if (settings.open) settings.close();
  const dialog = $('#shortcuts');
  if (!dialog.open) dialog.showModal();
}

function openSettings(focus) {
  fillDevicePickers();
  const kbps = String(store.get('uplinkKbps', '') ?? '');
  $('#set-uplink').value = [...$('#set-uplink').options].some((o) => o.value === kbps) ? kbps : '';
  $('#set-name').value = state.name;
  const dialog = $('#settings');
  if (!dialog.open) dialog.showModal();
  $(focus).focus();
}

/** The invite dialog: the room link, and its QR code rendered by the server (GET /qr, SVG) for phones nearby. */
function openInvite() {
  const url = inviteUrl();
  $('#invite-dialog-url').textContent = url;
  const qr = $('#invite-qr');
  const src = `/qr?${new URLSearchParams({ text: url })}`;
  if (qr.getAttribute('src') !== src) qr.src = src;
  $('#invite-password-note').hidden = !state.password;
  const dialog = $('#invite');
  if (!dialog.open) dialog.showModal();
  $('#invite-copy').focus();
}

async function copyInvite() {
  const ok = await copyText(inviteUrl());
  toast(ok ? 'Invite link copied' : `Copy this link: ${inviteUrl()}`, { kind: ok ? 'success' : 'info', timeout: ok ? 2500 : 8000 });
}

function togglePanel(name) {
  openPanel(state.panel === name ? null : name);
}

function openPanel(name) {
  state.panel = name;
  $('#side').hidden = !name;
  document.body.classList.toggle('side-open', Boolean(name));
  for (const tab of ['chat', 'people', 'files', 'stats']) {
    $(`#tab-${tab}`).setAttribute('aria-selected', String(tab === name));
    $(`#${tab}-panel`).hidden = tab !== name;
  }
  $('#ctl-chat').setAttribute('aria-pressed', String(name === 'chat'));
  $('#ctl-stats').setAttribute('aria-pressed', String(name === 'stats'));
  if (name === 'chat') {
    chat.markRead();
    $('#chat-input').focus({ preventScroll: true });
    chat.scroll();
  }
  $('#ctl-files').setAttribute('aria-pressed', String(name === 'files'));
  if (name === 'files') {
    state.unseenFiles = 0;
    renderFiles();
  }
  if (name === 'stats') pollStats();
  layout();
}

function renderStatus({ state: s, retryIn }) {
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

function renderClock() {
  const seconds = Math.floor((Date.now() - state.startedAt) / 1000);
  const hh = Math.floor(seconds / 3600);
  const mm = String(Math.floor((seconds % 3600) / 60)).padStart(2, '0');
  const ss = String(seconds % 60).padStart(2, '0');
  $('#call-clock').textContent = hh ? `${hh}:${mm}:${ss}` : `${mm}:${ss}`;
}

function renderPresence() {
  renderFileTargets();
  const count = roster.size + 1;
  $('#call-count').textContent = `${count} ${count === 1 ? 'person' : 'people'}`;
  $('#empty-hint').hidden = roster.size > 0 || state.phase !== 'call';
  const list = $('#people-list');
  const row = (name, you, audio, video, connection) =>
    h('li', { class: 'person' },
      h('span', { class: 'avatar avatar-sm', style: `--hue:${hueOf(name)}` }, (name[0] ?? '?').toUpperCase()),
      h('span', { class: 'person-name' }, you ? `${name} (you)` : name),
      connection ? h('span', { class: 'person-state' }, connection) : null,
      h('span', { class: `person-icon${audio ? '' : ' off'}`, title: audio ? 'Microphone on' : 'Microphone off' }, icon(audio ? 'mic' : 'mic-off')),
      h('span', { class: `person-icon${video ? '' : ' off'}`, title: video ? 'Camera on' : 'Camera off' }, icon(video ? 'cam' : 'cam-off')));
  const me = localState();
  list.replaceChildren(
    row(state.name, true, me.audio, me.video, null),
    ...roster.links().map((p) =>
      row(p.name, false, p.remote.audio, p.remote.video, p.peer.connectionState === 'connected' ? null : 'connecting…')),
  );
}

// ---------------------------------------------------------------------------------------------------------------
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
    if (!stage || state.phase !== 'call') return;
    layoutStage(stage, roster.links().map((p) => p.tile), state.localTile);
  });
}

// ---------------------------------------------------------------------------------------------------------------
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
  addChat({ from: roster.myId, name: state.name, text, mine: true, via: 'local' });
  $('#chat-input').value = '';
  if (roster.size > 0 && delivered === 0) toast('Message not delivered: nobody is connected yet', { kind: 'warn' });
}

function addChat(message) {
  chat.add(message, { seen: state.panel === 'chat' });
}

// ---------------------------------------------------------------------------------------------------------------
// Files (files.js moves them over each peer's file channel, files-panel.js shows them)

function wireFiles(p) {
  if (p.files || !p.peer.fileDc) return;
  const files = new FileChannel(p.peer.fileDc);
  p.files = files;
  files.addEventListener('change', (e) => {
    const t = e.detail;
    if (t.state === 'done' && t.direction === 'in' && t.blob && !t.url) t.url = URL.createObjectURL(t.blob);
    scheduleFileRender();
  });
  files.addEventListener('incoming', (e) => {
    const t = e.detail;
    if (t.state === 'failed') {
      toast(`${p.name} tried to send ${t.name} (${formatBytes(t.size)}): refused, files up to 100 MB can be received.`, { kind: 'warn', timeout: 8000 });
    } else {
      toast(`${p.name} is sending you ${t.name} (${formatBytes(t.size)})`, { timeout: 5000 });
    }
    if (state.panel !== 'files') state.unseenFiles += 1;
    scheduleFileRender();
  });
}

/** Sends files to one participant (`target` = its id) or to everyone connected (`target` = ''). */
function sendFiles(list, target = '') {
  if (list.length === 0) return;
  const peers = roster.links().filter((p) => !target || p.id === target);
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
  if (state.panel !== 'files') openPanel('files');
  scheduleFileRender();
}

function bindDrop() {
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
    sendFiles([...e.dataTransfer.files], $('#file-target').value);
  });
}

/** "Everyone" and each participant, keeping the current choice while it is still here. */
function renderFileTargets() {
  const select = $('#file-target');
  const current = select.value;
  const options = [h('option', { value: '' }, 'Everyone'), ...roster.links().map((p) => h('option', { value: p.id }, p.name))];
  select.replaceChildren(...options);
  select.value = roster.get(current) ? current : '';
}

function scheduleFileRender() {
  if (state.fileRender) return;
  state.fileRender = requestAnimationFrame(() => {
    state.fileRender = 0;
    renderFiles();
  });
}

function renderFiles() {
  const badge = $('#files-badge');
  badge.hidden = state.unseenFiles === 0;
  badge.textContent = String(state.unseenFiles);
  if (state.panel !== 'files') return;
  const rows = roster.links().flatMap((p) => (p.files?.list() ?? []).map((t) => ({
    key: `${p.id}:${t.direction}:${t.id}`,
    transfer: t,
    peerName: p.name,
    url: t.url ?? null,
    started: t.started,
    onCancel: () => p.files.cancel(t.direction, t.id),
  })));
  for (const { transfer, peerName, peerId } of state.pastFiles) {
    rows.push({ key: `${peerId}:${transfer.direction}:${transfer.id}`, transfer, peerName, url: transfer.url ?? null, started: transfer.started, onCancel: () => {} });
  }
  rows.sort((a, b) => a.started - b.started);
  const list = $('#file-list');
  keepFocus(list, () => renderFileRows(list, rows));
}

// ---------------------------------------------------------------------------------------------------------------
// Recording (recorder.js draws and mixes, recording.js decides where and says who records)

function recordingSources() {
  const remote = roster.links().map((p) => ({
    key: p.id,
    name: p.name,
    video: p.tile.video,
    showVideo: p.tile.el.dataset.cam === 'on',
    audio: p.peer.stream.getAudioTracks()[0] ?? null,
  }));
  const local = state.localTile
    ? [{ key: 'local', name: state.name, video: state.localTile.video, showVideo: Boolean(media.outgoingVideo), audio: media.micOn ? media.audioTrack : null }]
    : [];
  return [...remote, ...local];
}

function toggleRecording() {
  if (state.recorder) stopRecording();
  else startRecording();
}

function startRecording() {
  if (state.recorder || state.phase !== 'call') return false;
  const mimeType = window.MediaRecorder ? pickMimeType((t) => MediaRecorder.isTypeSupported(t)) : null;
  if (!mimeType) {
    toast('This browser cannot record WebM video', { kind: 'warn' });
    return false;
  }
  try {
    state.recorder = new CallRecorder({ sources: recordingSources, mimeType });
    state.recorder.start();
  } catch (e) {
    state.recorder = null;
    toast(`Cannot record: ${e.message}`, { kind: 'error' });
    return false;
  }
  state.recordingName = recordingFileName(ROOM, new Date());
  recordings.self = true;
  for (const p of roster.links()) p.peer.sendData({ t: 'recording', on: true });
  renderRecording();
  toast('Recording. Everyone in the call sees that you are recording.', { timeout: 4000 });
  return true;
}

/** Stops, saves the file (a download), tells the others. Resolves with the file's size. */
async function stopRecording() {
  const recorder = state.recorder;
  if (!recorder) return 0;
  state.recorder = null;
  recordings.self = false;
  for (const p of roster.links()) p.peer.sendData({ t: 'recording', on: false });
  renderRecording();
  const blob = await recorder.stop();
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: state.recordingName ?? recordingFileName(ROOM, new Date()), class: 'offscreen' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  toast(`Recording saved (${formatBytes(blob.size)})`, { kind: 'success' });
  return blob.size;
}

function renderRecording() {
  const text = recordings.text();
  $('#rec-indicator').hidden = !text;
  $('#rec-text').textContent = text;
  const mine = Boolean(state.recorder);
  const button = $('#ctl-record');
  button.setAttribute('aria-pressed', String(mine));
  button.setAttribute('aria-label', mine ? 'Stop recording' : 'Record the call');
  button.querySelector('.ctl-label').textContent = mine ? 'Stop' : 'Record';
  button.classList.toggle('ctl-recording', mine);
}

// ---------------------------------------------------------------------------------------------------------------
// Uplink budget (bitrate.js): each outgoing video gets its share of the budget, speakers first

/** The budget in bits/s: ?uplink=KBPS, else Settings, else a typical home uplink. */
function uplinkBudget() {
  return uplinkFromKbps(params.get('uplink') ?? store.get('uplinkKbps', null));
}

async function applyVideoBudget(p) {
  const sender = p.peer.senders.video;
  // Only between negotiations: parameters set while an offer is pending (and maybe rolled back) can leave the
  // encoder stopped in Chromium.
  if (!sender || p.peer.connectionState !== 'connected' || p.peer.pc?.signalingState !== 'stable') return;
  const plan = planVideo({
    budget: uplinkBudget(),
    peers: roster.size,
    speaking: isSpeaking(state.lastSpokeAt, Date.now()),
    screen: media.sharing,
  });
  try {
    const parameters = sender.getParameters();
    const encoding = parameters.encodings?.[0];
    if (!encoding) return;
    if (sameEncoding(encoding, plan)) {
      p.videoPlan = plan;
      return;
    }
    encoding.maxBitrate = plan.maxBitrate;
    encoding.scaleResolutionDownBy = plan.scaleResolutionDownBy;
    if (plan.maxFramerate) encoding.maxFramerate = plan.maxFramerate;
    else delete encoding.maxFramerate;
    encoding.priority = plan.priority;
    encoding.networkPriority = plan.priority;
    await sender.setParameters(parameters);
    p.videoPlan = plan;
  } catch (e) {
    console.warn(`peercall: video budget for ${p.id}`, e);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Connection statistics (stats.js summarizes, stats-panel.js shows)

async function pollStats() {
  const connected = roster.links().filter((p) => p.peer.pc);
  await Promise.all(connected.map(async (p) => {
    try {
      const report = await p.peer.pc.getStats();
      p.stats = summarize(report, p.stats);
      p.tile.setQuality(p.peer.connectionState === 'connected' ? quality(p.stats) : 0, qualityDetail(p.stats));
      await updateSafety(p);
      await applyVideoBudget(p);
    } catch {
      /* closed meanwhile */
    }
  }));
  if (state.panel === 'stats') renderStats();
}

function renderStats() {
  const cards = $('#stats-cards');
  keepFocus(cards, () => renderStatsCards(cards, roster.links().map((p) => ({
    id: p.id,
    name: p.name,
    connectionState: p.peer.connectionState,
    stats: p.stats,
    safety: safety.status(p),
    onVerify: (verified) => {
      if (verified) safety.verify(p);
      else safety.unverify(p);
      renderSafety(p);
      renderStats();
    },
  }))));
}

/** Safety code (safety.js) from the certificates of the DTLS session in use; warns when it changes mid-call. */
async function updateSafety(p) {
  const local = p.stats?.localCertificate;
  const remote = p.stats?.remoteCertificate;
  const input = `${local?.fingerprint}|${remote?.fingerprint}`;
  if (!local || !remote || input === p.safetyInput) return;
  const result = await safetyCode(local, remote);
  if (!result) return; // fingerprints not readable yet: try again at the next stats tick
  p.safetyInput = input;
  if (safety.update(p, result.code) === 'changed') {
    const { changedWhileVerified } = safety.status(p);
    toast(changedWhileVerified
      ? `Warning: the verified safety code with ${p.name} changed. Compare it again before you trust this call.`
      : `The safety code with ${p.name} changed (new certificates). Compare it again.`,
    { kind: 'warn', timeout: 10_000 });
    console.warn(`peercall: safety code with ${p.id} changed`);
  }
  renderSafety(p);
}

function renderSafety(p) {
  const s = safety.status(p);
  p.tile.setSafety(s?.verified ? 'verified' : s?.changed ? 'changed' : null);
}

// ---------------------------------------------------------------------------------------------------------------
// Leaving

function sayGoodbye() {
  for (const p of roster.links()) p.peer.sendData({ t: 'bye' });
  state.signaling?.leave();
}

function teardownCall() {
  clearInterval(state.clockTimer);
  clearInterval(state.statsTimer);
  clearInterval(state.speakTimer);
  roster.clear(); // also forgets our id: the next welcome is a first join
  state.localTile?.remove();
  state.localTile = null;
  state.signaling = null;
}

function leave() {
  if (state.recorder) stopRecording();
  sayGoodbye();
  teardownCall();
  media.stopAll();
  meter.stop();
  const minutes = Math.round((Date.now() - state.startedAt) / 60000);
  showEnded('You left the call', minutes >= 1 ? `The call lasted ${minutes} minute${minutes === 1 ? '' : 's'}.` : '', 'leave');
}

function showEnded(title, text, iconName) {
  state.phase = 'ended';
  show('ended');
  $('#ended-title').textContent = title;
  $('#ended-text').textContent = text;
  setIcon($('#ended-icon'), iconName);
  $('#ended-icon').dataset.kind = iconName;
  $('#ended-rejoin').hidden = !ROOM_RE.test(ROOM);
  $('#ended-rejoin-label').textContent = iconName === 'leave' ? 'Rejoin' : 'Try again';
  $('#ended-rejoin').focus();
}

function rejoin() {
  const next = new URLSearchParams();
  if (state.name) {
    next.set('name', state.name);
    next.set('join', '1');
  }
  if (FORCE_RELAY) next.set('relay', '1');
  if (params.get('token')) next.set('token', params.get('token'));
  location.assign(`/r/${encodeURIComponent(ROOM)}${next.size ? `?${next}` : ''}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Test and debugging hook: what the browser tests (tests/browser) read and drive, as window.peercall.
//
// Opt-in: installed only when this origin's localStorage holds peercall.testHook = true. The browser tests set it
// before the page loads (tests/browser/harness.mjs, enableTestHook); to debug by hand, run
// localStorage.setItem('peercall.testHook', 'true') in the console and reload. Ordinary pages carry no global
// handle on their connections, chat and controls. A stored flag rather than a URL parameter: it survives the
// page's own navigations (Rejoin, Try again), which build their URLs afresh.

if (store.get('testHook', false) === true) {
  window.peercall = {
    get id() {
      return roster.myId;
    },
    room: ROOM,
    relay: FORCE_RELAY,
    phase: () => state.phase,
    status: () => state.signaling?.state ?? 'idle',
    peers: () => roster.links().map((p) => ({
      id: p.id,
      name: p.name,
      connectionState: p.peer.connectionState,
      channel: p.peer.dc?.readyState ?? null,
      remote: { ...p.remote },
      orphan: p.entry.orphan,
      polite: p.peer.polite,
      collisions: p.peer.collisions,
      safety: safety.status(p),
      videoPlan: p.videoPlan ?? null,
    })),
    uplinkBudget,
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
      micOn: media.micOn, camOn: media.camOn, sharing: media.sharing, ...localState(),
      pushToTalk: Boolean(state.pushToTalk),
      processing: { ...media.processing },
      trackSettings: media.audioTrack ? (({ echoCancellation, noiseSuppression, autoGainControl, deviceId }) =>
        ({ echoCancellation, noiseSuppression, autoGainControl, deviceId }))(media.audioTrack.getSettings()) : null,
    }),
    sinkIds: () => roster.links().map((p) => p.tile.audio?.sinkId ?? null),
    iceServers: () => JSON.parse(JSON.stringify(state.iceServers)),
    /** The call-setup marks (util.js mark): [{name, at, peer}], `at` in ms since the epoch (performance.timeOrigin
     *  + startTime, so marks of two pages of one browser compare). */
    marks: () => performance.getEntriesByType('mark').filter((m) => m.name.startsWith('peercall:')).map((m) => ({
      name: m.name.slice('peercall:'.length), at: performance.timeOrigin + m.startTime, peer: m.detail?.peer ?? null,
    })),
    timeOrigin: performance.timeOrigin,
    /** Drops the signaling WebSocket as a network blip would (the client reconnects and resumes by itself). */
    dropSignaling: () => state.signaling?.ws?.close(),
    /** Restarts ICE with one peer now (what a failed or stalled connection triggers by itself). */
    restartIce: (id) => roster.get(id)?.link.peer.restartIce('requested'),
    toggleMic,
    toggleCam,
    sendChat,
    sendFiles,
    recording: () => ({ self: Boolean(state.recorder), text: recordings.text(), frames: state.recorder?.frames ?? 0 }),
    startRecording,
    stopRecording,
    leave,
  };
}

init();
