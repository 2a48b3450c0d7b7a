//! The TCP/TLS side: accepting connections under per-source and total caps, deadlines for the first message
//! and for idleness, and RFC 8656 §12.5 framing into the shard cores.
//!
//! An unauthenticated party can open connections for free, so everything a connection holds before it has
//! proved anything is bounded: a count per source address and in total, a deadline for the first complete
//! STUN message, and a read buffer that grows only with what the client sent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercall_stun::stream_frame_len;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ports::client_packet;
use super::{REPLY_BUF, STREAM_QUEUE, Shard, Shared, now};
use crate::core::{Action, FiveTuple, Transport, client_key};
use crate::metrics::{StreamClose, TurnMetrics};

/// Limits on TCP and TLS client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// From accept (TLS handshake included) to the first complete STUN message or ChannelData frame.
    pub first_message_timeout: Duration,
    /// A connection that holds no allocation and sends nothing for this long is closed. Connections with an
    /// allocation live as long as it does (the client's Refresh keeps both).
    pub idle_timeout: Duration,
    /// Open connections per client address (IPv6 by /64).
    pub per_address: u32,
    /// Open connections in total (TCP and TLS together).
    pub total: u32,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            per_address: 64,
            total: 4096,
        }
    }
}

/// Why a connection was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRefusal {
    PerAddress,
    Total,
}

/// Counts open connections per source and in total; a [`StreamPermit`] gives its place back when dropped.
#[derive(Debug, Default)]
pub(crate) struct StreamGate {
    per_address: Mutex<HashMap<IpAddr, u32>>,
    total: AtomicUsize,
    metrics: Arc<TurnMetrics>,
}

impl StreamGate {
    pub(crate) fn new(metrics: Arc<TurnMetrics>) -> StreamGate {
        StreamGate {
            metrics,
            ..StreamGate::default()
        }
    }

    pub(crate) fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        limits: &StreamLimits,
    ) -> Result<StreamPermit, StreamRefusal> {
        let key = client_key(client);
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = per.get(&key).copied().unwrap_or(0);
        if count >= limits.per_address {
            return Err(StreamRefusal::PerAddress);
        }
        if self.total.load(Ordering::Relaxed) >= limits.total as usize {
            return Err(StreamRefusal::Total);
        }
        per.insert(key, count + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.metrics.stream_connections.inc();
        Ok(StreamPermit {
            gate: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One admitted connection.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    gate: Arc<StreamGate>,
    key: IpAddr,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut per = self
            .gate
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.key);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::Relaxed);
        self.gate.metrics.stream_connections.sub(1);
    }
}

/// Back-off after a failed accept (out of descriptors, mostly): retrying at once spins a core while the
/// condition lasts. Doubles from 5 ms to 1 s; reset by the next success.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// The pause before the next accept, after a failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let next = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(next);
        next
    }

    pub(crate) fn succeeded(&mut self) {
        self.current = None;
    }
}

/// Reassembles frames from a byte stream; the buffer grows only as far as the frame being received needs.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
}

/// A framing failure: the stream is not STUN/ChannelData, or announces a frame larger than allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAFrame;

impl Framer {
    /// Largest frame: a STUN message or ChannelData of the largest length field, padded.
    pub(crate) const MAX_FRAME: usize = 65_536 + 8;

    /// Where the next read should append (the buffer, grown to hold at least the announced frame).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        let want = match stream_frame_len(&self.buf) {
            Ok(Some(len)) => len.min(Self::MAX_FRAME),
            _ => self.buf.len() + 64,
        };
        if self.buf.capacity() < want {
            self.buf.reserve_exact(want - self.buf.len());
        }
        &mut self.buf
    }

    /// The length of the complete frame at the front, if one is there.
    pub(crate) fn next_frame(&self) -> Result<Option<usize>, NotAFrame> {
        match stream_frame_len(&self.buf) {
            Ok(Some(len)) if len > Self::MAX_FRAME => Err(NotAFrame),
            Ok(Some(len)) if self.buf.len() >= len => Ok(Some(len)),
            Ok(_) => Ok(None),
            Err(_) => Err(NotAFrame),
        }
    }

    pub(crate) fn frame(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    /// Drops the frame of `len` bytes at the front; an empty buffer gives its memory back, so a quiet
    /// connection holds none.
    pub(crate) fn consume(&mut self, len: usize) {
        self.buf.drain(..len.min(self.buf.len()));
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = Vec::new();
        }
    }
}

pub(super) async fn stream_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: Transport,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(e) => {
                let pause = backoff.failed();
                shared.metrics.accept_failed.inc();
                if pause == AcceptBackoff::FIRST || pause == AcceptBackoff::MAX {
                    tracing::warn!(
                        "cannot accept a TURN {transport:?} connection ({e}); retrying in {} ms. Out of file descriptors? Raise the limit (ulimit -n) or lower --tcp-connections",
                        pause.as_millis()
                    );
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let permit = match shared.streams.admit(client.ip(), &shared.stream_limits) {
            Ok(permit) => permit,
            Err(refusal) => {
                shared.metrics.stream_refused(refusal);
                tracing::debug!(%client, ?refusal, "TURN connection refused: connection limit");
                continue; // dropping the stream closes it
            }
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let five = FiveTuple {
            client,
            server,
            transport,
        };
        let deadline = Instant::now() + shared.stream_limits.first_message_timeout;
        if transport == Transport::Tls {
            let Some((_, config)) = &shared.tls else {
                continue;
            };
            let config = config.read().unwrap_or_else(|p| p.into_inner()).clone();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => stream_connection(shared, five, tls, deadline, permit).await,
                    Ok(Err(_)) => shared.metrics.stream_closed(StreamClose::TlsFailed),
                    Err(_) => shared
                        .metrics
                        .stream_closed(StreamClose::FirstMessageTimeout),
                }
            });
        } else {
            tokio::spawn(stream_connection(shared, five, stream, deadline, permit));
        }
    }
}

/// Serves a TLS connection another listener accepted and found to speak STUN (peercall's HTTPS port, shared by
/// web and TURN): admitted under the same caps as a connection on the TURNS port, with the same deadlines and
/// metrics. `accepted` is when its TCP connection was accepted; its first-message deadline counts from there,
/// as on the TURNS port. `false` when a cap or shutdown refused it (the stream is dropped, which closes it).
pub(super) fn adopt_tls_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    shared: &Arc<Shared>,
    stream: S,
    five: FiveTuple,
    accepted: Instant,
) -> bool {
    if shared.shutdown.is_cancelled() {
        return false;
    }
    let permit = match shared
        .streams
        .admit(five.client.ip(), &shared.stream_limits)
    {
        Ok(permit) => permit,
        Err(refusal) => {
            shared.metrics.stream_refused(refusal);
            tracing::debug!(client = %five.client, ?refusal, "TURN connection on the HTTPS port refused: connection limit");
            return false;
        }
    };
    let deadline = accepted + shared.stream_limits.first_message_timeout;
    tokio::spawn(stream_connection(
        shared.clone(),
        five,
        stream,
        deadline,
        permit,
    ));
    true
}

/// Runs a shard's core on one frame from a TCP/TLS client; returns a reply to send back, if any. Packets
/// for a peer leave at once from the relay socket, without blocking (a full buffer drops them).
fn stream_packet(shared: &Shared, shard: &Shard, from: FiveTuple, frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; REPLY_BUF];
    let mut guard = shard.lock();
    let state = &mut *guard;
    let mut started = Vec::new();
    let action = client_packet(
        &shared.relay,
        &mut state.core,
        &shared.ledger,
        now(),
        from,
        frame,
        &mut out,
        &mut started,
    );
    let reply = match action {
        // Bind is resolved inside client_packet.
        Action::Drop | Action::Bind(_) => None,
        Action::Reply(n) => out.get(..n).map(<[u8]>::to_vec),
        Action::ToPeer {
            relay,
            peer,
            payload,
        } => {
            if let (Some(socket), Some(data)) = (state.relays.get(relay), frame.get(payload)) {
                let _ = socket.send_to(data, peer);
            }
            None
        }
    };
    shard.settle(shared, state, started);
    reply
}

/// One TCP/TLS client: frames in (RFC 8656 §12.5 framing), replies and relayed packets out, until the client
/// closes, sends garbage, misses its first-message deadline or idles without an allocation.
async fn stream_connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    shared: Arc<Shared>,
    five: FiveTuple,
    stream: S,
    first_message_deadline: Instant,
    permit: StreamPermit,
) {
    let shard = &shared.shards[shared.shard_for(&five)];
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    shard.lock().streams.insert(five, tx.clone());
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let limits = shared.stream_limits;
    let mut framer = Framer::default();
    let mut deadline = first_message_deadline;
    let mut got_message = false;
    let why = 'read: loop {
        let read = tokio::time::timeout_at(deadline, reader.read_buf(framer.buffer())).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break StreamClose::Closed,
            Ok(Ok(_)) => {}
            Err(_) if !got_message => break StreamClose::FirstMessageTimeout,
            Err(_) => {
                if shard.lock().core.relay_of(&five).is_none() {
                    break StreamClose::Idle;
                }
                // An allocation keeps the connection; look again after another idle period.
                deadline = Instant::now() + limits.idle_timeout;
                continue;
            }
        }
        loop {
            let len = match framer.next_frame() {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(NotAFrame) => break 'read StreamClose::Garbage,
            };
            // Any well-formed frame counts as the first message: one that makes no sense yet (ChannelData
            // before an allocation) is dropped by the core, and the idle deadline still applies.
            got_message = true;
            let reply = stream_packet(&shared, shard, five, framer.frame(len));
            framer.consume(len);
            if let Some(reply) = reply
                && tx.send(reply).await.is_err()
            {
                break 'read StreamClose::Closed;
            }
        }
        if got_message {
            deadline = Instant::now() + limits.idle_timeout;
        }
    };
    shared.metrics.stream_closed(why);
    if why != StreamClose::Closed {
        tracing::debug!(client = %five.client, ?why, "TURN connection closed by the server");
    }
    {
        let mut guard = shard.lock();
        let state = &mut *guard;
        state.streams.remove(&five);
        state.core.connection_closed(five, &shared.ledger);
        shard.settle(&shared, state, Vec::new());
    }
    drop(tx);
    let _ = writer_task.await;
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_address: u32, total: u32) -> StreamLimits {
        StreamLimits {
            per_address,
            total,
            ..StreamLimits::default()
        }
    }

    #[test]
    fn gate_caps_per_address_and_total_and_gives_places_back() {
        let gate = Arc::new(StreamGate::default());
        let l = limits(2, 3);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let a1 = gate.admit(a, &l).unwrap();
        let _a2 = gate.admit(a, &l).unwrap();
        assert_eq!(gate.admit(a, &l).unwrap_err(), StreamRefusal::PerAddress);
        let _b1 = gate.admit(b, &l).unwrap();
        assert_eq!(gate.admit(b, &l).unwrap_err(), StreamRefusal::Total);
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(
            gate.admit(b, &l).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn gate_counts_an_ipv6_slash_64_as_one_address() {
        let gate = Arc::new(StreamGate::default());
        let l = limits(1, 10);
        let _p = gate.admit("2001:db8::1".parse().unwrap(), &l).unwrap();
        assert!(gate.admit("2001:db8::ffff:2".parse().unwrap(), &l).is_err());
        assert!(gate.admit("2001:db8:0:1::1".parse().unwrap(), &l).is_ok());
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(pauses[..4], [5, 10, 20, 40]);
        assert_eq!(*pauses.last().unwrap(), 1000);
        b.succeeded();
        assert_eq!(b.failed().as_millis(), 5);
    }

    fn binding(len_extra: u16) -> Vec<u8> {
        let mut m = vec![0u8; 20 + usize::from(len_extra)];
        m[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
        m[2..4].copy_from_slice(&len_extra.to_be_bytes());
        m[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        m
    }

    #[test]
    fn framer_starts_empty_and_splits_frames_across_reads() {
        let mut f = Framer::default();
        assert_eq!(
            f.buf.capacity(),
            0,
            "no buffer before the client sends anything"
        );
        let mut stream = binding(8);
        stream.extend([0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0]); // ChannelData, 3 bytes + padding
        let (first, rest) = stream.split_at(10);
        f.buffer().extend_from_slice(first);
        assert_eq!(f.next_frame(), Ok(None));
        assert!(f.buf.capacity() >= 28, "grown to the announced frame");
        f.buffer().extend_from_slice(rest);
        assert_eq!(f.next_frame(), Ok(Some(28)));
        f.consume(28);
        assert_eq!(f.next_frame(), Ok(Some(8)));
        assert_eq!(f.frame(8)[..4], [0x40, 0x00, 0x00, 0x03]);
        f.consume(8);
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn framer_refuses_what_is_not_stun_or_channel_data() {
        let mut f = Framer::default();
        f.buffer().extend_from_slice(b"\xff\xfe not a TURN client");
        assert_eq!(f.next_frame(), Err(NotAFrame));
    }
}
