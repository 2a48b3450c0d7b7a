// File transfer (web/js/files.js) over a fake data channel pair: intact delivery, several files at once,
// backpressure, cancel from either side, size limit, malformed input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  FileChannel, CHUNK_BYTES, HIGH_WATER, LOW_WATER, MAX_FILE_BYTES, checkFile, displayName, encodeChunk, decodeChunk,
  parseControl, formatBytes,
} from '../../web/js/files.js';

/** Two connected fake RTCDataChannels: send() queues, delivery drains the queue asynchronously (a slow link). */
function channelPair({ bytesPerTick = 256 * 1024 } = {}) {
  const make = () => {
    const ch = new EventTarget();
    ch.readyState = 'open';
    ch.bufferedAmount = 0;
    ch.bufferedAmountLowThreshold = 0;
    ch.queue = [];
    ch.sent = [];
    ch.send = (data) => {
      if (ch.readyState !== 'open') throw new Error('InvalidStateError');
      const size = typeof data === 'string' ? data.length : data.byteLength;
      ch.queue.push(data);
      ch.sent.push(data);
      ch.bufferedAmount += size;
      ch.schedule();
    };
    ch.close = () => {
      for (const c of [a, b]) {
        if (c.readyState === 'closed') continue;
        c.readyState = 'closed';
        c.dispatchEvent(new Event('close'));
      }
    };
    return ch;
  };
  const a = make();
  const b = make();
  for (const [from, to] of [[a, b], [b, a]]) {
    let scheduled = false;
    from.schedule = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        let budget = bytesPerTick;
        while (from.queue.length && budget > 0 && to.readyState === 'open') {
          const data = from.queue.shift();
          const size = typeof data === 'string' ? data.length : data.byteLength;
          budget -= size;
          const before = from.bufferedAmount;
          from.bufferedAmount -= size;
          if (before > from.bufferedAmountLowThreshold && from.bufferedAmount <= from.bufferedAmountLowThreshold) {
            from.dispatchEvent(new Event('bufferedamountlow'));
          }
          to.dispatchEvent(new MessageEvent('message', { data }));
        }
        if (to.readyState !== 'open') {
          from.queue = []; // a closed channel delivers nothing more (and keeps no timer alive)
          from.bufferedAmount = 0;
        }
        if (from.queue.length) from.schedule();
      });
    };
  }
  return [a, b];
}

const sha = async (blob) => createHash('sha256').update(Buffer.from(await blob.arrayBuffer())).digest('hex');
const file = (bytes, name = 'data.bin', type = 'application/octet-stream') => Object.assign(new Blob([bytes], { type }), { name });

/** Resolves with the transfer once `pred(transfer)` holds on a 'change' of `fc`. */
function until(fc, pred) {
  return new Promise((resolve) => {
    const on = (e) => {
      if (pred(e.detail)) {
        fc.removeEventListener('change', on);
        resolve(e.detail);
      }
    };
    fc.addEventListener('change', on);
  });
}

test('a file arrives intact, both sides see progress, backpressure keeps the queue bounded', { timeout: 20_000 }, async () => {
  const [ca, cb] = channelPair();
  const ada = new FileChannel(ca);
  const bob = new FileChannel(cb);
  const bytes = randomBytes(3 * 1024 * 1024 + 123);
  const incoming = new Promise((resolve) => bob.addEventListener('incoming', (e) => resolve(e.detail), { once: true }));
  const senderProgress = [];
  ada.addEventListener('change', (e) => senderProgress.push(e.detail.bytes));
  const out = ada.send(file(bytes, '../../etc/report.pdf', 'application/pdf'));
  assert.equal(out.name, 'report.pdf', 'no path in names');
  const t = await incoming;
  assert.deepEqual([t.name, t.size, t.type, t.state], ['report.pdf', bytes.length, 'application/pdf', 'receiving']);
  const received = await until(bob, (x) => x.state === 'done');
  const sent = out.state === 'done' ? out : await until(ada, (x) => x.state === 'done');
  assert.equal(await sha(received.blob), createHash('sha256').update(bytes).digest('hex'));
  assert.equal(received.blob.type, 'application/pdf');
  assert.equal(sent.bytes, bytes.length);
  assert.ok(senderProgress.filter((n) => n > 0 && n < bytes.length).length >= 5, 'the sender saw acknowledged progress');
  assert.ok(ada.maxBuffered <= HIGH_WATER + CHUNK_BYTES + 4, `queue stayed bounded (${ada.maxBuffered})`);
  assert.equal(ca.bufferedAmountLowThreshold, LOW_WATER);
  // Every binary message is at most a chunk plus its 4-byte header.
  assert.ok(ca.sent.every((m) => typeof m === 'string' || m.byteLength <= CHUNK_BYTES + 4));
});

test('several files at once, both ways, interleaved', { timeout: 20_000 }, async () => {
  const [ca, cb] = channelPair();
  const ada = new FileChannel(ca);
  const bob = new FileChannel(cb);
  const files = [randomBytes(700_000), randomBytes(0), randomBytes(1_500_000)];
  const back = randomBytes(400_000);
  const got = [];
  bob.addEventListener('change', (e) => { if (e.detail.state === 'done' && e.detail.direction === 'in') got.push(e.detail); });
  const gotBack = until(ada, (x) => x.direction === 'in' && x.state === 'done');
  files.forEach((b, i) => ada.send(file(b, `f${i}`)));
  bob.send(file(back, 'back'));
  const reply = await gotBack;
  while (got.length < 3) await new Promise((r) => setTimeout(r, 5));
  for (const [i, b] of files.entries()) {
    const t = got.find((x) => x.name === `f${i}`);
    assert.equal(await sha(t.blob), createHash('sha256').update(b).digest('hex'), `f${i}`);
  }
  assert.equal(await sha(reply.blob), createHash('sha256').update(back).digest('hex'));
  // Interleaved: the chunks of f0 and f2 alternate rather than one file after the other.
  const order = ca.sent.filter((m) => typeof m !== 'string').map((m) => decodeChunk(m).id);
  assert.ok(order.indexOf(3) < order.lastIndexOf(1), 'the third file started before the first one ended');
  while (ada.list().some((x) => x.state !== 'done')) await new Promise((r) => setTimeout(r, 5)); // the last 'done' acks
  assert.equal(ada.list().length, 4);
});

test('cancel by the sender or the receiver stops the transfer on both sides', { timeout: 20_000 }, async () => {
  for (const who of ['sender', 'receiver']) {
    const [ca, cb] = channelPair({ bytesPerTick: 64 * 1024 });
    const ada = new FileChannel(ca);
    const bob = new FileChannel(cb);
    const out = ada.send(file(randomBytes(4_000_000)));
    const inc = await until(bob, (x) => x.bytes > 500_000);
    if (who === 'sender') ada.cancel('out', out.id);
    else bob.cancel('in', inc.id);
    const other = who === 'sender' ? until(bob, (x) => x.state === 'cancelled') : until(ada, (x) => x.state === 'cancelled');
    const t = await other;
    assert.equal(t.reason, 'cancelled', who);
    assert.equal(out.state, 'cancelled');
    assert.equal(inc.state, 'cancelled');
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(out.sent < 4_000_000, `${who}: sending stopped (${out.sent} bytes sent)`);
    assert.equal(inc.parts, null, 'received data is dropped');
  }
});

test('size limit: refused when sending, and a receiver refuses an offer over the limit', { timeout: 20_000 }, async () => {
  const big = { name: 'movie.mkv', size: 150_000_000 };
  assert.equal(checkFile(big), 'movie.mkv is 150 MB: files up to 100 MB can be sent.');
  assert.equal(formatBytes(MAX_FILE_BYTES), '100 MB');
  assert.equal(checkFile({ name: 'ok', size: MAX_FILE_BYTES }), null);
  const [ca, cb] = channelPair();
  const ada = new FileChannel(ca);
  assert.throws(() => ada.send(big), /files up to 100 MB can be sent/);
  // A sender that ignores the limit (another client): the receiver refuses, the sender learns why.
  const bob = new FileChannel(cb);
  const refused = new Promise((resolve) => bob.addEventListener('incoming', (e) => resolve(e.detail), { once: true }));
  ca.send(JSON.stringify({ t: 'offer', id: 9, name: 'huge', size: MAX_FILE_BYTES + 1 }));
  const t = await refused;
  assert.deepEqual([t.state, t.reason], ['failed', 'too-large']);
  ca.send(encodeChunk(9, new Uint8Array(10)));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.bytes, 0, 'chunks of a refused file are dropped');
});

test('more data than announced, a short file, a closed channel: failures, not corrupt files', { timeout: 20_000 }, async () => {
  const [ca, cb] = channelPair();
  const bob = new FileChannel(cb);
  ca.send(JSON.stringify({ t: 'offer', id: 1, name: 'a', size: 5 }));
  ca.send(encodeChunk(1, new Uint8Array(6)));
  ca.send(JSON.stringify({ t: 'offer', id: 2, name: 'b', size: 5 }));
  ca.send(encodeChunk(2, new Uint8Array(4)));
  ca.send(JSON.stringify({ t: 'end', id: 2 }));
  ca.send(JSON.stringify({ t: 'offer', id: 3, name: 'c', size: 5 }));
  await new Promise((r) => setTimeout(r, 10));
  const [a, b, c] = bob.list();
  assert.deepEqual([a.state, a.reason], ['cancelled', 'bad-data']);
  assert.deepEqual([b.state, b.reason, b.blob], ['cancelled', 'bad-data', null]);
  assert.equal(c.state, 'receiving');
  ca.close();
  assert.deepEqual([c.state, c.reason], ['failed', 'closed']);
});

test('parseControl and chunk framing reject what they do not know', () => {
  assert.equal(parseControl('not json'), null);
  assert.equal(parseControl(JSON.stringify({ t: 'offer', id: -1, name: 'x', size: 1 })), null);
  assert.equal(parseControl(JSON.stringify({ t: 'offer', id: 1, name: 'x', size: 1.5 })), null);
  assert.equal(parseControl(JSON.stringify({ t: 'offer', id: 1, size: 1 })), null);
  assert.equal(parseControl(JSON.stringify({ t: 'what', id: 1 })), null);
  assert.equal(parseControl(`{"t":"end","id":1,"x":"${'y'.repeat(5000)}"}`), null, 'too long');
  assert.deepEqual(parseControl(JSON.stringify({ t: 'offer', id: 1, name: 'a\u0000b/../c\nd', size: 0 })), { t: 'offer', id: 1, name: 'cd', size: 0, type: '' });
  assert.deepEqual(parseControl(JSON.stringify({ t: 'cancel', id: 4 })), { t: 'cancel', id: 4, dir: 'in', reason: 'cancelled' });
  assert.equal(decodeChunk(new ArrayBuffer(3)), null);
  const c = decodeChunk(encodeChunk(0xdeadbeef, new Uint8Array([1, 2, 3])));
  assert.equal(c.id, 0xdeadbeef);
  assert.deepEqual([...c.bytes], [1, 2, 3]);
  assert.equal(displayName('   '), 'file');
  assert.equal(displayName('C:\\Users\\ada\\notes.txt'), 'notes.txt');
});
