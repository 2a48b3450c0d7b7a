// File transfer with one peer over its file data channel (pre-negotiated id 1, "peercall-files", ordered):
// offers, chunks, progress acknowledgements, cancel, size limit, backpressure through bufferedAmountLowThreshold.
// Message formats: docs/protocol.md, "Data channels".
//
// No DOM here: the channel is anything with RTCDataChannel's send(), readyState, bufferedAmount,
// bufferedAmountLowThreshold and message/bufferedamountlow/close events, and files are Blobs, so the whole
// exchange runs under node:test (tests/web/files.test.mjs) over a fake channel.
//
// Events (CustomEvent, detail = the transfer): 'incoming' (a peer offers a file), 'change' (progress or state).

/** Bytes of file data per binary message (interoperable SCTP message size). */
export const CHUNK_BYTES = 16 * 1024;
/** Largest file sent or accepted: received files are held in memory until saved. */
export const MAX_FILE_BYTES = 100_000_000;
/** Sending pauses while this much is queued in the channel, and resumes when it drains below LOW_WATER. */
export const HIGH_WATER = 1024 * 1024;
export const LOW_WATER = 256 * 1024;
/** The receiver acknowledges progress every this many bytes (the sender's progress bar follows the receiver). */
export const ACK_EVERY = 256 * 1024;
/** Incoming files at once per peer; more are refused ('busy'). */
export const MAX_INCOMING = 8;
/** Longest control message (JSON text) taken from the channel. */
export const MAX_CONTROL_CHARS = 4096;
const READ_BLOCK = 16 * CHUNK_BYTES; // bytes read from the Blob at a time

/** "12.5 MB" */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return '—';
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB'];
  let v = n;
  let u = -1;
  do {
    v /= 1000;
    u += 1;
  } while (v >= 1000 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** Why a file cannot be sent (a sentence for the user), or null when it can. */
export function checkFile(file) {
  if (!file || typeof file.size !== 'number') return 'Not a file.';
  if (file.size > MAX_FILE_BYTES) {
    return `${displayName(file.name)} is ${formatBytes(file.size)}: files up to ${formatBytes(MAX_FILE_BYTES)} can be sent.`;
  }
  return null;
}

/** A file name safe to show and to save under: no path, no control characters, at most 200 characters. */
export function displayName(name) {
  const base = String(name ?? '').split(/[/\\]/).pop() ?? '';
  // eslint-disable-next-line no-control-regex
  const clean = base.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 200);
  return clean || 'file';
}

/** One chunk as a binary message: 4 bytes of transfer id (big-endian), then the data. */
export function encodeChunk(id, bytes) {
  const out = new Uint8Array(4 + bytes.byteLength);
  new DataView(out.buffer).setUint32(0, id);
  out.set(bytes, 4);
  return out.buffer;
}

/** {id, bytes} from a binary message, or null when it is too short. */
export function decodeChunk(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < 4) return null;
  return { id: new DataView(buffer).getUint32(0), bytes: new Uint8Array(buffer, 4) };
}

const isId = (v) => Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;
const isSize = (v) => Number.isInteger(v) && v >= 0;

/** A control message from the channel, checked field by field; null when it is not one we know. */
export function parseControl(text) {
  if (typeof text !== 'string' || text.length > MAX_CONTROL_CHARS) return null;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object' || !isId(m.id)) return null;
  switch (m.t) {
    case 'offer':
      if (!isSize(m.size) || typeof m.name !== 'string') return null;
      return { t: 'offer', id: m.id, name: displayName(m.name), size: m.size, type: typeof m.type === 'string' ? m.type.slice(0, 100) : '' };
    case 'end':
    case 'done':
      return { t: m.t, id: m.id };
    case 'ack':
      return isSize(m.bytes) ? { t: 'ack', id: m.id, bytes: m.bytes } : null;
    case 'cancel':
      return {
        t: 'cancel', id: m.id, dir: m.dir === 'out' ? 'out' : 'in',
        reason: typeof m.reason === 'string' ? m.reason.slice(0, 40) : 'cancelled',
      };
    default:
      return null;
  }
}

/** What a cancel reason means, for the user. */
export function reasonText(reason, { mine }) {
  switch (reason) {
    case 'too-large': return `Refused: larger than ${formatBytes(MAX_FILE_BYTES)}`;
    case 'busy': return 'Refused: too many files at once, try again';
    case 'closed': return 'Connection closed';
    case 'bad-data': return 'Failed: the data did not match the announced size';
    case 'cancelled': return mine ? 'Cancelled' : 'Cancelled by the other side';
    default: return mine ? 'Cancelled' : 'Cancelled by the other side';
  }
}

/** Transfers with one peer over one channel. */
export class FileChannel extends EventTarget {
  constructor(channel) {
    super();
    this.channel = channel;
    this.nextId = 1;
    this.outgoing = new Map(); // id → transfer
    this.incoming = new Map();
    this.pumping = false;
    this.turn = 0;
    this.waiters = [];
    this.maxBuffered = 0; // the most ever queued in the channel (the tests check the backpressure)
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = LOW_WATER;
    this.onMessage = (e) => this.#receive(e.data);
    this.onLow = () => this.#wake();
    this.onClose = () => this.close();
    channel.addEventListener('message', this.onMessage);
    channel.addEventListener('bufferedamountlow', this.onLow);
    channel.addEventListener('close', this.onClose);
  }

  get open() {
    return this.channel.readyState === 'open';
  }

  /** All transfers, oldest first. */
  list() {
    return [...this.outgoing.values(), ...this.incoming.values()].sort((a, b) => a.started - b.started);
  }

  /**
   * Sends a file (a Blob with a name). Returns the transfer, or throws an Error whose message is for the user
   * (too large, channel not open).
   */
  send(file) {
    const why = checkFile(file);
    if (why) throw new Error(why);
    if (!this.open) throw new Error('The connection is not ready yet.');
    const id = this.nextId++;
    const transfer = {
      id, direction: 'out', name: displayName(file.name), size: file.size, type: String(file.type ?? ''),
      state: 'sending', sent: 0, bytes: 0, reason: null, started: Date.now(), file, block: null,
    };
    this.outgoing.set(id, transfer);
    this.#control({ t: 'offer', id, name: transfer.name, size: transfer.size, type: transfer.type });
    this.#emit('change', transfer);
    this.#pump();
    return transfer;
  }

  /** Cancels a transfer either way; the other side is told. */
  cancel(direction, id, reason = 'cancelled') {
    const transfer = (direction === 'out' ? this.outgoing : this.incoming).get(id);
    if (!transfer || !active(transfer)) return;
    transfer.cancelledHere = true;
    this.#finish(transfer, 'cancelled', reason);
    this.#control({ t: 'cancel', id, dir: direction === 'out' ? 'out' : 'in', reason });
  }

  /** The connection went away: everything in flight fails. */
  close() {
    for (const t of this.list()) if (active(t)) this.#finish(t, 'failed', 'closed');
    this.channel.removeEventListener('message', this.onMessage);
    this.channel.removeEventListener('bufferedamountlow', this.onLow);
    this.channel.removeEventListener('close', this.onClose);
    this.#wake();
  }

  #emit(type, transfer) {
    this.dispatchEvent(new CustomEvent(type, { detail: transfer }));
  }

  #control(message) {
    if (!this.open) return false;
    try {
      this.channel.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  #finish(transfer, state, reason = null) {
    transfer.state = state;
    transfer.reason = reason;
    transfer.file = null;
    transfer.block = null;
    if (state !== 'done') transfer.parts = null;
    this.#emit('change', transfer);
  }

  #wake() {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** Resolves when the channel's queue drained below LOW_WATER (or the channel closed). */
  #drained() {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      if (this.channel.bufferedAmount <= LOW_WATER || !this.open) this.#wake();
    });
  }

  /** The one sending loop: chunks of all sending transfers, in turn, while the channel's queue has room. */
  async #pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const sending = [...this.outgoing.values()].filter((t) => t.state === 'sending' && t.sent < t.size);
        if (sending.length === 0) break;
        if (!this.open) {
          for (const t of sending) this.#finish(t, 'failed', 'closed');
          break;
        }
        if (this.channel.bufferedAmount > HIGH_WATER) {
          await this.#drained();
          continue;
        }
        const t = sending[this.turn++ % sending.length];
        const bytes = await this.#read(t);
        if (t.state !== 'sending' || !bytes) continue;
        try {
          this.channel.send(encodeChunk(t.id, bytes));
        } catch {
          this.#finish(t, 'failed', 'closed');
          continue;
        }
        this.maxBuffered = Math.max(this.maxBuffered, this.channel.bufferedAmount);
        t.sent += bytes.byteLength;
        if (t.sent >= t.size) this.#control({ t: 'end', id: t.id });
      }
      // Zero-byte files have no chunks: only the end.
      for (const t of this.outgoing.values()) {
        if (t.state === 'sending' && t.size === 0 && !t.ended) {
          t.ended = true;
          this.#control({ t: 'end', id: t.id });
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** The next chunk of an outgoing file, read from the Blob a block at a time. */
  async #read(t) {
    if (!t.block || t.sent >= t.block.start + t.block.bytes.byteLength) {
      const start = t.sent;
      const end = Math.min(t.size, start + READ_BLOCK);
      const file = t.file;
      if (!file) return null;
      t.block = { start, bytes: new Uint8Array(await file.slice(start, end).arrayBuffer()) };
    }
    const offset = t.sent - t.block.start;
    return t.block.bytes.subarray(offset, Math.min(offset + CHUNK_BYTES, t.block.bytes.byteLength));
  }

  #receive(data) {
    if (typeof data === 'string') {
      const m = parseControl(data);
      if (m) this.#onControl(m);
      return;
    }
    const chunk = decodeChunk(data);
    if (!chunk) return;
    const t = this.incoming.get(chunk.id);
    if (!t || t.state !== 'receiving') return; // cancelled meanwhile: chunks in flight are dropped
    if (t.bytes + chunk.bytes.byteLength > t.size) {
      this.cancel('in', t.id, 'bad-data');
      return;
    }
    t.parts.push(chunk.bytes.slice());
    t.bytes += chunk.bytes.byteLength;
    if (t.bytes - t.acked >= ACK_EVERY || t.bytes === t.size) {
      t.acked = t.bytes;
      this.#control({ t: 'ack', id: t.id, bytes: t.bytes });
    }
    this.#emit('change', t);
  }

  #onControl(m) {
    if (m.t === 'offer') {
      if (this.incoming.has(m.id)) return;
      const t = {
        id: m.id, direction: 'in', name: m.name, size: m.size, type: m.type, state: 'receiving', bytes: 0,
        acked: 0, reason: null, started: Date.now(), parts: [], blob: null,
      };
      this.incoming.set(m.id, t);
      const busy = [...this.incoming.values()].filter((x) => x.state === 'receiving').length > MAX_INCOMING;
      const refusal = m.size > MAX_FILE_BYTES ? 'too-large' : busy ? 'busy' : null;
      if (refusal) {
        this.#finish(t, 'failed', refusal);
        this.#control({ t: 'cancel', id: m.id, dir: 'in', reason: refusal });
      }
      this.#emit('incoming', t);
      return;
    }
    if (m.t === 'end') {
      const t = this.incoming.get(m.id);
      if (!t || t.state !== 'receiving') return;
      if (t.bytes !== t.size) {
        this.cancel('in', t.id, 'bad-data');
        return;
      }
      t.blob = new Blob(t.parts, { type: t.type || 'application/octet-stream' });
      t.parts = null;
      this.#control({ t: 'done', id: t.id });
      this.#finish(t, 'done');
      return;
    }
    if (m.t === 'ack' || m.t === 'done') {
      const t = this.outgoing.get(m.id);
      if (!t || t.state !== 'sending') return;
      t.bytes = Math.min(t.size, m.t === 'done' ? t.size : m.bytes);
      if (m.t === 'done') this.#finish(t, 'done');
      else this.#emit('change', t);
      return;
    }
    if (m.t === 'cancel') {
      // The sender cancels its outgoing file (our incoming one), the receiver its incoming one (our outgoing).
      const t = (m.dir === 'out' ? this.incoming : this.outgoing).get(m.id);
      if (t && active(t)) this.#finish(t, t.direction === 'out' && m.reason !== 'cancelled' ? 'failed' : 'cancelled', m.reason);
    }
  }
}

function active(t) {
  return t.state === 'sending' || t.state === 'receiving';
}
