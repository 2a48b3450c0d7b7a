// The PeerJS server (npm `peer`), as bench/signal.sh runs it: loopback only, connection limit raised so it
// can be asked to hold as many clients as peercall.
// Usage: node server.mjs PORT
import { PeerServer } from "peer";

const port = Number(process.argv[2] || 9000);
PeerServer(
  { host: "127.0.0.1", port, path: "/", key: "peerjs", concurrent_limit: 20000, alive_timeout: 90000 },
  () => console.log(`peerjs listening on 127.0.0.1:${port}`),
);
