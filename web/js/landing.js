// The landing page: create a room with a readable random name, or join one by name or link.

import { $, store } from './util.js';
import { cleanName, parseRoomInput, randomRoomName } from './names.js';

const nameInput = $('#name');
const roomInput = $('#room');
const error = $('#landing-error');

nameInput.value = store.get('name', '') ?? '';

function showError(text) {
  error.hidden = !text;
  error.textContent = text ?? '';
}

function go(room) {
  const name = cleanName(nameInput.value);
  if (name) store.set('name', name);
  const query = name ? `?name=${encodeURIComponent(name)}` : '';
  location.assign(`/r/${encodeURIComponent(room)}${query}`);
}

nameInput.addEventListener('change', () => {
  const name = cleanName(nameInput.value);
  if (name) store.set('name', name);
});

$('#create').addEventListener('click', () => go(randomRoomName()));

$('#join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const room = parseRoomInput(roomInput.value);
  if (!room) {
    showError(roomInput.value.trim()
      ? 'Room names use letters, digits, "-" and "_" (up to 64), like brave-otter-4821-0937-5512-8830 — or paste an invite link.'
      : 'Type a room name or paste an invite link.');
    roomInput.focus();
    return;
  }
  showError(null);
  go(room);
});

roomInput.addEventListener('input', () => showError(null));
