// Push-to-talk on the space bar, and the keyboard shortcuts of the call screen (no DOM here: the room passes
// plain descriptions of key events; unit-tested in tests/web/ptt.test.mjs).

/** The call screen's shortcuts, as listed behind "?" (Ctrl on Linux and Windows, ⌘ on a Mac). */
export const SHORTCUTS = [
  { keys: ['Ctrl', 'D'], what: 'Microphone on or off' },
  { keys: ['Ctrl', 'E'], what: 'Camera on or off' },
  { keys: ['Space'], what: 'Hold to talk while your microphone is off' },
  { keys: ['Ctrl', 'Alt', 'C'], what: 'Open or close the chat' },
  { keys: ['Ctrl', 'Alt', 'L'], what: 'Leave the call' },
  { keys: ['?'], what: 'Show these shortcuts' },
];

/**
 * Which shortcut a key press is, or null: 'mic', 'cam', 'chat', 'leave', 'help'.
 * `e`: {key, ctrl, meta, alt, shift, typing} (typing: the focus is in a text field, where keys are text).
 */
export function shortcutOf(e) {
  const key = String(e.key ?? '').toLowerCase();
  const mod = e.ctrl || e.meta;
  if (mod && !e.alt && key === 'd') return 'mic';
  if (mod && !e.alt && key === 'e') return 'cam';
  if (mod && e.alt && (key === 'c' || e.code === 'KeyC')) return 'chat';
  if (mod && e.alt && (key === 'l' || e.code === 'KeyL')) return 'leave';
  if (!mod && !e.alt && key === '?' && !e.typing) return 'help';
  return null;
}

/**
 * Holding the space bar unmutes a muted microphone until it is released (or the window loses focus).
 * Not while typing or on a control (where the space bar presses the control), not with modifiers.
 */
export class PushToTalk {
  constructor() {
    this.held = false;
  }

  /**
   * A key went down. Returns 'unmute' (start talking), 'swallow' (a repeat while talking: keep the page from
   * scrolling) or null (not ours).
   * `e`: {code, key, repeat, ctrl, meta, alt, shift, typing, onControl, micOn}
   */
  down(e) {
    const space = e.code === 'Space' || e.key === ' ';
    if (!space || e.ctrl || e.meta || e.alt || e.shift || e.typing || e.onControl) return null;
    if (this.held) return 'swallow';
    if (e.micOn || e.repeat) return null;
    this.held = true;
    return 'unmute';
  }

  /** A key went up: 'mute' when it ends push-to-talk. */
  up(e) {
    const space = e.code === 'Space' || e.key === ' ';
    if (!space || !this.held) return null;
    this.held = false;
    return 'mute';
  }

  /** The window lost focus (the key-up will never come): 'mute' when talking. */
  blur() {
    if (!this.held) return null;
    this.held = false;
    return 'mute';
  }
}
