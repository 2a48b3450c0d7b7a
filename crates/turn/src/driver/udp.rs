//! The UDP side: one thread per shard, reading batches from its listening and relay sockets with
//! recvmmsg, running the core on them under one lock, and sending the results with sendmmsg.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use peercall_udp::{RecvBatch, SendBuffers, SendQueue, epoll_events};
use tokio::sync::mpsc;

use super::ports::{DriverPorts, settle};
use super::{
    BATCH, CLIENT_DATAGRAM_MAX, INDICATION_BUF, POLL_TIMEOUT, RELAY_PAYLOAD_MAX, RELAY_TOKEN_BASE,
    REPLY_BUF, Shard, Shared, State, now,
};
use crate::core::{Action, FiveTuple, Now, PeerAction, Transport};

/// A shard thread's reusable buffers: allocated once, reused for every batch.
pub(super) struct Buffers {
    from_clients: RecvBatch,
    from_peers: RecvBatch,
    replies: Vec<u8>,
    indications: Vec<u8>,
    send: SendBuffers,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            from_clients: RecvBatch::new(BATCH, CLIENT_DATAGRAM_MAX, 0),
            // 4 bytes of headroom for the ChannelData header, 3 bytes of room for its TCP padding.
            from_peers: RecvBatch::new(BATCH, RELAY_PAYLOAD_MAX + 3, 4),
            replies: vec![0; BATCH * REPLY_BUF],
            indications: vec![0; BATCH * INDICATION_BUF],
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
            state.core.handle_timeout(t);
            settle(shared, shard, state, Vec::new());
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
    let mut ports = DriverPorts::new(shared);
    let mut queue = b.send.queue();
    let slots = b
        .from_clients
        .received_mut()
        .zip(b.replies.chunks_mut(REPLY_BUF))
        .zip(b.indications.chunks_mut(INDICATION_BUF));
    for ((item, reply), indication) in slots {
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
        let (relay, peer, start, len) =
            match state
                .core
                .handle_client(now, from, &slot[..item.len], reply, &mut ports)
            {
                Action::Drop | Action::Reply(0) => continue,
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
        // The peer may be another allocation of this server (two relay-only clients on one host). A
        // ChannelData header or a DATA attribute header precedes the payload, so there is room to frame it in
        // place for the other allocation's client. Another shard's lock is only tried, so two shards never
        // wait for each other; when it is busy the packet takes the socket.
        if let Some(owner) = shared.owners.owner(peer)
            && start >= 4
        {
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
                let buf = &mut slot[start - 4..];
                shard.metrics.relayed_in_process.inc();
                peer_to_client(
                    shard, target, now, relay, peer, buf, len, indication, &mut queue,
                );
                continue;
            }
        }
        if let Some(r) = state.relays.get(&relay) {
            let slot: &[u8] = slot;
            queue.push(r.socket.as_raw_fd(), &slot[start..start + len], peer);
        }
    }
    // Sent before the lock is released: the relay sockets named in the queue stay open until then.
    queue.flush();
    drop(queue);
    settle(shared, shard, state, ports.started);
}

/// A batch of datagrams from peers on the relay socket of epoll `token`.
pub(super) fn from_peers(shard: &Shard, token: u64, b: &mut Buffers) {
    let mut guard = shard.lock();
    let state = &mut *guard;
    let Some(&relay) = state.by_token.get(&token) else {
        return;
    };
    let Some(socket) = state.relays.get(&relay).map(|r| &r.socket) else {
        return;
    };
    let n = b.from_peers.recv(socket.as_raw_fd()).unwrap_or(0);
    if n == 0 {
        return;
    }
    let now = now();
    let mut queue = b.send.queue();
    let indications = b.indications.chunks_mut(INDICATION_BUF);
    for (item, indication) in b.from_peers.received_mut().zip(indications) {
        let Some(peer) = item.source else { continue };
        if item.truncated || item.len > RELAY_PAYLOAD_MAX {
            shard.metrics.malformed.inc();
            continue;
        }
        peer_to_client(
            shard, state, now, peer, relay, item.slot, item.len, indication, &mut queue,
        );
    }
    queue.flush();
}

/// A datagram from `from` arrived at relayed address `to_relay` (held by `target`), on its socket or handed
/// over in process by another allocation of this server: the allocation's core checks its permissions and
/// frames it for its client, and it is queued towards the client. `buf[4..4 + len]` is the payload.
#[allow(clippy::too_many_arguments)]
pub(super) fn peer_to_client<'d>(
    shard: &Shard,
    target: &mut State,
    now: Now,
    from: SocketAddr,
    to_relay: SocketAddr,
    buf: &'d mut [u8],
    len: usize,
    indication: &'d mut [u8],
    queue: &mut SendQueue<'_, 'd>,
) {
    let action = target
        .core
        .handle_peer(now, to_relay, from, buf, len, indication);
    let (to, bytes): (FiveTuple, &[u8]) = match action {
        PeerAction::Drop => return,
        PeerAction::ChannelData { to, n } => {
            let buf: &[u8] = buf;
            (to, &buf[..n])
        }
        PeerAction::DataIndication { to, n } => {
            let indication: &[u8] = indication;
            (to, &indication[..n])
        }
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
