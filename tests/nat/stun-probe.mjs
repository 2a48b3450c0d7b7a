// STUN Binding (RFC 8489) from ONE UDP socket to several servers, run inside a client namespace:
//   ip netns exec NS node stun-probe.mjs 203.0.113.10:3478 203.0.113.11:3478
// Prints {"local": port, "mapped": ["IP:PORT" | null, ...]} on stdout. The same mapped address for every server
// means an endpoint-independent mapping ("cone"); a different one per server means symmetric.

import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';

const MAGIC = 0x2112a442;
const servers = process.argv.slice(2).map((s) => {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
});

function request() {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(0x0001, 0); // Binding request
  b.writeUInt16BE(0, 2);
  b.writeUInt32BE(MAGIC, 4);
  randomBytes(12).copy(b, 8);
  return b;
}

function mapped(msg) {
  if (msg.length < 20 || msg.readUInt16BE(0) !== 0x0101) return null;
  const length = msg.readUInt16BE(2);
  let at = 20;
  while (at + 4 <= 20 + length && at + 4 <= msg.length) {
    const type = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    const v = msg.subarray(at + 4, at + 4 + len);
    if ((type === 0x0020 || type === 0x0001) && v[1] === 0x01) {
      const xor = type === 0x0020;
      const port = v.readUInt16BE(2) ^ (xor ? MAGIC >>> 16 : 0);
      const ip = (v.readUInt32BE(4) ^ (xor ? MAGIC : 0)) >>> 0;
      return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}:${port}`;
    }
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  return null;
}

const socket = dgram.createSocket('udp4');
socket.bind(0, async () => {
  const out = { local: socket.address().port, mapped: [] };
  for (const server of servers) {
    const req = request();
    const got = await new Promise((resolve) => {
      let tries = 0;
      const onMessage = (msg) => {
        if (msg.length >= 20 && msg.subarray(8, 20).equals(req.subarray(8, 20))) finish(mapped(msg));
      };
      const send = () => {
        if (tries++ >= 4) return finish(null);
        socket.send(req, server.port, server.host);
        timer = setTimeout(send, 250);
      };
      let timer;
      const finish = (value) => {
        clearTimeout(timer);
        socket.off('message', onMessage);
        resolve(value);
      };
      socket.on('message', onMessage);
      send();
    });
    out.mapped.push(got);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  socket.close();
});
