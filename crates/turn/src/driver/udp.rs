//! The UDP side: one thread per shard, reading batches from its listening and relay sockets with
//! recvmmsg, running the core on them under one lock, and sending the results with sendmmsg.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use peercall_udp::{RecvBatch, SendBuffers, SendQueue, epoll_events};
use tokio::sync::mpsc;

use super::ports::client_packet;
use super::{
    BATCH, CLIENT_DATAGRAM_MAX, POLL_TIMEOUT, RELAY_PAYLOAD_MAX, RELAY_TOKEN_BASE, REPLY_BUF,
    Shard, Shared, State, now,
};
use crate::core::{Action, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM, PeerAction, Transport};

/// A shard thread's reusable buffers: allocated once, reused for every batch.
pub(super) struct Buffers {
    from_clients: RecvBatch,
    from_peers: RecvBatch,
    replies: Vec<u8>,
    send: SendBuffers,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            from_clients: RecvBatch::new(BATCH, CLIENT_DATAGRAM_MAX, 0),
            // Room in front for the longest header the core writes (a Data indication's), behind for padding:
            // the core frames each datagram where it landed.
            from_peers: RecvBatch::new(BATCH, RELAY_PAYLOAD_MAX + PEER_TAILROOM, PEER_HEADROOM),
            replies: vec![0; BATCH * REPLY_BUF],
            send: SendBuffers::new(BATCH),
        }
    }
}

pub(super) fn shard_loop(shared: &Shared, index: usize) {
    let shard = &shared.shards[index];
    let mut buffers = Buffers::new();
    let mut events = epoll_events(256);
    while !shared.stopping.load(Ordering::Acquire) {
        // Sleep until the core's next expiry; at most POLL_TIMEOUT, to notice shutdown and expiries that
        // TCP/TLS tasks scheduled on this core meanwhile.
        let next_expiry = shard.lock().core.poll_timeout();
        let timeout = next_expiry
            .map_or(POLL_TIMEOUT, |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(POLL_TIMEOUT);
        for token in shard.epoll.wait(&mut events, timeout) {
            if token < RELAY_TOKEN_BASE {
                from_clients(shared, shard, token as usize, &mut buffers);
            } else {
                from_peers(shard, token, &mut buffers);
            }
        }
        let t = Instant::now();
        if next_expiry.is_some_and(|at| t >= at) {
            let mut guard = shard.lock();
            let state = &mut *guard;
            state.core.handle_timeout(t, &shared.ledger);
            shard.settle(shared, state, Vec::new());
        }
    }
}

/// A batch of datagrams from clients on listening socket `i`.
pub(super) fn from_clients(shared: &Shared, shard: &Shard, i: usize, b: &mut Buffers) {
    let Some((server, socket)) = shard.listeners.get(i) else {
        return;
    };
    let fd = socket.as_raw_fd();
    // Errors here are ICMP reports for earlier sends; they are not fatal.
    let n = b.from_clients.recv(fd).unwrap_or(0);
    if n == 0 {
        return;
    }
    let now = now();
    let mut guard = shard.lock();
    let state = &mut *guard;
    // Relay sockets bound for Allocates of this batch (none allocated unless there is one).
    let mut started = Vec::new();
    let mut queue = b.send.queue();
    let slots = b
        .from_clients
        .received_mut()
        .zip(b.replies.chunks_mut(REPLY_BUF));
    for (item, reply) in slots {
        let Some(client) = item.source else { continue };
        if item.truncated {
            shard.metrics.malformed.inc();
            continue;
        }
        let from = FiveTuple {
            client,
            server: *server,
            transport: Transport::Udp,
        };
        let slot = item.slot;
        let action = client_packet(
            &shared.relay,
            &mut state.core,
            &shared.ledger,
            now,
            from,
            &slot[..item.len],
            reply,
            &mut started,
        );
        let (relay, peer, start, len) = match action {
            // Bind is resolved inside client_packet.
            Action::Drop | Action::Reply(0) | Action::Bind(_) => continue,
            Action::Reply(len) => {
                let reply: &[u8] = reply;
                queue.push(fd, &reply[..len], client);
                continue;
            }
            Action::ToPeer {
                relay,
                peer,
                payload,
            } => (relay, peer, payload.start, payload.len()),
        };
        // The peer may be another allocation of this server (two relay-only clients on one host): the
        // payload is framed for the other allocation's client inside the client's datagram (the core makes
        // room if the headers in front of it are shorter than the ones it writes). Another shard's lock is
        // only tried, so two shards never wait for each other; when it is busy the packet takes the socket.
        if let Some(owner) = shared.relay.owners.owner(peer) {
            let mut other = None;
            if owner != shard.index {
                other = shared
                    .shards
                    .get(owner)
                    .and_then(|o| o.state.try_lock().ok());
            }
            let target: Option<&mut State> = match other.as_mut() {
                Some(guard) => Some(&mut **guard),
                None if owner == shard.index => Some(&mut *state),
                None => None,
            };
            if let Some(target) = target {
                shard.metrics.relayed_in_process.inc();
                peer_to_client(
                    shard,
                    target,
                    now,
                    relay,
                    peer,
                    slot,
                    start..start + len,
                    &mut queue,
                );
                continue;
            }
        }
        if let Some(socket) = state.relays.get(relay) {
            let slot: &[u8] = slot;
            queue.push(socket.as_raw_fd(), &slot[start..start + len], peer);
        }
    }
    // Sent before the lock is released: the relay sockets named in the queue stay open until then.
    queue.flush();
    drop(queue);
    shard.settle(shared, state, started);
}

/// A batch of datagrams from peers on the relay socket of epoll `token`.
pub(super) fn from_peers(shard: &Shard, token: u64, b: &mut Buffers) {
    let mut guard = shard.lock();
    let state = &mut *guard;
    let Some(relay) = state.relays.by_token(token) else {
        return;
    };
    let Some(socket) = state.relays.get(relay) else {
        return;
    };
    let n = b.from_peers.recv(socket.as_raw_fd()).unwrap_or(0);
    if n == 0 {
        return;
    }
    let now = now();
    let mut queue = b.send.queue();
    for item in b.from_peers.received_mut() {
        let Some(peer) = item.source else { continue };
        if item.truncated || item.len > RELAY_PAYLOAD_MAX {
            shard.metrics.malformed.inc();
            continue;
        }
        let payload = PEER_HEADROOM..PEER_HEADROOM + item.len;
        peer_to_client(
            shard, state, now, peer, relay, item.slot, payload, &mut queue,
        );
    }
    queue.flush();
}

/// A datagram from `from` arrived at relayed address `to_relay` (held by `target`), on its socket or handed
/// over in process by another allocation of this server: the allocation's core checks its permissions and
/// frames it for its client in place, and it is queued towards the client. `buf[payload]` is the payload.
#[allow(clippy::too_many_arguments)]
pub(super) fn peer_to_client<'d>(
    shard: &Shard,
    target: &mut State,
    now: Now,
    from: SocketAddr,
    to_relay: SocketAddr,
    buf: &'d mut [u8],
    payload: Range<usize>,
    queue: &mut SendQueue<'_, 'd>,
) {
    let (to, frame) = match target.core.handle_peer(now, to_relay, from, buf, payload) {
        PeerAction::Drop => return,
        PeerAction::ChannelData { to, frame } | PeerAction::DataIndication { to, frame } => {
            (to, frame)
        }
    };
    let buf: &[u8] = buf;
    let Some(bytes) = buf.get(frame) else {
        return;
    };
    // Any shard's socket on the client's server address sends as that address.
    deliver(shard, &target.streams, queue, to, bytes);
}

/// Queues a relayed packet towards a client: on this shard's listening socket for UDP, on the client's
/// bounded stream queue for TCP/TLS (a full queue drops it, as UDP would: a slow client cannot grow memory).
pub(super) fn deliver<'d>(
    shard: &Shard,
    streams: &HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    queue: &mut SendQueue<'_, 'd>,
    to: FiveTuple,
    bytes: &'d [u8],
) {
    match to.transport {
        Transport::Udp => {
            if let Some(listener) = shard.listener(to.server) {
                queue.push(listener.as_raw_fd(), bytes, to.client);
            }
        }
        Transport::Tcp | Transport::Tls => {
            if let Some(tx) = streams.get(&to) {
                let _ = tx.try_send(bytes.to_vec());
            }
        }
    }
}
