// The room page (/r/<room>): pre-join check, then the call.
//
// URL parameters: name=NAME (display name), join=1 (skip the pre-join screen when a name is known),
// relay=1 (iceTransportPolicy "relay": media only through TURN), token=T (join token, when the server requires one).

import { $, h, icon, setIcon, store, cleanName, ROOM_RE, toast, copyText, formatBitrate, formatTime, hueOf } from './util.js';
import { Signaling, signalingUrl } from './signaling.js';
import { Peer } from './peer.js';
import { LocalMedia, LevelMeter, describeMediaError } from './media.js';
import { Tile, bestGrid } from './tile.js';
import { summarize, describeRoute, quality } from './stats.js';

const params = new URLSearchParams(location.search);
const ROOM = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const FORCE_RELAY = params.get('relay') === '1';
const AUTO_JOIN = params.get('join') === '1';
const MAX_CHAT = 2000;
const ORPHAN_WAIT_MS = 2500;
const STATS_EVERY_MS = 1000;

const media = new LocalMedia();
const state = {
  phase: 'init', // init | prejoin | call | ended
  name: '',
  password: '',
  myId: null,
  iceServers: [],
  signaling: null,
  peers: new Map(), // peer id → Peer (with .tile)
  deferred: new Map(), // peer id → timer: new ids held back while orphaned connections may claim them
  chat: [],
  unread: 0,
  panel: null, // 'chat' | 'people' | 'stats' | null
  startedAt: 0,
  localTile: null,
  statsTimer: 0,
  clockTimer: 0,
  speakTimer: 0,
  soundBlocked: false,
};

const meter = new LevelMeter((level) => renderMeter(level));

// ---------------------------------------------------------------------------------------------------------------
// Startup

function init() {
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
    media.open().then(() => {
      reportMediaErrors(true);
      join();
    });
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
  const { cameras, microphones } = await media.devices();
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
  renderLocalMedia();
  if (state.phase !== 'call') return;
  for (const peer of state.peers.values()) {
    peer.replaceTrack('audio', media.outgoingAudio);
    peer.replaceTrack('video', media.outgoingVideo);
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
  setToggle($('#ctl-mic'), micOn, 'mic', 'microphone');
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
  state.localTile?.setSpeaking(level > 0.45 && media.micOn);
}

// ---------------------------------------------------------------------------------------------------------------
// Joining and signaling

function join() {
  state.phase = 'call';
  state.startedAt = Date.now();
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
  const signaling = new Signaling({
    url: signalingUrl(),
    room: ROOM,
    name: state.name,
    password: state.password,
    token: params.get('token') ?? undefined, // HMAC join token, for deployments that embed peercall
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
  clearInterval(state.clockTimer);
  state.clockTimer = setInterval(renderClock, 1000);
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(pollStats, STATS_EVERY_MS);
  clearInterval(state.speakTimer);
  state.speakTimer = setInterval(renderSpeaking, 200);
}

const host = {
  myId: () => state.myId ?? '',
  sendSignal: (message) => state.signaling?.send(message),
  rtcConfig: () => ({
    iceServers: state.iceServers,
    iceTransportPolicy: FORCE_RELAY ? 'relay' : 'all',
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
  }),
  localTrack: (kind) => (kind === 'audio' ? media.outgoingAudio : media.outgoingVideo),
  localStream: () => media.stream,
  signalingUp: () => Boolean(state.signaling?.connected),
  checkSignaling: () => state.signaling?.probe(),
};

function onWelcome(welcome) {
  const previousId = state.myId;
  state.iceServers = Array.isArray(welcome.iceServers) ? welcome.iceServers : [];
  const listed = Array.isArray(welcome.peers) ? welcome.peers.filter((p) => p && typeof p.id === 'string') : [];

  if (previousId === null) {
    // First join: we are the newcomer, we offer to everyone present.
    state.myId = welcome.id;
    for (const p of listed) addPeer(p.id, p.name, { offer: true });
    if (listed.length) toast(`${listed.length === 1 ? cleanName(listed[0].name) : `${listed.length} people`} already here`);
  } else if (welcome.resumed) {
    // Same session: reconcile whoever came or went while we were away.
    const present = new Set(listed.map((p) => p.id));
    for (const peer of [...state.peers.values()]) {
      if (!present.has(peer.id) && !peer.orphan) removePeer(peer.id, { announce: true });
    }
    for (const p of listed) {
      const known = state.peers.get(p.id);
      if (known) renamePeer(known, p.name);
      else if (!state.deferred.has(p.id)) addPeer(p.id, p.name, { offer: true });
    }
  } else {
    // New session (the server restarted or our grace period ran out): new id. Connections that are still up
    // keep flowing peer to peer; we tell those peers our new id over the data channel and wait a moment for
    // theirs before treating a listed id as someone new.
    state.myId = welcome.id;
    const listedIds = new Set(listed.map((p) => p.id));
    for (const peer of [...state.peers.values()]) {
      if (peer.connectionState === 'connected' && peer.channelOpen) {
        peer.orphan = !listedIds.has(peer.id); // already known by its new id when it told us first
        peer.sendData({ t: 'id', id: welcome.id });
      } else {
        removePeer(peer.id, { announce: false });
      }
    }
    for (const p of listed) admitLater(p.id, p.name, { offer: true });
  }
  for (const peer of state.peers.values()) {
    peer.setIceServers({ iceServers: state.iceServers });
    peer.onSignalingUp();
  }
  if (previousId !== null) broadcastState();
  renderPresence();
}

/** A peer id we have not seen: admitted at once, or after a short wait while orphaned connections may claim it. */
function admitLater(id, name, { offer }) {
  const known = state.peers.get(id);
  if (known) {
    known.orphan = false;
    renamePeer(known, name);
    return;
  }
  const hasOrphans = [...state.peers.values()].some((p) => p.orphan);
  if (!hasOrphans) {
    addPeer(id, name, { offer });
    return;
  }
  clearTimeout(state.deferred.get(id)?.timer);
  const timer = setTimeout(() => {
    state.deferred.delete(id);
    if (state.peers.has(id)) return;
    // Nobody claimed this id: a stale copy of the same person (same name, connection down) gives way.
    for (const peer of [...state.peers.values()]) {
      if (peer.orphan && peer.name === cleanName(name) && peer.connectionState !== 'connected') {
        removePeer(peer.id, { announce: false });
      }
    }
    addPeer(id, name, { offer });
  }, ORPHAN_WAIT_MS);
  state.deferred.set(id, { timer, name });
}

function onSignal(message) {
  switch (message.type) {
    case 'peer-joined': {
      const p = message.peer;
      if (!p || typeof p.id !== 'string' || p.id === state.myId) return;
      const wasDeferred = state.deferred.has(p.id);
      admitLater(p.id, p.name, { offer: false });
      if (!wasDeferred && state.peers.has(p.id)) toast(`${cleanName(p.name) || 'Someone'} joined`);
      return;
    }
    case 'peer-left': {
      if (typeof message.id !== 'string') return;
      clearTimeout(state.deferred.get(message.id)?.timer);
      state.deferred.delete(message.id);
      removePeer(message.id, { announce: true });
      return;
    }
    case 'peer-updated': {
      const p = message.peer;
      const peer = p && state.peers.get(p.id);
      if (peer) renamePeer(peer, p.name);
      return;
    }
    case 'offer':
    case 'answer':
    case 'candidate': {
      if (typeof message.from !== 'string') return;
      let peer = state.peers.get(message.from);
      if (!peer) {
        if (message.type !== 'offer') return;
        const pending = state.deferred.get(message.from);
        clearTimeout(pending?.timer);
        state.deferred.delete(message.from);
        peer = addPeer(message.from, pending?.name ?? 'Guest', { offer: false });
      }
      peer.handleSignal(message);
      return;
    }
    case 'message': {
      const peer = typeof message.from === 'string' ? state.peers.get(message.from) : null;
      if (peer) onPeerData(peer, message.data, 'signaling');
      return;
    }
    case 'ice-servers': {
      if (!Array.isArray(message.iceServers)) return;
      state.iceServers = message.iceServers;
      for (const peer of state.peers.values()) peer.setIceServers({ iceServers: state.iceServers });
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
    case 'unsupported-version':
      showEnded('Please reload', 'This page is older than the server. Reload to get the new version.', 'refresh');
      return;
    default:
      showEnded('Cannot join this room', message || code, 'warn');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Peers

function addPeer(id, name, { offer }) {
  const existing = state.peers.get(id);
  if (existing) return existing;
  const peer = new Peer({ id, name: cleanName(name) || 'Guest', host });
  peer.tile = new Tile({ id, name: peer.name, onInfo: () => openPanel('stats') });
  peer.joinedAt = Date.now();
  state.peers.set(id, peer);
  $('#stage').insertBefore(peer.tile.el, state.localTile?.el ?? null);
  peer.addEventListener('track', () => {
    peer.tile.setStream(peer.stream);
    renderPeer(peer);
    playRemoteAudio(peer);
  });
  peer.addEventListener('state', () => {
    renderPeer(peer);
    // An orphan (its signaling session was lost and it has not told us its new id) cannot be ICE-restarted:
    // once its connection drops, it is gone; the person comes back under their new id.
    if (peer.orphan && ['failed', 'closed'].includes(peer.connectionState)) removePeer(peer.id, { announce: false });
    if (peer.orphan && peer.connectionState === 'disconnected') {
      setTimeout(() => {
        if (peer.orphan && !peer.closed && peer.connectionState !== 'connected') removePeer(peer.id, { announce: false });
      }, ORPHAN_WAIT_MS);
    }
    renderPresence();
  });
  peer.addEventListener('channel', () => {
    if (peer.channelOpen) sendState(peer);
    renderPeer(peer);
  });
  peer.addEventListener('data', (e) => onPeerData(peer, e.detail.data, 'datachannel'));
  if (offer) peer.startAsOfferer();
  sendState(peer);
  renderPeer(peer);
  layout();
  renderPresence();
  return peer;
}

function removePeer(id, { announce }) {
  const peer = state.peers.get(id);
  if (!peer) return;
  state.peers.delete(id);
  peer.close();
  peer.tile.remove();
  if (announce) toast(`${peer.name} left`);
  layout();
  renderPresence();
}

function renamePeer(peer, name) {
  const clean = cleanName(name);
  if (!clean || clean === peer.name) return;
  peer.name = clean;
  peer.tile.setName(clean);
  renderPresence();
}

/** The other side learned it has a new signaling id (its server session was replaced). */
function rekeyPeer(peer, newId) {
  if (peer.id === newId) return;
  const duplicate = state.peers.get(newId);
  if (duplicate && duplicate !== peer) {
    if (!duplicate.orphan && duplicate.connectionState === 'connected') {
      // A live connection already answers to that id. If the claimer is a stale copy (its session was lost),
      // drop it; otherwise it is claiming someone else's id: ignore it.
      if (peer.orphan) removePeer(peer.id, { announce: false });
      else console.warn(`peercall: ${peer.id} claimed the id of ${newId}; ignored`);
      return;
    }
    // A fresh entry was created for the new id before we learned who it is: keep the established connection.
    removePeer(newId, { announce: false });
  }
  clearTimeout(state.deferred.get(newId)?.timer);
  state.deferred.delete(newId);
  state.peers.delete(peer.id);
  peer.id = newId;
  peer.orphan = false;
  peer.tile.setId(newId);
  state.peers.set(newId, peer);
  renderPresence();
}

/** Application messages from a peer, over the data channel or (before it opens) signaling. */
function onPeerData(peer, data, via) {
  if (!data || typeof data !== 'object' || typeof data.t !== 'string') return;
  switch (data.t) {
    case 'state':
      peer.remote = { audio: data.audio === true, video: data.video === true, screen: data.screen === true, known: true };
      renderPeer(peer);
      renderPresence();
      return;
    case 'chat': {
      if (typeof data.text !== 'string') return;
      const text = data.text.slice(0, MAX_CHAT).trim();
      if (text) addChat({ from: peer.id, name: peer.name, text, mine: false, via });
      return;
    }
    case 'id':
      // Only trusted over the data channel: it is authenticated by DTLS, end to end.
      if (via === 'datachannel' && typeof data.id === 'string' && data.id.length <= 128) rekeyPeer(peer, data.id);
      return;
    case 'bye':
      removePeer(peer.id, { announce: true });
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

function sendState(peer) {
  const data = localState();
  if (!peer.sendData(data)) state.signaling?.send({ type: 'message', to: peer.id, data });
}

function broadcastState() {
  for (const peer of state.peers.values()) sendState(peer);
}

function renderPeer(peer) {
  const tile = peer.tile;
  const hasVideo = peer.stream.getVideoTracks().some((t) => t.readyState === 'live' && !t.muted);
  tile.setCam(peer.remote.known ? peer.remote.video && hasVideo : hasVideo);
  tile.setMic(peer.remote.known ? peer.remote.audio : true);
  tile.setScreen(peer.remote.screen);
  const s = peer.connectionState;
  tile.setState(
    s === 'connected' ? null
      : s === 'disconnected' ? 'Reconnecting…'
        : s === 'failed' ? 'Connection lost — retrying'
          : 'Connecting…',
  );
}

async function playRemoteAudio(peer) {
  const ok = await peer.tile.playAudio();
  if (!ok && !state.soundBlocked) {
    state.soundBlocked = true;
    $('#sound-banner').hidden = false;
  }
}

function renderSpeaking() {
  for (const peer of state.peers.values()) {
    peer.tile.setSpeaking(peer.remote.audio !== false && peer.audioLevel() > 0.06);
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
  $('#ctl-leave').addEventListener('click', () => leave());
  $('#side-close').addEventListener('click', () => openPanel(null));
  for (const name of ['chat', 'people', 'stats']) $(`#tab-${name}`).addEventListener('click', () => openPanel(name));
  for (const id of ['#top-copy', '#empty-copy']) $(id).addEventListener('click', copyInvite);
  $('#status-retry').addEventListener('click', () => state.signaling?.reconnectNow());
  $('#chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendChat($('#chat-input').value);
  });
  $('#set-cam-select').addEventListener('change', (e) => chooseCamera(e.target.value));
  $('#set-mic-select').addEventListener('change', (e) => chooseMicrophone(e.target.value));
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
    for (const peer of state.peers.values()) playRemoteAudio(peer);
  });
  document.addEventListener('keydown', (e) => {
    if (state.phase !== 'call' || !(e.ctrlKey || e.metaKey)) return;
    const key = e.key.toLowerCase();
    if (key === 'd') {
      e.preventDefault();
      toggleMic();
    } else if (key === 'e') {
      e.preventDefault();
      toggleCam();
    }
  });
  new ResizeObserver(() => layout()).observe($('#stage'));
  window.addEventListener('pagehide', () => {
    if (state.phase === 'call') sayGoodbye();
  });
}

function openSettings(focus) {
  fillDevicePickers();
  $('#set-name').value = state.name;
  const dialog = $('#settings');
  if (!dialog.open) dialog.showModal();
  $(focus).focus();
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
  for (const tab of ['chat', 'people', 'stats']) {
    $(`#tab-${tab}`).setAttribute('aria-selected', String(tab === name));
    $(`#${tab}-panel`).hidden = tab !== name;
  }
  $('#ctl-chat').setAttribute('aria-pressed', String(name === 'chat'));
  $('#ctl-stats').setAttribute('aria-pressed', String(name === 'stats'));
  if (name === 'chat') {
    state.unread = 0;
    renderUnread();
    $('#chat-input').focus({ preventScroll: true });
    scrollChat();
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
  const count = state.peers.size + 1;
  $('#call-count').textContent = `${count} ${count === 1 ? 'person' : 'people'}`;
  $('#empty-hint').hidden = state.peers.size > 0 || state.phase !== 'call';
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
    ...[...state.peers.values()].map((p) =>
      row(p.name, false, p.remote.audio, p.remote.video, p.connectionState === 'connected' ? null : 'connecting…')),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Layout: one remote → it fills the stage, you float in a corner; otherwise a grid of equal tiles.

function layout() {
  const stage = document.getElementById('stage');
  if (!stage || state.phase !== 'call') return;
  const rect = stage.getBoundingClientRect();
  const styles = getComputedStyle(stage);
  const pad = parseFloat(styles.paddingLeft) + parseFloat(styles.paddingRight);
  const padV = parseFloat(styles.paddingTop) + parseFloat(styles.paddingBottom);
  const width = rect.width - pad;
  const height = rect.height - padV;
  const gap = width < 600 ? 8 : 12;
  stage.style.setProperty('--gap', `${gap}px`);
  const remotes = [...state.peers.values()].map((p) => p.tile);
  const local = state.localTile;
  const spotlight = remotes.length === 1 && local;
  stage.classList.toggle('spotlight', Boolean(spotlight));
  const tiles = spotlight ? remotes : [...remotes, local].filter(Boolean);
  // One other person: as large as the stage allows (a tall tile on a phone); otherwise an even grid.
  const grid = bestGrid(width, height, tiles.length, gap, spotlight ? { minAspect: 9 / 16 } : {});
  for (const tile of tiles) {
    tile.el.classList.remove('pip');
    tile.el.style.width = `${grid.w}px`;
    tile.el.style.height = `${grid.h}px`;
  }
  if (spotlight) {
    local.el.classList.add('pip');
    const portrait = width < height;
    const pipW = Math.round(Math.min(280, Math.max(112, width * (portrait ? 0.3 : 0.22))));
    local.el.style.width = `${pipW}px`;
    local.el.style.height = `${Math.round(portrait ? (pipW * 4) / 3 : (pipW * 9) / 16)}px`;
    // Inside the bottom-right corner of the other person's video.
    const inset = width < 600 ? 10 : 14;
    local.el.style.right = `${parseFloat(styles.paddingRight) + (width - grid.w) / 2 + inset}px`;
    local.el.style.bottom = `${parseFloat(styles.paddingBottom) + (height - grid.h) / 2 + inset}px`;
  } else if (local) {
    local.el.style.right = '';
    local.el.style.bottom = '';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Chat

function sendChat(raw) {
  const text = String(raw).slice(0, MAX_CHAT).trim();
  if (!text) return;
  let delivered = 0;
  for (const peer of state.peers.values()) {
    const data = { t: 'chat', text };
    if (peer.sendData(data)) delivered += 1;
    else if (state.signaling?.connected) {
      state.signaling.send({ type: 'message', to: peer.id, data }); // until the data channel is up
      delivered += 1;
    }
  }
  addChat({ from: state.myId, name: state.name, text, mine: true, via: 'local' });
  $('#chat-input').value = '';
  if (state.peers.size > 0 && delivered === 0) toast('Message not delivered: nobody is connected yet', { kind: 'warn' });
}

function addChat(message) {
  const entry = { ...message, at: new Date() };
  state.chat.push(entry);
  if (state.chat.length > 500) state.chat.shift();
  const log = $('#chat-log');
  const last = log.lastElementChild;
  const grouped = last && last.dataset.from === String(entry.from) && entry.at - Number(last.dataset.at) < 120_000;
  const item = h('li', { class: `msg${entry.mine ? ' mine' : ''}${grouped ? ' grouped' : ''}`, dataset: { from: String(entry.from), at: String(entry.at.getTime()) } },
    grouped ? null : h('div', { class: 'msg-head' },
      h('span', { class: 'msg-name', style: `--hue:${hueOf(entry.name)}` }, entry.mine ? 'You' : entry.name),
      h('time', { datetime: entry.at.toISOString() }, formatTime(entry.at))),
    h('p', { class: 'msg-text' }, entry.text));
  log.append(item);
  $('#chat-empty').hidden = true;
  scrollChat();
  if (!entry.mine && state.panel !== 'chat') {
    state.unread += 1;
    renderUnread();
    toast(`${entry.name}: ${entry.text.length > 80 ? `${entry.text.slice(0, 80)}…` : entry.text}`, { kind: 'chat' });
  }
}

function scrollChat() {
  const log = $('#chat-log');
  log.scrollTop = log.scrollHeight;
}

function renderUnread() {
  const badge = $('#chat-badge');
  badge.hidden = state.unread === 0;
  badge.textContent = state.unread > 9 ? '9+' : String(state.unread);
}

// ---------------------------------------------------------------------------------------------------------------
// Connection statistics

async function pollStats() {
  const peers = [...state.peers.values()].filter((p) => p.pc);
  await Promise.all(peers.map(async (peer) => {
    try {
      const report = await peer.pc.getStats();
      peer.lastStats = summarize(report, peer.lastStats);
      peer.tile.setQuality(peer.connectionState === 'connected' ? quality(peer.lastStats) : 0);
    } catch {
      /* closed meanwhile */
    }
  }));
  if (state.panel === 'stats') renderStats();
}

function renderStats() {
  const cards = $('#stats-cards');
  if (state.peers.size === 0) {
    cards.replaceChildren(h('p', { class: 'muted' }, 'Nobody else is here yet.'));
    return;
  }
  const ms = (s) => (s === null || s === undefined ? '—' : `${Math.round(s * 1000)} ms`);
  const pct = (p) => (p === null || p === undefined ? '—' : `${p.toFixed(p < 1 ? 2 : 1)} %`);
  const kv = (k, v, cls = '') => [h('dt', {}, k), h('dd', { class: cls }, v ?? '—')];
  const fingerprint = (label, c) => h('div', { class: 'fp' },
    h('div', { class: 'fp-label' }, label, c ? h('span', { class: 'muted' }, ` ${c.algorithm}`) : null),
    h('code', { class: 'fp-value' }, c?.fingerprint ?? 'not yet negotiated'));
  cards.replaceChildren(...[...state.peers.values()].map((peer) => {
    const s = peer.lastStats;
    const pair = s?.pair;
    const hostPort = (c) => `${String(c.address ?? '?').includes(':') ? `[${c.address}]` : (c.address ?? '?')}:${c.port ?? '?'}`;
    const candidate = (c) => (c ? `${c.type} · ${c.protocol}${c.relayProtocol ? ` (relay over ${c.relayProtocol})` : ''} · ${hostPort(c)}` : '—');
    const video = s?.videoIn?.frameWidth ? `${s.videoIn.frameWidth}×${s.videoIn.frameHeight} @ ${Math.round(s.videoIn.framesPerSecond ?? 0)} fps` : '—';
    const codecs = [s?.audioIn?.codec, s?.videoIn?.codec].filter(Boolean).join(', ') || '—';
    const sendCodecs = [s?.audioOut?.codec, s?.videoOut?.codec].filter(Boolean).join(', ') || '—';
    return h('section', { class: 'stats-card', dataset: { peer: peer.id } },
      h('header', { class: 'stats-head' },
        h('span', { class: 'avatar avatar-sm', style: `--hue:${hueOf(peer.name)}` }, (peer.name[0] ?? '?').toUpperCase()),
        h('strong', {}, peer.name),
        h('span', { class: `chip chip-${peer.connectionState}` }, peer.connectionState)),
      h('dl', { class: 'kv' },
        kv('Route', pair ? describeRoute(pair) : 'Not connected yet', pair?.local?.type === 'relay' || pair?.remote?.type === 'relay' ? 'warn' : 'ok'),
        kv('Local candidate', candidate(pair?.local), 'mono'),
        kv('Remote candidate', candidate(pair?.remote), 'mono'),
        kv('Round trip', ms(pair?.rtt)),
        kv('Sending', s?.sendBitrate === null || !s ? '—' : formatBitrate(s.sendBitrate)),
        kv('Receiving', s?.recvBitrate === null || !s ? '—' : formatBitrate(s.recvBitrate)),
        kv('Packet loss', `in ${pct(s?.recentLossPercent ?? s?.inboundLossPercent)} · out ${pct(s?.outboundLossPercent)}`),
        kv('Video in', video),
        kv('Codecs in', codecs),
        kv('Codecs out', sendCodecs),
        kv('Encryption', s?.dtlsState ? `DTLS ${s.dtlsState}${s.tlsVersion ? ` (${s.tlsVersion})` : ''}${s.srtpCipher ? ` · ${s.srtpCipher}` : ''}` : '—')),
      h('div', { class: 'fps' },
        fingerprint('Your fingerprint', s?.localCertificate),
        fingerprint(`${peer.name}'s fingerprint`, s?.remoteCertificate)));
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// Leaving

function sayGoodbye() {
  for (const peer of state.peers.values()) peer.sendData({ t: 'bye' });
  state.signaling?.leave();
}

function teardownCall() {
  clearInterval(state.clockTimer);
  clearInterval(state.statsTimer);
  clearInterval(state.speakTimer);
  for (const { timer } of state.deferred.values()) clearTimeout(timer);
  state.deferred.clear();
  for (const id of [...state.peers.keys()]) removePeer(id, { announce: false });
  state.localTile?.remove();
  state.localTile = null;
  state.signaling = null;
  state.myId = null;
}

function leave() {
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
// Test and debugging hook: what the browser tests (tests/browser) read.

window.peercall = {
  get id() {
    return state.myId;
  },
  room: ROOM,
  relay: FORCE_RELAY,
  phase: () => state.phase,
  status: () => state.signaling?.state ?? 'idle',
  peers: () => [...state.peers.values()].map((p) => ({
    id: p.id,
    name: p.name,
    connectionState: p.connectionState,
    channel: p.dc?.readyState ?? null,
    remote: { ...p.remote },
    orphan: p.orphan,
    polite: p.polite,
    collisions: p.collisions,
  })),
  pc: (id) => state.peers.get(id)?.pc ?? null,
  async stats(id) {
    const peer = state.peers.get(id);
    if (!peer?.pc) return null;
    return summarize(await peer.pc.getStats(), null);
  },
  chat: () => state.chat.map(({ from, name, text, mine, via }) => ({ from, name, text, mine, via })),
  local: () => ({ micOn: media.micOn, camOn: media.camOn, sharing: media.sharing, ...localState() }),
  iceServers: () => JSON.parse(JSON.stringify(state.iceServers)),
  /** Drops the signaling WebSocket as a network blip would (the client reconnects and resumes by itself). */
  dropSignaling: () => state.signaling?.ws?.close(),
  /** Restarts ICE with one peer now (what a failed or stalled connection triggers by itself). */
  restartIce: (id) => state.peers.get(id)?.restartIce('requested'),
  toggleMic,
  toggleCam,
  sendChat,
  leave,
};

init();
