// A small STUN/TURN client for tests: enough of RFC 8489 / RFC 8656 to act as an attacker or a second client
// (requests with long-term credentials, MESSAGE-INTEGRITY, XOR addresses), over UDP or TCP, bound to any
// loopback source address. Not a product: peercall's own client is in Rust.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';

const MAGIC = 0x2112a442;
export const METHOD = { BINDING: 0x001, ALLOCATE: 0x003, REFRESH: 0x004, CREATE_PERMISSION: 0x008, CHANNEL_BIND: 0x009 };
export const ATTR = {
  USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, CHANNEL_NUMBER: 0x000c, LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012, REALM: 0x0014, NONCE: 0x0015, XOR_RELAYED_ADDRESS: 0x0016, EVEN_PORT: 0x0018,
  REQUESTED_TRANSPORT: 0x0019, RESERVATION_TOKEN: 0x0022,
};

/** An attribute value for an IPv4 XOR-PEER-ADDRESS. */
export function xorAddress(ip, port) {
  const v = Buffer.alloc(8);
  v[1] = 0x01;
  v.writeUInt16BE(port ^ (MAGIC >>> 16), 2);
  const n = ip.split('.').reduce((acc, octet) => (acc * 256) + Number(octet), 0);
  v.writeUInt32BE((n ^ MAGIC) >>> 0, 4);
  return v;
}

function readXorAddress(v) {
  const port = v.readUInt16BE(2) ^ (MAGIC >>> 16);
  const n = (v.readUInt32BE(4) ^ MAGIC) >>> 0;
  return { ip: [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'), port };
}

/** Encodes a request: `attrs` is a list of [type, Buffer]; `key` adds MESSAGE-INTEGRITY. */
export function encode(method, attrs, { key = null, tid = randomBytes(12) } = {}) {
  const parts = [];
  for (const [type, value] of attrs) {
    const head = Buffer.alloc(4);
    head.writeUInt16BE(type, 0);
    head.writeUInt16BE(value.length, 2);
    parts.push(head, value, Buffer.alloc((4 - (value.length % 4)) % 4));
  }
  let body = Buffer.concat(parts);
  const header = (length) => {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(method, 0); // class request
    h.writeUInt16BE(length, 2);
    h.writeUInt32BE(MAGIC, 4);
    tid.copy(h, 8);
    return h;
  };
  if (key) {
    const mac = createHmac('sha1', key).update(Buffer.concat([header(body.length + 24), body])).digest();
    const head = Buffer.from([0x00, 0x08, 0x00, 0x14]);
    body = Buffer.concat([body, head, mac]);
  }
  return { bytes: Buffer.concat([header(body.length), body]), tid };
}

/** Decodes a response: class, error code, and the attributes tests look at. */
export function decode(bytes) {
  const type = bytes.readUInt16BE(0);
  const length = bytes.readUInt16BE(2);
  const cls = ((type >> 7) & 2) | ((type >> 4) & 1); // 0 request, 1 indication, 2 success, 3 error
  const out = { cls: ['request', 'indication', 'success', 'error'][cls], tid: bytes.subarray(8, 20), code: null, attrs: {} };
  let at = 20;
  while (at + 4 <= 20 + length && at + 4 <= bytes.length) {
    const t = bytes.readUInt16BE(at);
    const l = bytes.readUInt16BE(at + 2);
    const v = bytes.subarray(at + 4, at + 4 + l);
    out.attrs[t] ??= v;
    if (t === ATTR.ERROR_CODE) out.code = (v[2] & 7) * 100 + v[3];
    at += 4 + l + ((4 - (l % 4)) % 4);
  }
  if (out.attrs[ATTR.NONCE]) out.nonce = out.attrs[ATTR.NONCE].toString();
  if (out.attrs[ATTR.REALM]) out.realm = out.attrs[ATTR.REALM].toString();
  if (out.attrs[ATTR.XOR_RELAYED_ADDRESS]) out.relayed = readXorAddress(out.attrs[ATTR.XOR_RELAYED_ADDRESS]);
  if (out.attrs[ATTR.RESERVATION_TOKEN]) out.token = out.attrs[ATTR.RESERVATION_TOKEN];
  return out;
}

/** A TURN client on one UDP socket (one 5-tuple) from `localAddress`. */
export class UdpTurnClient {
  static async open(server, { localAddress = '127.0.0.1' } = {}) {
    const socket = dgram.createSocket('udp4');
    await new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, localAddress, resolve);
    });
    return new UdpTurnClient(socket, server);
  }

  constructor(socket, server) {
    this.socket = socket;
    this.server = server; // {host, port}
    this.pending = new Map();
    socket.on('message', (msg) => {
      if (msg.length < 20) return;
      const tid = msg.subarray(8, 20).toString('hex');
      const waiter = this.pending.get(tid);
      if (waiter) {
        this.pending.delete(tid);
        waiter(decode(msg));
      }
    });
  }

  /** Sends `bytes` and waits up to `timeout` ms for the answer with its transaction id; null if none came. */
  send({ bytes, tid }, timeout = 1000) {
    return new Promise((resolve) => {
      const key = tid.toString('hex');
      const timer = setTimeout(() => {
        this.pending.delete(key);
        resolve(null);
      }, timeout);
      this.pending.set(key, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.socket.send(bytes, this.server.port, this.server.host);
    });
  }

  /** An authenticated request with long-term credentials; the nonce is fetched once and again when stale (438). */
  async authed(method, attrs, { username, password }) {
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!this.nonce) {
        const probe = await this.send(encode(METHOD.ALLOCATE, [[ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])]]));
        if (!probe?.nonce) return probe;
        this.nonce = { nonce: probe.nonce, realm: probe.realm };
      }
      const { nonce, realm } = this.nonce;
      const key = createHash('md5').update(`${username}:${realm}:${password}`).digest();
      const answer = await this.send(encode(method, [...attrs,
        [ATTR.USERNAME, Buffer.from(username)], [ATTR.REALM, Buffer.from(realm)], [ATTR.NONCE, Buffer.from(nonce)]],
      { key }));
      if (answer?.code !== 438) return answer;
      this.nonce = null;
    }
    return null;
  }

  close() {
    this.socket.close();
  }
}

export const UDP_TRANSPORT = [ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])];

/** Opens a TCP connection from `localAddress`; resolves when connected (or null on error). */
export function tcpConnect(port, { host = '127.0.0.1', localAddress = '127.0.0.1' } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    socket.once('connect', () => resolve(socket));
    socket.once('error', () => resolve(null));
  });
}
